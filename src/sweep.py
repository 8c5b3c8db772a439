"""The hyperparameter sweep behind templated/run.sh: one TFJob per combination of a values file (--help)."""
from tfk8s.sweep.sweep import main

if __name__ == "__main__":
    main()
