"""Reproduce builtin:tiny: see slimvl.train.tiny for the options."""

import sys

from slimvl.train.tiny import main

if __name__ == "__main__":
    sys.exit(main())
