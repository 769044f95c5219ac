"""One kind of error for bad user input, and the CLI wrapper that reports it in one sentence.

Every command-line entry point runs through `run_cli`: an `InputError` (a missing file, a wrong key, a
mask of the wrong shape, ...) is printed as a single line on stderr and the process exits with status 2.
Anything else is a bug and keeps its traceback. `--debug` on any command shows the traceback of an
`InputError` too.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class InputError(Exception):
  """Bad input from the user: the message is one sentence naming the file/field and what to do."""


def require(condition: bool, message: str) -> None:
  """Raises `InputError(message)` unless `condition` holds."""
  if not condition:
    raise InputError(message)


def run_cli(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> int:
  """Runs `main(argv)`; reports an `InputError` as one line and returns exit status 2."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  if debug:
    argv.remove("--debug")
  try:
    status = main(argv)
  except InputError as error:
    if debug:
      raise
    print(f"error: {error}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  return int(status or 0)
