"""Run a TFJob manifest's replicas as local processes, with TF_CONFIG as the operator builds it (--help)."""
from tfk8s.kube.tfjob_local import main

if __name__ == "__main__":
    main()
