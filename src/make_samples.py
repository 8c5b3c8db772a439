"""Write data/0.png .. data/9.png from the shipped MNIST test set (--help)."""
from tfk8s.samples import main

if __name__ == "__main__":
    main()
