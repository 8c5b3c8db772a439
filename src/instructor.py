"""The instructor's part: per attendee a namespace, quota, role and kubeconfig (--help)."""
from tfk8s.instructor.namespaces import main

if __name__ == "__main__":
    main()
