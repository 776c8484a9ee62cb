"""Parse a command line, run its handler, and turn user errors into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import transformers.utils.logging as hf_logging

from slimvl.cli.parser import build_parser
from slimvl.errors import SlimvlError

EXIT_USER_ERROR = 2
USER_ERRORS = (SlimvlError, ValueError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0) return instead of exiting
        return exc.code if isinstance(exc.code, int) else 0
    with _quiet_transformers():
        if args.debug:
            return args.handler(args)
        try:
            return args.handler(args)
        except USER_ERRORS as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"slimvl: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and warnings (they would clutter or break `--json` output)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
