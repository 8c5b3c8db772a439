"""A development model server with TensorFlow Serving's gRPC and REST APIs and flags (--help)."""
from tfk8s.cli import entry_point
from tfk8s.serving.flags import parse_args


@entry_point
def main(argv=None):
    args = parse_args(argv)  # before TensorFlow is imported: a bad flag answers at once
    if args.version:
        from importlib.metadata import version
        print(f"TensorFlow ModelServer: serve.py, a development twin of 2.21\nTensorFlow Library: "
              f"{version('tensorflow')}")
        return
    from tfk8s.serving.server import serve
    serve(args)


if __name__ == "__main__":
    main()
