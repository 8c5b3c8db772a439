"""Check Katib Experiments offline, as Katib v0.19's webhook, its suggestion services and the training operator would.

    python src/katib_check.py experiment.yaml     # e.g. the one `templated/run.sh --katib --dry_run` writes
"""
from tfk8s.kube.katib_check import main

if __name__ == "__main__":
    main()
