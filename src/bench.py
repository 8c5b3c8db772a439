"""The benchmarks behind the measured figures: `python src/bench.py train|serve|distributed [flags]`.

    train        our training loop against plain Keras fit: images/s and test accuracy
    serve        serve.py's latency and throughput at 1 to 32 requests in flight, and a 10k batch
    distributed  one process against kube/tfjob.yaml's Chief + Worker: same steps and global batch
"""
import sys

from tfk8s.cli import fail

BENCHMARKS = ("train", "serve", "distributed")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if argv[0] not in BENCHMARKS:
        fail(f"unknown benchmark {argv[0]!r}: choose {', '.join(BENCHMARKS)} (see bench.py --help)", 2)
    from importlib import import_module
    import_module(f"tfk8s.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
