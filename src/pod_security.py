"""Check pod templates against a Pod Security level, as the API server would (--help)."""
from tfk8s.kube.pod_security import main

if __name__ == "__main__":
    main()
