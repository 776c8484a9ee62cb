"""`python -m slimvl`: the same as the `slimvl` command."""

import sys

from slimvl.cli import main

sys.exit(main())
