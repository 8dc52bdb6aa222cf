"""`python -m anglecurate` is the `anglecurate` command."""

from anglecurate.cli import main

if __name__ == "__main__":
    main()
