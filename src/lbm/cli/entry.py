"""Run a command so that user errors print one line and exit 2, and bugs keep their traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from lbm.errors import LbmError


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number, `least` or more (else one usage-error line)."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
        return value

    return whole_number


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(prog: str, command: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Call `command(argv)`; turn LbmError into one stderr line and status 2."""
    try:
        return command(sys.argv[1:] if argv is None else list(argv))
    except LbmError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sagey logs JOB | head` closes the pipe early: not an error.
        sys.stderr.close()
        return 0
