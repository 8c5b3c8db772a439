"""Write IMAGE:TAG and NAMESPACE into kube/ manifests, as applied on the cluster (--help)."""
from tfk8s.kube.render import main

if __name__ == "__main__":
    main()
