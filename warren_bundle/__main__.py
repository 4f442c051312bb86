"""`python -m warren_bundle` and the frozen executable's entry point."""

from warren_bundle.cli.main import main

if __name__ == "__main__":
    main()
