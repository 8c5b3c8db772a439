"""serve.py's flags: tensorflow_model_server's names, meanings and defaults.

No TensorFlow is imported here (nor anything that imports it): serve.py
parses its flags first, so a bad flag is answered in a few milliseconds.
"""
import argparse
import os
from pathlib import Path

from tfk8s.cli import ArgumentParser, UsageError, duration

CPUS = os.cpu_count() or 1


def true_or_false(text):
    """tensorflow_model_server's boolean flags: --enable_batching, --enable_batching=true|false."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def channel_arguments(text):
    """--grpc_channel_arguments: k=v,k=v; a value that is an integer is passed as one."""
    arguments = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected key=value pairs separated by commas, not {item!r}")
        value = value.strip()
        try:
            arguments[key.strip()] = int(value)
        except ValueError:
            arguments[key.strip()] = value
    return arguments


def _bool(p, name, default, text):
    p.add_argument(f"--{name}", type=true_or_false, nargs="?", const=True, default=default, metavar="true|false",
                   help=text)


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
    p.add_argument("--model_config_file_poll_wait_seconds", type=duration(zero=True, integer=True), default=0,
                   help="seconds between reads of --model_config_file (0: read it only at start-up)")
    _bool(p, "allow_version_labels_for_unavailable_models", False,
          "let the model config label versions not loaded yet (needed to start from a config with labels)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST API)")
    p.add_argument("--bind_address", default="127.0.0.1",
                   help="address to listen on (TensorFlow Serving: every address); 0.0.0.0 exposes the server to "
                        "your network")
    p.add_argument("--file_system_poll_wait_seconds", type=duration(zero=True, integer=True), default=1,
                   help="seconds between looks for new versions (0: look only at start-up)")
    p.add_argument("--max_num_load_retries", type=int, default=5,
                   help="times a version that fails to load is tried again (a version still being copied in)")
    p.add_argument("--load_retry_interval_micros", type=duration("micros", zero=True, integer=True),
                   default=60_000_000,
                   help="microseconds between those tries")
    _bool(p, "enable_batching", False, "queue concurrent requests and run them in batches (see "
                                       "--batching_parameters_file)")
    p.add_argument("--batching_parameters_file", metavar="FILE",
                   help="BatchingParameters text protobuf: max_batch_size, batch_timeout_micros, "
                        "max_enqueued_batches, num_batch_threads, allowed_batch_sizes (default: TensorFlow's "
                        "1000, 0, 10, one thread per core)")
    _bool(p, "enable_serialization_as_tensor_content", False,
          "answer gRPC Predict with tensor_content bytes instead of the typed fields (float_val, ...)")
    _bool(p, "enable_signature_method_name_check", False,
          "Classify/Regress/Predict check the signature's method_name instead of its inputs and outputs")
    _bool(p, "rest_api_enable_cors_support", False,
          "REST answers carry Access-Control-Allow-Origin: * (and methods, headers) for browsers")
    p.add_argument("--version", action="store_true", help="print the versions and exit")
    p.add_argument("--grpc_channel_arguments", type=channel_arguments, default={}, metavar="K=V,K=V",
                   help="gRPC server arguments, e.g. grpc.max_receive_message_length=104857600 (default: "
                        "messages up to 2 GiB, as TensorFlow Serving)")
    p.add_argument("--grpc_max_threads", type=int, default=4 * CPUS, help="threads answering gRPC requests")
    p.add_argument("--rest_api_num_threads", type=int, default=4 * CPUS, help="threads answering REST requests")
    p.add_argument("--rest_api_timeout_in_ms", type=duration("ms", zero=True, integer=True), default=30000,
                   help="REST: a model run longer than this is 504 (0: no limit)")
    p.add_argument("--rest_api_read_timeout_seconds", type=duration(), default=30.0,
                   help="REST: each request must arrive whole within this many seconds of the connection opening "
                        "or of the previous answer, else the connection is closed (serve.py only)")
    p.add_argument("--shutdown_grace_seconds", type=duration(), default=20.0,
                   help="on SIGTERM or Ctrl-C: seconds requests in flight get to finish before the server exits "
                        "(a second signal exits at once; keep it under the pod's terminationGracePeriodSeconds, "
                        "30 by default) (serve.py only)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads for one operation (0: one per core)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="operations run at once (0: one per core)")
    args = p.parse_args(argv)
    if args.version:
        return args
    for flag, low in (("port", 1), ("rest_api_port", 0), ("grpc_max_threads", 1), ("rest_api_num_threads", 1),
                      ("max_num_load_retries", 0),
                      ("tensorflow_intra_op_parallelism", 0), ("tensorflow_inter_op_parallelism", 0)):
        if getattr(args, flag) < low:
            raise UsageError(f"--{flag} must be at least {low}, not {getattr(args, flag)}")
    for flag in ("port", "rest_api_port"):
        if getattr(args, flag) > 65535:
            raise UsageError(f"--{flag} must be at most 65535 (a TCP port), not {getattr(args, flag)}")
    if args.batching_parameters_file and not args.enable_batching:
        raise UsageError("server_options.batching_parameters_file is set without setting "
                         "server_options.enable_batching to true.")
    if args.model_config_file:
        if args.model_base_path:
            raise UsageError("give --model_config_file or --model_base_path, not both "
                             "(the config file names each model's base_path)")
    elif not args.model_base_path:
        raise UsageError("Both server_options.model_base_path and server_options.model_config_file are empty! "
                         "Give --model_base_path (one model) or --model_config_file (a model config)")
    elif not Path(args.model_base_path).is_dir():
        raise UsageError(f"--model_base_path {args.model_base_path} is not a directory")
    return args
