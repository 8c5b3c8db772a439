"""The whole local path in one command: train, export, serve, and predict the ten sample digits.

    make demo                          # the same as: python src/demo.py
    make demo DEMO_FLAGS=--retrain     # train again although an export exists (python src/demo.py --retrain)

Every step runs what an attendee runs in the workshop (src/main.py,
src/serve.py, src/client.py), so the demo shows what those steps do. The
first run trains for --steps steps into runs/demo/; later runs find the export in runs/demo/export and go straight to
serving. The trainer's output is relayed without TensorFlow's no-GPU notices
(tfk8s/noise.py). The model server is always stopped at the end, also after an
error, Ctrl-C or SIGTERM; Ctrl-C while training says that the same command resumes.
"""
import contextlib
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tfk8s import versions
from tfk8s.cli import ArgumentParser, UsageError, UserError, child_env, entry_point, signals_held
from tfk8s.noise import is_no_gpu_notice
from tfk8s.paths import REPO, RUNS, SRC

SAMPLES_DIR = REPO / "data"  # data/0.png ... data/9.png: real test digits, written by src/make_samples.py
SAMPLES = [SAMPLES_DIR / f"{digit}.png" for digit in range(10)]
MODEL_NAME, SIGNATURE = "mnist", "predict"
HOST = "127.0.0.1"
SERVER_START_TIMEOUT = 180  # seconds for the server to import TensorFlow and load the model on a busy laptop


def parse_args(argv=None):
    p = ArgumentParser(description="Train (or reuse) a model, serve it locally and predict the sample digits.")
    p.add_argument("--steps", type=int, default=300, help="training steps, when there is no export to reuse")
    p.add_argument("--workdir", type=Path, default=RUNS / "demo",
                   help="holds model/ (checkpoints and TensorBoard summaries) and export/ (SavedModel versions)")
    p.add_argument("--retrain", action="store_true",
                   help="train from scratch (into a new export version) even though an export exists")
    args = p.parse_args(argv)
    if args.steps <= 0:
        raise UsageError(f"--steps must be positive, not {args.steps}")
    return args


def shown(path):
    """A path as the user would type it: relative to the current directory when it is below it."""
    path, here = Path(path).resolve(), Path.cwd()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def command_line(script, argv):
    """`python src/<script> ...` as a user types it, for printing."""
    return " ".join(["python", f"src/{script}", *(shlex.quote(shown(a) if isinstance(a, Path) else str(a))
                                                  for a in argv)])


def run(script, argv, **kwargs):
    """Run src/<script> with this interpreter as one local process (no TF_CONFIG), printing its command line."""
    print(command_line(script, argv), flush=True)
    env = child_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run([sys.executable, str(SRC / script), *map(str, argv)], env=env, **kwargs)


