"""How fast does serve.py answer? One-image requests at 1 to 32 in flight, and one 10,000-image request.

    python src/bench.py serve                                        # trains a 200-step model into runs/bench if needed
    python src/bench.py serve --model_base_path runs/local/export
    python src/bench.py serve --batching off                         # only TensorFlow Serving's default
    python src/bench.py serve --server_args="--grpc_max_threads=8"
    python src/bench.py serve --api grpc --shutdown                  # gRPC only, then SIGTERM under load

It starts src/serve.py on free loopback ports, sends MNIST test images the
way `client.py --num_tests` does (client and server share this machine's
cores), and prints a table: first with TensorFlow Serving's defaults (no
batching), then with --enable_batching and the parameters of
BATCHING_PARAMETERS (--batching on: only that; both: the default). Each table
is measured over gRPC, then the same requests as JSON over REST (a new
connection per request, as `client.py --rest` does; --api picks one).
--shutdown then sends SIGTERM under load and reports the time to exit and the
requests that failed. Nothing is asserted: the figures depend on the machine
and on what else runs on it.
"""
import argparse
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tfk8s import versions
from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.paths import RUNS, SRC
from tfk8s.serving import client, process

BENCH_DIR = RUNS / "bench"
TRAIN_STEPS = 200
# Batches of up to 32 one-image requests, taken as soon as a batch thread is free (no waiting for more):
# under load the queue fills while the model runs, so batches grow by themselves.
BATCHING_PARAMETERS = """max_batch_size { value: 32 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
"""


def bench_model(runs_dir):
    """The newest export under runs_dir/export, trained (TRAIN_STEPS steps, a minute or two) if there is none."""
    export_dir = Path(runs_dir) / "export"
    if not versions.versions(export_dir):
        print(f"no export under {export_dir}: training one ({TRAIN_STEPS} steps)", flush=True)
        result = subprocess.run([sys.executable, str(SRC / "main.py"), "--steps", str(TRAIN_STEPS),
                                 "--model_dir", str(Path(runs_dir) / "model"), "--export_dir", str(export_dir)])
        if result.returncode != 0:
            raise UserError(f"training the benchmark model failed (exit {result.returncode})")
    return export_dir


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_base_path", help="export directory to serve (default: train one into --runs_dir)")
    p.add_argument("--runs_dir", default=str(BENCH_DIR), help="where the benchmark model is trained if needed")
    p.add_argument("--requests", type=int, default=3000, help="one-image requests per concurrency level")
    p.add_argument("--concurrency", default="1,2,4,8,16,32", help="requests in flight, comma-separated levels")
    p.add_argument("--batching", choices=("both", "off", "on"), default="both",
                   help="measure without server-side batching, with it (BATCHING_PARAMETERS), or both")
    p.add_argument("--api", choices=("grpc", "rest", "both"), default="both",
                   help="send the requests over gRPC, REST (JSON), or one after the other")
    p.add_argument("--shutdown", action="store_true",
                   help="then send SIGTERM under load: the time to exit, and the requests that failed")
    p.add_argument("--server_args", default="", help="extra flags for serve.py, e.g. --grpc_max_threads=8")
    args = p.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise UsageError(f"--concurrency must be comma-separated integers, not {args.concurrency!r}") from None
    if args.requests < 1 or min(args.levels) < 1:
        raise UsageError("--requests and every --concurrency level must be at least 1")
    return args


