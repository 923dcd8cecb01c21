import sys

from thce.cli import main

if __name__ == "__main__":  # not when a worker process (thce.workers, spawned) imports the main module again
    sys.exit(main())
