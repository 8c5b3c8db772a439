"""The whole local path in one command: train, export, serve, and predict the ten sample digits.

    make demo                          # the same as: python src/demo.py
    python src/demo.py --retrain       # train again although an export exists

Every step runs the command an attendee types in the workshop (src/main.py,
src/serve.py, src/client.py), so what the demo shows is what those steps do.
The first run trains for --steps steps into runs/demo/ (a minute or two on two
cores); later runs find the export in runs/demo/export and go straight to
serving. The model server is always stopped at the end, also after an error or
Ctrl-C.
"""
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cli import ArgumentParser, UsageError, UserError, entry_point

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
SAMPLES_DIR = REPO / "data"                          # data/0.png ... data/9.png, written by src/make_samples.py
SAMPLES = [SAMPLES_DIR / f"{digit}.png" for digit in range(10)]
MODEL_NAME, SIGNATURE = "mnist", "predict"
HOST = "127.0.0.1"
SERVER_START_TIMEOUT = 180.0  # seconds for the server to import TensorFlow and load the model (slow on a busy laptop)
SERVER_STOP_TIMEOUT = 15.0    # seconds between SIGTERM and SIGKILL
PROGRESS_EVERY = 10.0         # seconds between "still waiting" lines


def parse_args(argv=None):
    p = ArgumentParser(description="Train (or reuse) a model, serve it locally and predict the sample digits.")
    p.add_argument("--steps", type=int, default=600, help="training steps when there is no export yet")
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "demo",
                   help="holds model/ (checkpoints, TensorBoard summaries), export/ and serve.log")
    p.add_argument("--retrain", action="store_true",
                   help="train from scratch (a new export version) even though an export exists")
    args = p.parse_args(argv)
    if args.steps <= 0:
        raise UsageError(f"--steps must be positive, not {args.steps}")
    return args


def shown(path):
    """A path as the user would type it: relative to the current directory when it is below it."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def command_line(args):
    """`python src/x.py ...` as a user types it, for printing."""
    return "python " + " ".join(shlex.quote(shown(a) if isinstance(a, Path) else str(a)) for a in args)


def script(name, *args):
    """The argv running src/<name> with this interpreter; the environment without TF_CONFIG (one local process)."""
    return [sys.executable, str(SRC / name), *map(str, args)]


def local_env():
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def export_versions(export_dir):
    """The version directories TensorFlow Serving would load (integer names), newest last."""
    if not export_dir.is_dir():
        return []
    return sorted((p for p in export_dir.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def step(title):
    print(f"\n== {title}", flush=True)


def train(args, model_dir, export_dir):
    """Run the trainer (it prints its own progress lines), unless an export exists and --retrain is not given."""
    existing = export_versions(export_dir)
    if existing and not args.retrain:
        print(f"reusing the export {shown(existing[-1])} (trained earlier; --retrain trains again)", flush=True)
        return existing[-1]
    if args.retrain and model_dir.exists():
        print(f"--retrain: removing the previous checkpoints in {shown(model_dir)}", flush=True)
        shutil.rmtree(model_dir)
    every = max(1, args.steps // 5)  # five progress lines, each with a validation score
    argv = ["--steps", args.steps, "--eval_every", every, "--checkpoint_every", every,
            "--model_dir", model_dir, "--export_dir", export_dir]
    print(command_line(["src/main.py", *argv]), flush=True)
    started = time.monotonic()
    result = subprocess.run(script("main.py", *argv), env=local_env())
    if result.returncode != 0:
        raise UserError(f"training failed (exit code {result.returncode}); its output is above")
    newest = export_versions(export_dir)[-1]
    print(f"trained and exported in {time.monotonic() - started:.0f}s", flush=True)
    return newest


def free_ports(count):
    """`count` distinct TCP ports that are free on the loopback interface now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def model_status(rest_port, timeout=2.0):
    """TensorFlow Serving's REST model status (GET /v1/models/<name>), or None while nothing answers."""
    url = f"http://{HOST}:{rest_port}/v1/models/{MODEL_NAME}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def available_version(status):
    """The version the server reports AVAILABLE, or None."""
    for version in (status or {}).get("model_version_status", []):
        if version.get("state") == "AVAILABLE":
            return version.get("version")
    return None