def measure(model, images, labels, levels, requests, whole_set=True):
    """Print one row per concurrency level, then time one request of every test image (whole_set None: not)."""
    model.connect()
    client.run_load_test(model, images, labels, min(500, requests), 8)  # warm up both sides
    print(model.protocol)
    print(f"{'in flight':>9}  {'predictions/s':>13}  {'p50 ms':>7}  {'p99 ms':>7}  {'errors':>6}  {'accuracy':>8}")
    for concurrency in levels:
        r = client.run_load_test(model, images, labels, requests, concurrency)
        print(f"{concurrency:>9}  {r['throughput']:>13,.0f}  {r['p50_ms']:>7.1f}  {r['p99_ms']:>7.1f}  "
              f"{r['error_rate']:>6.1%}  {r['accuracy']:>8.2%}", flush=True)
    if whole_set is None:  # the 10,000-image request is timed over gRPC only
        return
    if whole_set is False:
        print(f"one request of {len(images):,} images: not sent (larger than max_batch_size: TensorFlow Serving "
              "refuses it with batching on, and so does serve.py)")
        return
    seconds = []
    for _ in range(3):
        began = time.perf_counter()
        scores, _ = model.predict(images)
        seconds.append(time.perf_counter() - began)
    accuracy = float(np.mean(np.argmax(scores, axis=1) == labels))
    print(f"one request of {len(images):,} images: {min(seconds):.2f} s best of 3 "
          f"(median {np.median(seconds):.2f} s, {len(images) / min(seconds):,.0f} images/s), accuracy {accuracy:.2%}")


def measure_shutdown(server, images, concurrency=32):
    """SIGTERM under load (`concurrency` one-image gRPC requests in flight, sent without pause): how long the
    server takes to exit, and how many requests sent before the signal failed (none should)."""
    model = client.GrpcModel("127.0.0.1", server.grpc_port, "mnist", "predict", timeout=60)
    model.connect()
    slots, lock, outcomes, signalled = threading.BoundedSemaphore(concurrency), threading.Lock(), [], [None]

    def send(i):
        sent = time.monotonic()

        def done(result):
            with lock:
                outcomes.append((sent, not isinstance(result, client.ServerError)))
            slots.release()

        model.predict_async(images[i % len(images):i % len(images) + 1], done)

    def load():
        i = 0
        while server.process.poll() is None:
            slots.acquire()
            send(i)
            i += 1

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    time.sleep(3)  # under load
    signalled[0] = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(120)
    seconds = time.monotonic() - signalled[0]
    sender.join(60)
    for _ in range(concurrency):  # the answers (or failures) of the last requests
        slots.acquire(timeout=60)
    before = [ok for sent, ok in outcomes if sent < signalled[0]]
    after = [ok for sent, ok in outcomes if sent >= signalled[0]]
    print(f"SIGTERM with {concurrency} gRPC requests in flight: exit {server.process.returncode} after "
          f"{seconds:.2f} s; of {len(before)} requests sent before the signal {before.count(False)} failed; "
          f"{after.count(False)} of {len(after)} sent after it were refused", flush=True)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    base_path = Path(args.model_base_path) if args.model_base_path else bench_model(args.runs_dir)
    images, labels = client.read_test_set()
    with tempfile.TemporaryDirectory() as tmp:
        parameters = Path(tmp) / "batching.config"
        parameters.write_text(BATCHING_PARAMETERS)
        runs = {"off": [], "on": ["--enable_batching", f"--batching_parameters_file={parameters}"]}
        for name in ("off", "on") if args.batching == "both" else (args.batching,):
            flags = [*runs[name], *shlex.split(args.server_args)]
            what = "--enable_batching, " + " ".join(BATCHING_PARAMETERS.split()) if name == "on" else "no batching"
            print(f"\nserve.py ({what}{', ' + args.server_args if args.server_args else ''}) serving {base_path}; "
                  f"{args.requests} one-image requests per row", flush=True)
            try:
                with process.running(base_path, "mnist", flags) as server:
                    if args.api in ("grpc", "both"):
                        model = client.GrpcModel("127.0.0.1", server.grpc_port, "mnist", "predict", timeout=60)
                        measure(model, images, labels, args.levels, args.requests, whole_set=name == "off")
                    if args.api in ("rest", "both"):
                        model = client.RestModel("127.0.0.1", server.rest_port, "mnist", "predict", timeout=60)
                        measure(model, images, labels, args.levels, args.requests, whole_set=None)
                    if args.shutdown:
                        measure_shutdown(server, images, max(args.levels))
            except RuntimeError as err:  # process.running: the server exited or never answered
                raise UserError(f"serve.py did not start: {' '.join(str(err).split())[:400]}") from None


if __name__ == "__main__":
    main()
