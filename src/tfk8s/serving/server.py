"""A development model server that speaks TensorFlow Serving's gRPC and REST APIs.

On the cluster the model is served by TensorFlow Serving itself
(kube/serving.yaml). Without a cluster or Docker, this serves the same export
directory with the same flags and the same API, so the same client works:

    python src/serve.py --model_name mnist --model_base_path runs/local/export --port 8500 --rest_api_port 8501

It loads the highest integer version under --model_base_path, polls for newer
ones every --file_system_poll_wait_seconds and swaps them in without a
restart (the old version answers until the new one is loaded). Or, as
tensorflow_model_server, it serves what a model config file says (models,
version policies, the labels `stable` and `canary` of an A/B rollout) and
reads the file again every --model_config_file_poll_wait_seconds:

    python src/serve.py --model_config_file models.config --model_config_file_poll_wait_seconds 2 --rest_api_port 8501

Mistakes get the status codes TensorFlow Serving gives them. It is a
development server: one process, no TLS, no authentication, loopback only
unless --bind_address says otherwise. Use tensorflow/serving in production.

Speed: each version's signatures are loaded once and called as concrete
functions (no retracing for any batch size), and concurrent requests for the
same signature are merged into one call (--enable_batching, on by default):
the model computes a batch of 16 images in about three times the time of one.
"""
import signal
import sys
import time

import tensorflow as tf

from tfk8s.cli import UserError
from tfk8s.serving.config_file import ModelConfigFile
from tfk8s.serving.grpc_api import start_grpc
from tfk8s.serving.models import ModelServer, ServedModel
from tfk8s.serving.protocol import log
from tfk8s.serving.rest_api import start_rest


def serve(args):
    """Serve until Ctrl-C or SIGTERM; `args` are serve.py's flags (tfk8s.serving.flags)."""
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    server = ModelServer()
    config = None
    if args.model_config_file:
        config = ModelConfigFile(args.model_config_file, server, args.max_batch_size, args.enable_batching)
        config.reload(first=True)
    else:
        server.models = {args.model_name: ServedModel(args.model_name, args.model_base_path,
                                                      args.max_batch_size, args.enable_batching)}
    log(f"serve.py: a development server with TensorFlow Serving's API for "
        f"{', '.join(f'{m.name!r} from {m.base_path}' for m in server.models.values())}")

    # Like tensorflow_model_server: open the ports only once every model has a version that answers.
    server.poll()
    for model in server.models.values():
        if not model.aspired_versions(model.versions_on_disk()):
            log(f"waiting for a version of {model.name} under {model.base_path} (a directory named by an integer"
                f"{' that its version policy asks for' if model.policy[0] == 'specific' else ''})")
    while not all(model.loaded for model in server.models.values()):
        for model in server.models.values():
            if model.given_up():
                raise UserError(f"no version of {model.name} under {model.base_path} could be loaded: "
                                f"{model.status()[0][2]}")
        time.sleep(1)
        server.poll()
    if config:
        config.set_labels(strict=True)

    grpc_server = start_grpc(server, args.bind_address, args.port, args.grpc_max_threads)
    httpd = start_rest(server, args.bind_address, args.rest_api_port) if args.rest_api_port else None
    rest = f", REST API on http://{args.bind_address}:{args.rest_api_port}/v1/models/" if httpd else ""
    log(f"gRPC API on {args.bind_address}:{args.port}{rest} (Ctrl-C stops)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` and Kubernetes stop it like Ctrl-C
    # What to do again, and every how many seconds (0: never).
    every = {server.poll: args.file_system_poll_wait_seconds}
    if config:
        every[config.reload] = args.model_config_file_poll_wait_seconds
    due = {action: time.monotonic() + seconds for action, seconds in every.items() if seconds > 0}
    try:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for action in [a for a, t in due.items() if now >= t]:
                due[action] = now + every[action]
                action()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if httpd:
            httpd.shutdown()
        grpc_server.stop(grace=2).wait()
        log("stopped")

