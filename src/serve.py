"""A development model server with TensorFlow Serving's gRPC and REST APIs and flags (--help)."""
from tfk8s.cli import UserError, entry_point
from tfk8s.serving.flags import parse_args


@entry_point
def main(argv=None):
    args = parse_args(argv)  # before TensorFlow is imported: a bad flag answers at once
    if args.version:
        from importlib.metadata import version
        print(f"TensorFlow ModelServer: serve.py, a development twin of 2.21\nTensorFlow Library: "
              f"{version('tensorflow')}")
        return
    if args.model_config_file:  # read and checked before TensorFlow loads: a bad file is refused at once
        from tfk8s.serving import config_file
        from tfk8s.serving.protocol import ServingError
        try:
            config_file.validate(config_file.read_file(args.model_config_file), args.model_config_file)
        except ServingError as err:
            raise UserError(f"Failed to start server. Error: {err}") from None
    from tfk8s.serving.server import serve
    serve(args)


if __name__ == "__main__":
    main()
