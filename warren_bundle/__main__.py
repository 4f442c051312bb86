"""`python -m warren_bundle` and the frozen executable's entry point."""

from warren_bundle.cli.main import main
from warren_bundle.runtime.childenv import restore_library_path

restore_library_path()  # frozen: the runtime's LD_LIBRARY_PATH is no program's but its own

if __name__ == "__main__":
    main()
