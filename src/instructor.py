"""The instructor's part: plan the cluster; per attendee a namespace, storage and kubeconfig; status (--help)."""
from tfk8s.instructor.commands import main

if __name__ == "__main__":
    main()
