"""serve.py's flags, as tensorflow_model_server's. No TensorFlow here: a bad flag answers at once."""
import argparse
from pathlib import Path

from tfk8s.cli import ArgumentParser, UsageError


def true_or_false(text):
    """tensorflow_model_server's boolean flags: --enable_batching=true|false."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def parse_args(argv=None):
    p = ArgumentParser(
        description="A DEVELOPMENT model server with TensorFlow Serving's gRPC and REST APIs and flags, "
                    "for laptops without Docker. Use tensorflow/serving in production.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_name", default="default", help="the name clients ask for")
    p.add_argument("--model_base_path",
                   help="directory of integer version sub-directories, each a SavedModel; the highest is served")
    p.add_argument("--model_config_file", metavar="FILE",
                   help="instead of --model_name and --model_base_path: TensorFlow Serving's model config "
                        "(text protobuf model_config_list: models, version policies, version labels)")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                   help="seconds between reads of --model_config_file (0: read it only at start-up)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST API)")
    p.add_argument("--bind_address", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the server to your network")
    p.add_argument("--file_system_poll_wait_seconds", type=int, default=1,
                   help="seconds between looks for new versions (0: look only at start-up)")
    p.add_argument("--enable_batching", type=true_or_false, default=True, metavar="true|false",
                   help="merge concurrent requests for the same signature into one call")
    p.add_argument("--max_batch_size", type=int, default=10000,
                   help="largest batch a request may carry (larger: INVALID_ARGUMENT), and largest merged batch")
    p.add_argument("--grpc_max_threads", type=int, default=64, help="threads answering gRPC requests")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads for one operation (0: one per core)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="operations run at once (0: one per core)")
    args = p.parse_args(argv)
    for flag, low in (("port", 1), ("rest_api_port", 0), ("max_batch_size", 1), ("grpc_max_threads", 1),
                      ("file_system_poll_wait_seconds", 0), ("model_config_file_poll_wait_seconds", 0),
                      ("tensorflow_intra_op_parallelism", 0), ("tensorflow_inter_op_parallelism", 0)):
        if getattr(args, flag) < low:
            raise UsageError(f"--{flag} must be at least {low}, not {getattr(args, flag)}")
    if args.port == args.rest_api_port:
        raise UsageError(f"--port and --rest_api_port must differ (both are {args.port})")
    if args.model_config_file:
        if args.model_base_path:
            raise UsageError("give --model_config_file or --model_base_path, not both "
                             "(the config file names each model's base_path)")
    elif not args.model_base_path:
        raise UsageError("give --model_base_path (one model) or --model_config_file (a model config)")
    elif not Path(args.model_base_path).is_dir():
        raise UsageError(f"--model_base_path {args.model_base_path} is not a directory")
    return args