def tail(path, lines=15):
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def model_server(export_dir, log_path, timeout=SERVER_START_TIMEOUT):
    """Run src/serve.py on free loopback ports; yield {"grpc_port", "rest_port", "version"} once it serves.

    The server is stopped when the block ends, however it ends. Its output goes
    to `log_path`, whose last lines are shown if it fails to start.
    """
    grpc_port, rest_port = free_ports(2)
    argv = ["--model_name", MODEL_NAME, "--model_base_path", export_dir, "--port", grpc_port,
            "--rest_api_port", rest_port]
    print(command_line(["src/serve.py", *argv]) + " &", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        # A session of its own: Ctrl-C reaches the demo, which stops the server in order.
        server = subprocess.Popen(script("serve.py", *argv), stdout=log, stderr=subprocess.STDOUT,
                                  env=local_env(), start_new_session=True)
    try:
        started = deadline = time.monotonic()
        deadline += timeout
        next_progress = started + PROGRESS_EVERY
        while (version := available_version(model_status(rest_port))) is None:
            if server.poll() is not None:
                raise UserError(f"the model server exited with code {server.returncode} before serving; "
                                f"the end of {shown(log_path)}:\n{tail(log_path)}")
            now = time.monotonic()
            if now > deadline:
                raise UserError(f"the model server did not report {MODEL_NAME} AVAILABLE within {timeout:.0f}s; "
                                f"see {shown(log_path)}")
            if now >= next_progress:
                print(f"  waiting for the model server ({now - started:.0f}s)", flush=True)
                next_progress += PROGRESS_EVERY
            time.sleep(0.3)
        print(f"model {MODEL_NAME} version {version} AVAILABLE after {time.monotonic() - started:.1f}s "
              f"(gRPC {HOST}:{grpc_port}, REST http://{HOST}:{rest_port}/v1/models/{MODEL_NAME})", flush=True)
        yield {"grpc_port": grpc_port, "rest_port": rest_port, "version": version, "pid": server.pid}
    finally:
        stop(server)


def stop(process, timeout=SERVER_STOP_TIMEOUT):
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"model server stopped (pid {process.pid})", flush=True)


def predict(grpc_port):
    """Classify the sample digits with the real client, as a user runs it; return its JSON records."""
    argv = ["--host", HOST, "--port", grpc_port, "--image", SAMPLES_DIR, "--model", MODEL_NAME,
            "--signature_name", SIGNATURE, "--json"]
    print(command_line(["src/client.py", *argv]), flush=True)
    result = subprocess.run(script("client.py", *argv), env=local_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"the client failed (exit code {result.returncode}): "
                        f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return client_records(result.stdout)


def client_records(stdout):
    """client.py --json -> [{"file", "class", "probability"}]."""
    records = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            record = json.loads(line)
            probabilities = record.get("probabilities")
            predicted = int(record["class"])
            records.append({"file": record["file"], "class": predicted,
                            "probability": float(record.get("probability", probabilities[predicted]
                                                            if probabilities else float("nan")))})
    if not records:
        raise UserError(f"the client printed no predictions: {stdout.strip()[:200]!r}")
    return records


def expected_digit(path):
    """The true digit of a sample: its file name (data/7.png shows a 7); None for other images."""
    stem = Path(path).stem
    return int(stem) if stem.isdigit() and len(stem) == 1 else None


def report(records):
    """Print a table of file -> predicted digit and probability; return (correct, judged)."""
    print(f"{'file':<14} {'predicted':>9} {'probability':>12}", flush=True)
    correct = judged = 0
    for record in records:
        truth = expected_digit(record["file"])
        verdict = "" if truth is None else ("ok" if truth == record["class"] else f"WRONG (it is a {truth})")
        judged += truth is not None
        correct += truth == record["class"]
        print(f"{shown(record['file']):<14} {record['class']:>9} {record['probability']:>11.2%}  {verdict}",
              flush=True)
    print(f"{correct}/{judged} correct", flush=True)
    return correct, judged


def ensure_samples():
    """The ten sample PNGs ship in data/; rebuild them from the test set if they are missing."""
    if all(p.is_file() for p in SAMPLES):
        return
    print("the sample digits data/0.png ... data/9.png are missing: writing them from the test set", flush=True)
    result = subprocess.run(script("make_samples.py"), env=local_env())
    if result.returncode != 0 or not all(p.is_file() for p in SAMPLES):
        raise UserError("could not write the sample digits (python src/make_samples.py failed)")


@entry_point
def main(argv=None):
    args = parse_args(argv)
    # `kill` and CI's timeouts send SIGTERM: unwind like Ctrl-C, so that the server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir.resolve()
    model_dir, export_dir = workdir / "model", workdir / "export"
    began = time.monotonic()

    step(f"1/3 train and export (model_dir {shown(model_dir)}, export_dir {shown(export_dir)})")
    train(args, model_dir, export_dir)
    ensure_samples()

    step("2/3 serve the export locally (TensorFlow Serving's gRPC and REST APIs)")
    with model_server(export_dir, workdir / "serve.log") as server:
        step(f"3/3 predict the sample digits over gRPC (model {MODEL_NAME}, signature {SIGNATURE})")
        records = predict(server["grpc_port"])

    step(f"predictions of model version {server['version']} (demo finished in {time.monotonic() - began:.0f}s)")
    report(records)


if __name__ == "__main__":
    main()