def relay(script, argv):
    """Run src/<script> as run() does, copying its output here line by line without TensorFlow's no-GPU notices
    (tfk8s/noise.py); return its exit code. Ctrl-C reaches it too: its last words are copied before we go on."""
    print(command_line(script, argv), flush=True)
    env = child_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def copy(lines):
        for line in lines:
            if not is_no_gpu_notice(line):
                print(line, end="", flush=True)

    process = None
    try:
        with signals_held():  # a Ctrl-C or `kill` arriving inside Popen is taken here, the child ours to stop
            process = subprocess.Popen([sys.executable, str(SRC / script), *map(str, argv)], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        copy(process.stdout)
    except KeyboardInterrupt:  # the child has its SIGINT too: let it say where it stopped
        if process is not None:
            try:
                copy(process.communicate(timeout=60)[0].splitlines(keepends=True))
            except subprocess.TimeoutExpired:
                process.kill()
        raise
    except BaseException:
        if process is not None:
            process.kill()
        raise
    finally:
        if process is not None:
            process.stdout.close()
            process.wait()
    return process.returncode


def step(title):
    print(f"\n== {title}", flush=True)


def train(steps, model_dir, export_dir, retrain):
    """Run the trainer (it prints its own progress), unless an export exists and `retrain` is false."""
    existing = list(versions.listing(export_dir).values())
    if existing and not retrain:
        print(f"reusing the export {shown(existing[-1])}: no training "
              "(to train again: make demo DEMO_FLAGS=--retrain)", flush=True)
        return existing[-1]
    if retrain and model_dir.exists():
        print(f"--retrain: removing the previous checkpoints and summaries in {shown(model_dir)}", flush=True)
        shutil.rmtree(model_dir)
    every = max(1, steps // 5)  # five progress lines, each with a validation score
    started = time.monotonic()
    try:
        code = relay("main.py", ["--steps", steps, "--eval_every", every, "--checkpoint_every", every,
                                 "--model_dir", model_dir, "--export_dir", export_dir])
    except KeyboardInterrupt:
        raise InterruptedByUserError("interrupted: make demo again resumes the training from its last checkpoint") \
            from None
    if code != 0:
        raise UserError(f"training failed (exit code {code}); its output is above")
    print(f"trained and exported in {time.monotonic() - started:.0f}s", flush=True)
    return versions.newest(export_dir)


def ensure_samples():
    """The ten sample PNGs ship in data/; write them again from the test set if they are missing."""
    if all(p.is_file() for p in SAMPLES):
        return
    print("the sample digits data/0.png ... data/9.png are missing: writing them from the test set", flush=True)
    if run("make_samples.py", []).returncode != 0 or not all(p.is_file() for p in SAMPLES):
        raise UserError("could not write the sample digits data/0.png ... data/9.png")


@contextlib.contextmanager
def local_server(export_dir):
    """src/serve.py on free loopback ports, from when it reports the model AVAILABLE until the block ends.

    serve.running starts it, waits until GetModelStatus says AVAILABLE and
    stops it however the block ends (an error, Ctrl-C, SIGTERM).
    """
    print("starting the model server: it loads TensorFlow, then the newest version in the export directory",
          flush=True)
    started, up = time.monotonic(), False
    from tfk8s.serving import process as serve  # the gRPC stubs: loaded only now, not while the trainer runs
    try:
        # The export was just written, whole: one that does not load will not load a minute later either
        # (serve.py, as TensorFlow Serving, would otherwise try again for five minutes).
        flags = ["--max_num_load_retries", 0]
        with serve.running(export_dir, MODEL_NAME, flags, timeout=SERVER_START_TIMEOUT) as server:
            up = True
            print(command_line("serve.py", ["--model_name", MODEL_NAME, "--model_base_path", export_dir,
                                            "--port", server.grpc_port, "--rest_api_port", server.rest_port, *flags]),
                  f"  (pid {server.process.pid})", flush=True)
            print(f"model {MODEL_NAME} AVAILABLE after {time.monotonic() - started:.1f}s: "
                  f"gRPC {HOST}:{server.grpc_port}, REST http://{HOST}:{server.rest_port}/v1/models/{MODEL_NAME}",
                  flush=True)
            yield server
    except RuntimeError as err:  # serve.running: the server exited, or did not answer in time
        if up:
            raise
        lines = str(err).strip().splitlines()
        reason = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1])
        raise UserError(f"the model server did not start ({lines[0].rstrip(':')}): {reason.removeprefix('error: ')}; "
                        f"to train and export a new model: make demo DEMO_FLAGS=--retrain") from None
    print(f"model server stopped (pid {server.process.pid})", flush=True)


def predict(grpc_port):
    """Classify the sample digits with the real client, run as a user runs it; return its JSON records."""
    result = run("client.py", ["--host", HOST, "--port", grpc_port, "--image", SAMPLES_DIR, "--model", MODEL_NAME,
                               "--signature_name", SIGNATURE, "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the client failed (exit code {result.returncode}): {last}")
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if not records:
        raise UserError(f"the client printed no predictions: {result.stdout.strip()[:200]!r}")
    return records  # one per image: {"image", "digit", "probability", "version", ...}


def expected_digit(path):
    """The true digit of a sample image: its file name (data/7.png shows a 7); None for any other image."""
    stem = Path(path).stem
    return int(stem) if len(stem) == 1 and stem.isdigit() else None


def report(records):
    """Print file -> predicted digit and probability, then how many samples are right."""
    print(f"{'file':<14} {'digit':>5} {'probability':>12}")
    correct = judged = 0
    for record in records:
        truth, digit = expected_digit(record["image"]), record["digit"]
        judged += truth is not None
        correct += truth == digit
        verdict = "" if truth is None else ("ok" if truth == digit else f"WRONG: it is a {truth}")
        print(f"{shown(record['image']):<14} {digit:>5} {record['probability']:>12.2%}  {verdict}")
    print(f"{correct}/{judged} correct", flush=True)


class InterruptedByUserError(UserError):
    exit_code = 130  # 128 + SIGINT


class TerminatedError(UserError):
    exit_code = 143  # 128 + SIGTERM, as a shell reports it


def terminated(signum, frame):
    """`kill` and CI's time limits send SIGTERM: unwind as Ctrl-C does, so that the server is stopped."""
    raise TerminatedError("terminated")


@entry_point
def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminated)
    # Ctrl-C raises KeyboardInterrupt even when this was started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = args.workdir.resolve()
    model_dir, export_dir = workdir / "model", workdir / "export"
    began = time.monotonic()

    step(f"1/3 train and export: model_dir {shown(model_dir)}, export_dir {shown(export_dir)}")
    train(args.steps, model_dir, export_dir, args.retrain)
    ensure_samples()

    step("2/3 serve the export locally: src/serve.py speaks TensorFlow Serving's gRPC and REST APIs")
    with local_server(export_dir) as server:
        step(f"3/3 predict the sample digits over gRPC: model {MODEL_NAME}, signature {SIGNATURE}")
        records = predict(server.grpc_port)

    version = records[0].get("version", "?")
    step(f"predictions of model version {version} (the demo took {time.monotonic() - began:.0f}s)")
    report(records)

