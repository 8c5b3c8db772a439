"""Say whether a TFJob fits the namespace's quota now, and if not, what to stop first (--help)."""
from tfk8s.kube.headroom import main

if __name__ == "__main__":
    main()
