"""Read and change TensorFlow Serving's model config: versions served, labels stable and canary (--help)."""
from tfk8s.serving.model_config import main

if __name__ == "__main__":
    main()
