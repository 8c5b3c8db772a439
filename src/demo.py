"""The whole local path in one command: train (or reuse), serve, classify the sample digits (--help)."""
from tfk8s.demo import main

if __name__ == "__main__":
    main()
