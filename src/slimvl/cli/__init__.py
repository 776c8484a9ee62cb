"""The `slimvl` command: a thin layer over `slimvl.api`.

User errors (bad image, prompt, model reference or recipe) print one line, `slimvl: error: ...`, and
exit with code 2; `--debug` lets them propagate with their traceback instead.

`main` runs a command line; `parser` declares the commands, `commands` carries them out and `tables`
renders their results for a terminal.
"""

from slimvl.cli.main import EXIT_USER_ERROR, main

__all__ = ["EXIT_USER_ERROR", "main"]
