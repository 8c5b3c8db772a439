"""A development model server that speaks TensorFlow Serving's gRPC and REST APIs.

On the cluster the model is served by TensorFlow Serving itself
(kube/serving.yaml). Without a cluster or Docker, src/serve.py serves the same
export directory with the same flags and the same API, so the same client
works, and a client written against one works against the other:

    python src/serve.py --model_name mnist --model_base_path runs/local/export --port 8500 --rest_api_port 8501

It serves the highest integer version under --model_base_path, looks for
newer ones every --file_system_poll_wait_seconds and swaps them in without a
restart (the old version answers until the new one is loaded). Or, as
tensorflow_model_server, it serves what a model config file says (models,
version policies, the labels `stable` and `canary` of an A/B rollout) and
reads the file again every --model_config_file_poll_wait_seconds.

Where it differs from TensorFlow Serving, on purpose: it listens on loopback
unless --bind_address says otherwise; a port in use is an error at start-up
(TensorFlow Serving would silently share its gRPC port with the other
process); a --model_base_path that does not exist is an error, not a wait.
It is a development server: one process, no TLS, no authentication.

Stopping, as a pod is stopped: SIGTERM or Ctrl-C closes both ports to new
requests and connections, closes idle REST connections, and gives the
requests in flight (gRPC and REST) up to --shutdown_grace_seconds to answer;
then the process exits 0, within the grace period and a second or so. A
second signal exits at once (128 + the signal's number), without waiting.

The parts: flags (no TensorFlow), models and config_file (versions, policies,
labels), signatures and inference (Predict, Classify, Regress), json_io and
json_tensor (the REST API's JSON), grpc_api and rest_api, batching. Only
saved_model (TensorFlow's loader of a version directory) loads TensorFlow:
the others run with any loader (options.loader, signatures.LoadedVersion).
"""
import os
import signal
import sys
import threading
import time
import types

from tfk8s.cli import UserError
from tfk8s.serving import batching
from tfk8s.serving.config_file import ModelConfigFile
from tfk8s.serving.grpc_api import start_grpc
from tfk8s.serving.models import ModelServer, ServedModel
from tfk8s.serving.protocol import ServingError, log
from tfk8s.serving.rest_api import start_rest
from tfk8s.serving.tensors import MAX_MESSAGE_BYTES, memory_budget


