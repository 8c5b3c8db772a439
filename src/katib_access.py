"""The instructor's Katib access per attendee: namespace label, Role attendee-katib (--help)."""
from tfk8s.instructor.katib_access import main

if __name__ == "__main__":
    main()
