"""Files written whole or not at all: a temporary file in the destination's folder, then a rename.

Readers (and a crash) see the old file or the complete new one, never a part; the new file gets an
ordinary file's mode (0666 less the umask), not the 0600 of a temporary file.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
  """Runs `write(temporary path)` in `path`'s folder, then renames the file to `path`."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file an ordinary file's mode
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` atomically."""
  write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
  """Writes `payload` to `path` atomically."""
  write_atomic(path, lambda tmp: pathlib.Path(tmp).write_bytes(payload))
