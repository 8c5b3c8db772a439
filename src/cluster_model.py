"""Write what the cluster's controllers create from the workshop's manifests (operator, Katib, CronJob, autoscaler).

    python src/cluster_model.py --namespace alice --image REGISTRY/you/mnist --tag v1 --output_dir runs/cluster-made
"""
from tfk8s.kube.cluster_model import main

if __name__ == "__main__":
    main()
