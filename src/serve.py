"""A development model server with TensorFlow Serving's gRPC and REST APIs and flags (--help)."""
from tfk8s import ports
from tfk8s.cli import UserError, entry_point
from tfk8s.serving.flags import parse_args


@entry_point
def main(argv=None):
    args = parse_args(argv)  # before TensorFlow is imported: a bad flag answers at once
    if args.version:
        from importlib.metadata import version
        print(f"TensorFlow ModelServer: serve.py, a development twin of 2.20.0\nTensorFlow Library: "
              f"{version('tensorflow')}")
        return
    for what, port in (("gRPC", args.port), ("REST", args.rest_api_port)):  # checked again when it listens
        if port and (what == "gRPC" or port != args.port) and ports.in_use(args.bind_address, port):
            raise UserError(f"cannot listen for {what} on {args.bind_address}:{port}: the port is in use (another "
                            "serve.py or model server?)")
    first_config = None
    if args.model_config_file:  # read and checked before TensorFlow loads: a bad file is refused at once
        from tfk8s.serving import config_file
        from tfk8s.serving.protocol import ServingError
        try:
            first_config = config_file.read_file(args.model_config_file)
            config_file.validate(first_config, args.model_config_file)
        except ServingError as err:
            raise UserError(f"Failed to start server. Error: {err}") from None
    from tfk8s.serving.server import serve
    serve(args, first_config)


if __name__ == "__main__":
    main()
