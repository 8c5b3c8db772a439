"""Run kube/job.yaml or a TFJob manifest as containers of the trainer image, as the kubelet would (--help)."""
from tfk8s.kube.docker_run import main

if __name__ == "__main__":
    main()
