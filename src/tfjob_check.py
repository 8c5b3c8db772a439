"""Check TFJob manifests offline: the operator's CRD schema and its webhook's rules (--help)."""
from tfk8s.kube.tfjob_check import main

if __name__ == "__main__":
    main()
