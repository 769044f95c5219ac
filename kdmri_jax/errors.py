"""One kind of error for bad user input, and the CLI wrapper that reports it in one sentence.

Every command-line entry point runs through `run_cli`: an `InputError` (a missing file, a wrong key, a
mask of the wrong shape, ...) is printed as a single line on stderr and the process exits with status 2.
Anything else is a bug and keeps its traceback. `--debug` on any command shows the traceback of an
`InputError` too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Callable, Sequence


class InputError(Exception):
  """Bad input from the user: the message is one sentence naming the file/field and what to do."""


def require(condition: bool, message: str) -> None:
  """Raises `InputError(message)` unless `condition` holds."""
  if not condition:
    raise InputError(message)


def require_writable_dir(path: str, what: str = "--workdir", min_free_bytes: int = 64 << 20) -> str:
  """Creates folder `path` if needed and proves it can be written (a probe file) with at least
  `min_free_bytes` free; otherwise one sentence naming `what`. Returns the absolute path.

  Catches at start-up what would otherwise fail hours later at the first checkpoint: a path inside a
  regular file, a read-only or full file system, a folder without write permission.
  """
  path = os.path.abspath(path)
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  require(os.path.isdir(parent), f"{what} {path} cannot be created: {parent} is a file, not a folder; "
                                 f"choose another {what}.")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as error:
    raise InputError(f"{what} {path} is not writable ({error.strerror or error}); choose a folder on a "
                     f"writable disk.") from None
  free = shutil.disk_usage(path).free
  require(free >= min_free_bytes, f"{what} {path} has only {free / 2**20:.0f} MiB free, less than the "
                                  f"{min_free_bytes / 2**20:.0f} MiB a run needs; free space or choose "
                                  f"another {what}.")
  return path


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
