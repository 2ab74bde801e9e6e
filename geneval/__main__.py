"""``python -m geneval``."""

from geneval.cli import main

if __name__ == "__main__":
    main()
