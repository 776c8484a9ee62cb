"""`python -m slimvl`: the same as the `slimvl` command."""

from slimvl.console import main

main()