def options_from(args):
    """What the parts need from the flags."""
    make_scheduler = None
    if args.enable_batching:
        try:
            params = batching.read_parameters(args.batching_parameters_file)
        except ValueError as err:
            raise UserError(f"Failed to start server. Error: INVALID_ARGUMENT: {err}") from None
        make_scheduler = lambda signature: batching.Scheduler(signature.call, params, f"batch-{signature.name}")
    max_bytes = args.grpc_channel_arguments.get("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)
    return types.SimpleNamespace(
        max_num_load_retries=args.max_num_load_retries, load_retry_interval=args.load_retry_interval_micros / 1e6,
        make_scheduler=make_scheduler, enable_signature_method_name_check=args.enable_signature_method_name_check,
        cors=args.rest_api_enable_cors_support,
        max_tensor_bytes=max_bytes if isinstance(max_bytes, int) and max_bytes > 0 else MAX_MESSAGE_BYTES,
        tensor_content=args.enable_serialization_as_tensor_content,
        grpc_channel_arguments=args.grpc_channel_arguments, grpc_max_threads=args.grpc_max_threads,
        rest_api_num_threads=args.rest_api_num_threads, rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        rest_api_read_timeout=args.rest_api_read_timeout_seconds, shutdown_grace=args.shutdown_grace_seconds,
        memory_budget=memory_budget())


def wait_for_first_versions(server):
    """As ServerCore::Create: block until each model has a version AVAILABLE, or one failed for good (then the
    start fails, as load_servables_fast.cc's "N servable(s) did not become available")."""
    waiting_logged = set()
    while True:
        server.poll()
        models = list(server.models.values())
        for model in models:
            if not model.aspired(model.listing() or {}) and model.name not in waiting_logged:
                log(f"waiting for a version of {model.name} under {model.base_path} (a directory named by an "
                    "integer, holding a SavedModel)")
                waiting_logged.add(model.name)
        if all(model.settled() for model in models):
            break
        time.sleep(0.2)
    failed = [(m, v) for m in models for v in m.failed if not m.loaded and v in m.states]
    if failed:
        errors = "".join(f"{{{{name: {m.name} version: {v}}} due to error: {m.states[v].code.name}: "
                         f"{m.states[v].message}}}, " for m, v in failed)
        raise UserError(f"Failed to start server. Error: UNKNOWN: {len(failed)} servable(s) did not become "
                        f"available: {errors}")


def serve(args, first_config=None):
    """Serve until Ctrl-C or SIGTERM; `args` are serve.py's flags (tfk8s.serving.flags).

    `first_config`: the ModelServerConfig serve.py already read from --model_config_file (read here if None).
    """
    import tensorflow as tf  # here: the rest of this module (options_from, the loop) needs no TensorFlow

    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    options = options_from(args)
    server = ModelServer()
    config = None
    if args.model_config_file:
        config = ModelConfigFile(args.model_config_file, server, options,
                                 args.allow_version_labels_for_unavailable_models)
        try:
            config.apply(first_config if first_config is not None else config.read())
        except ServingError as err:
            raise UserError(f"Failed to start server. Error: {err}") from None
    else:
        server.models = {args.model_name: ServedModel(args.model_name, args.model_base_path, options)}
    log(f"serve.py: a development server with TensorFlow Serving's API for "
        f"{', '.join(f'{m.name!r} from {m.base_path}' for m in server.models.values()) or 'no model'}")

    # Like tensorflow_model_server: open the ports only once every model's first versions loaded (or failed).
    wait_for_first_versions(server)
    grpc_server = start_grpc(server, config, options, args.bind_address, args.port)
    log(f"Running gRPC ModelServer at {args.bind_address}:{args.port} ...")
    httpd = None
    if args.rest_api_port == args.port:
        log("server_options.http_port cannot be same as grpc_port. Please use a different port for HTTP/REST API. "
            "Skipped exporting HTTP/REST API.")
    elif args.rest_api_port:
        httpd = start_rest(server, options, args.bind_address, args.rest_api_port)
    rest = f", REST API on http://{args.bind_address}:{args.rest_api_port}/v1/models/" if httpd else ""
    log(f"gRPC API on {args.bind_address}:{args.port}{rest} (Ctrl-C stops)")

    stop = Stop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # `kill`, Ctrl-C and Kubernetes stop it the same way
        signal.signal(signum, stop.signalled)
    # What to do again, and every how many seconds (0: never).
    every = {server.poll: args.file_system_poll_wait_seconds}
    if config:
        every[config.reload] = args.model_config_file_poll_wait_seconds
    due = {action: time.monotonic() + seconds for action, seconds in every.items() if seconds > 0}
    try:
        while stop.signum is None:
            stop.wake.wait(0.2)
            now = time.monotonic()
            for action in [a for a, t in due.items() if now >= t and stop.signum is None]:
                due[action] = now + every[action]
                action()
            if not due and any(m.retry_at for m in server.models.values()):
                server.poll()  # load retries come due even when the file system is not polled
    finally:
        drain(grpc_server, httpd, options.shutdown_grace if stop.signum else 0, stop.signum)
    os._exit(0)  # the workers of a request cut off at the grace period must not hold the exit


class Stop:
    """The first SIGTERM or SIGINT asks for a graceful stop; the second exits at once."""

    def __init__(self):
        self.signum, self.wake = None, threading.Event()

    def signalled(self, signum, frame):
        if self.signum is not None:
            os.write(2, f"{signal.Signals(signum).name} again: exiting now, without waiting for the requests "
                        "in flight\n".encode())
            os._exit(128 + signum)
        self.signum = signum  # the main loop logs it: printing here could interrupt a print of its own
        self.wake.set()


def drain(grpc_server, rest, grace, signum):
    """Stop accepting on both APIs, let the requests in flight answer for up to `grace` seconds."""
    began = time.monotonic()
    if signum:
        log(f"{signal.Signals(signum).name}: stopping; no new requests, those in flight get up to {grace:g} s "
            "(a second signal exits at once)")
    grpc_stopped = grpc_server.stop(grace)  # refuses new calls at once, cancels those left after `grace`
    rest_drained = rest.stop(grace) if rest else True
    grpc_drained = grpc_stopped.wait(max(0.0, grace - (time.monotonic() - began)) + 1)
    left = "" if rest_drained and grpc_drained else "; requests still running at the end of the grace period " \
                                                    "were cut off"
    log(f"stopped in {time.monotonic() - began:.1f} s{left}")
    sys.stdout.flush()
    sys.stderr.flush()
