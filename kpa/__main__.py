import sys

from kpa.cli import main

sys.exit(main())
