"""The ``slimvl`` console script and ``python -m slimvl``: huge pages first, then the command.

Kept apart from `slimvl.cli` so that the re-execution (`slimvl.hugepages`) happens before PyTorch and
transformers are imported (~4 s here), not after.
"""

import sys

from slimvl.hugepages import reexec_with_huge_pages


def main() -> None:
    reexec_with_huge_pages()
    from slimvl.cli import main as cli_main

    sys.exit(cli_main())
