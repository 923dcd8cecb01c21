import sys

from thce.cli import main

sys.exit(main())
