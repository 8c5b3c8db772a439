"""A development model server with TensorFlow Serving's gRPC and REST APIs and flags (--help)."""
from tfk8s.serving.server import main

if __name__ == "__main__":
    main()
