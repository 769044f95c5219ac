"""One kind of error for bad user input, and the CLI wrapper that reports it in one sentence.

Every command-line entry point runs through `run_cli`: an `InputError` (a missing file, a wrong key,
a mask of the wrong shape, ...) is printed as a single line on stderr and the process exits with
status 2. Anything else is a bug and keeps its traceback. `--debug` on any command shows the
traceback of an `InputError` too. SIGTERM raises `Terminated`, so the cleanup of every `finally`
runs (`atomic`'s temporary files and `prepare`'s staging folder are removed), and ends the command
with one sentence and status 143 (`main` says more: what the pipeline had finished).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Callable, Iterator, Sequence


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
  require(
    os.path.isdir(parent),
    f"{what} {path} cannot be created: {parent} is a file, not a folder; choose another {what}.",
  )
  _require_new_files(
    path,
    lambda why: f"{what} {path} is not writable ({why}); choose a folder on a writable disk.",
    create=True,
  )
  free = shutil.disk_usage(path).free
  require(
    free >= min_free_bytes,
    f"{what} {path} has only {free / 2**20:.0f} MiB free, less than the "
    f"{min_free_bytes / 2**20:.0f} MiB a run needs; free space or choose "
    f"another {what}.",
  )
  return path


def cli_parser(module: str, doc: str) -> argparse.ArgumentParser:
  """The parser of CLI `python -m {module}`, described by the first paragraph of its docstring."""
  return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])


def run_cli(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> int:
  """Runs `main(argv)`; reports an `InputError` as one line and returns exit status 2."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  if debug:
    argv.remove("--debug")
  try:
    with terminate_as_exception():
      status = main(argv)
  except InputError as error:
    if debug:
      raise
    print(f"error: {error}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except Terminated as stop:
    print(
      f"error: stopped by {stop.signal} before the command finished; rerun the same command to "
      f"finish it.",
      file=sys.stderr,
    )
    return stop.exit_status
  return int(status or 0)


# --- outputs: writable at start-up, before any work ---------------------------------------------

OUTPUT_KINDS = ("file", "folder", "staged-folder")


def require_writable_output(path: str | os.PathLike, what: str, kind: str = "file") -> str:
  """Proves at start-up, before any work, that output `path` can be written; otherwise one sentence
  naming `what`. Creates nothing (a probe file comes and goes). Returns the absolute path.

  kind 'file': a file written beside itself and renamed into place, in a folder that must exist;
  'folder': a folder written into, created with its missing parents when the work is done;
  'staged-folder': a folder built beside itself and renamed into place (a prepared dataset).
  An existing path must be of that kind, and the folder that gets written (the folder itself, else
  its parent; the nearest existing ancestor of a missing one) must be a folder that takes a file.
  """
  if kind not in OUTPUT_KINDS:
    raise ValueError(f"kind {kind!r} is not one of {OUTPUT_KINDS}")
  path = os.path.abspath(os.fspath(path))
  want = "file" if kind == "file" else "folder"
  if os.path.exists(path):
    have = "folder" if os.path.isdir(path) else "file"
    require(have == want, f"{what} {path} is a {have}, not a {want}; choose another {what}.")
  written = path if kind == "folder" else os.path.dirname(path)
  existing = _nearest_existing(written)
  require(
    os.path.isdir(existing),
    f"{what} {path} cannot be created: {existing} is a file, not a folder; choose another {what}.",
  )
  require(
    kind != "file" or existing == written,
    f"{what} {path} cannot be written: its folder {written} "
    f"does not exist; create it first or choose another {what}.",
  )
  _require_new_files(
    existing,
    lambda why: f"{what} {path} cannot be written: {existing} takes no new files ({why}); "
    "choose a writable folder.",
  )
  return path


def _require_new_files(folder: str, sentence: Callable[[str], str], create: bool = False) -> None:
  """Creates (when `create`) and probes `folder` with a temporary file; `sentence(why)` if that
  fails."""
  try:
    if create:
      os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
      pass
  except OSError as error:
    raise InputError(sentence(str(error.strerror or error))) from None


def _nearest_existing(path: str) -> str:
  """`path`, or its nearest ancestor that exists."""
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


class Terminated(BaseException):
  """A termination signal (SIGTERM) arrived where no code of its own handles it (the training loop
  does): raised from the signal handler that `terminate_as_exception` installs. `progress` is where
  the command was, set by the code it unwinds through (`pipeline.run`: a `pipeline.Progress`)."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signal = signal.Signals(signum).name
    self.exit_status = 128 + signum  # what the shell reports for a process the signal killed
    self.progress = None


@contextlib.contextmanager
def terminate_as_exception(signum: int = signal.SIGTERM) -> Iterator[None]:
  """While the block runs, `signum` raises `Terminated` once (not a silent death), so the command
  can say what was left behind; further signals are ignored while it unwinds. No-op off the main
  thread."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []

  def handle(number, frame):
    del frame
    if not received:
      received.append(number)
      raise Terminated(number)

  previous = signal.signal(signum, handle)
  try:
    yield
  finally:
    signal.signal(signum, previous)
