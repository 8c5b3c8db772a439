"""Ask a model server what digit an image shows, over gRPC or REST (--help)."""
from tfk8s.serving.client import main

if __name__ == "__main__":
    main()
