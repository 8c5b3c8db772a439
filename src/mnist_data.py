"""Download and verify the MNIST files (--download full), as the trainer image does at build time (--help)."""
from tfk8s.mnist import main

if __name__ == "__main__":
    main()
