"""Score a folder of digit images with the newest export, no server: one CSV row per image (--help)."""
from tfk8s.serving.batch import main

if __name__ == "__main__":
    main()
