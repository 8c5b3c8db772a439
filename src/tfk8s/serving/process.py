"""serve.py as a child process on free loopback ports: for tests, benchmarks, the demo and the notebook.

No TensorFlow here: the caller's process stays light.
"""
import contextlib
import subprocess
import sys
import tempfile
import time
import types

import grpc

from tfk8s.cli import child_env, signals_held
from tfk8s.paths import SRC
from tfk8s.ports import free_ports
from tfk8s.serving.protocol import State
from tfk8s.serving.tensors import apis


@contextlib.contextmanager
def running(model_base_path=None, model_name="mnist", args=(), timeout=120, model_config_file=None, debug=False):
    """Run serve.py as a child process on free loopback ports until the block ends.

    Serves `model_base_path` as `model_name`, or the models of
    `model_config_file`. Yields grpc_port, rest_port, process and log() (its
    output so far) once `model_name` answers GetModelStatus as AVAILABLE.
    `debug`: the server also logs what each poll found and each request queued for a batch
    (TFK8S_SERVE_DEBUG=1), lines a test can wait for.
    """
    grpc_port, rest_port = free_ports(2)
    served = (["--model_config_file", str(model_config_file)] if model_config_file else
              ["--model_name", model_name, "--model_base_path", str(model_base_path)])
    command = [sys.executable, str(SRC / "serve.py"), *served, "--port", str(grpc_port),
               "--rest_api_port", str(rest_port), *map(str, args)]
    with tempfile.TemporaryFile("w+") as output, grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        def read_log():
            output.flush()
            output.seek(0)
            return output.read()

        env = {**child_env(), "TFK8S_SERVE_DEBUG": "1" if debug else "0"}
        process = None
        try:
            with signals_held():  # a Ctrl-C or `kill` now is taken once `process` can be stopped below
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
            stub = apis.model_service_pb2_grpc.ModelServiceStub(channel)
            request = apis.get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model_name})
            deadline = time.time() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"serve.py exited with {process.returncode}:\n{read_log()}")
                try:
                    status = stub.GetModelStatus(request, timeout=1)
                    if any(s.state == State.AVAILABLE for s in status.model_version_status):
                        break
                except grpc.RpcError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"serve.py did not serve {model_name} within {timeout} s:\n{read_log()}")
                time.sleep(0.2)
            yield types.SimpleNamespace(grpc_port=grpc_port, rest_port=rest_port, process=process, log=read_log)
        finally:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
