"""One owner per workdir: an advisory lock file that `kdmri_jax.main` holds while it runs.

The lock is `fcntl.flock` on `<workdir>/.lock` (one file per process of a multi-host run), so the
kernel drops it when its process dies, however it dies: a killed run never blocks the next one. The
file records the owner (pid, host, command, start time) for the sentence that refuses a second run,
and is removed when the owner finishes. A process that takes the lock checks that the file it
locked is still the one at the path (the previous owner may have removed it in between) and
otherwise tries again.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from typing import Any, Iterator

from kdmri_jax.errors import InputError

LOCK_NAME = ".lock"
MAX_COMMAND_CHARS = 160


def lock_path(workdir: str, key: str = "") -> str:
  """`<workdir>/.lock`, or `.lock-<key>` for process `key` of a multi-host run."""
  return os.path.join(workdir, f"{LOCK_NAME}-{key}" if key else LOCK_NAME)


def process_key(distributed: Any) -> str:
  """'' for a single-process run; otherwise this process's id (config.distributed.process_id,
  SLURM's or the TPU's task id, else the host name): one run's processes lock different files."""
  explicit = distributed.coordinator_address is not None or distributed.process_id is not None
  slurm = "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
  if not (explicit or distributed.auto or slurm):
    return ""
  if distributed.process_id is not None:
    return str(distributed.process_id)
  for variable in ("SLURM_PROCID", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID"):
    if os.environ.get(variable, "").isdigit():
      return os.environ[variable]
  return socket.gethostname()


@contextlib.contextmanager
def hold(workdir: str, command: str, key: str = "") -> Iterator[str]:
  """Holds the workdir's lock for the block; one sentence naming the owner if another has it."""
  path = lock_path(workdir, key)
  fd = _acquire(path, workdir)
  try:
    _write_owner(fd, command)
    yield path
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)  # while still locked: a waiting process then sees a different (or no) file
    os.close(fd)


def _acquire(path: str, workdir: str) -> int:
  """The descriptor of the locked lock file at `path`."""
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
      raise InputError(
        f"cannot create the lock file {path} "
        f"({error.strerror or error}); choose a writable --workdir."
      ) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _read_owner(fd)
      os.close(fd)
      raise InputError(busy_message(workdir, owner)) from None
    except OSError as error:
      os.close(fd)
      raise InputError(
        f"cannot lock {path} ({error.strerror or error}); the file system of "
        f"--workdir {workdir} does not support locks, choose another."
      ) from None
    if _is_at(fd, path):
      return fd
    os.close(fd)  # its owner removed it after we opened it: lock the file now at the path


def _is_at(fd: int, path: str) -> bool:
  try:
    here, there = os.fstat(fd), os.stat(path)
  except FileNotFoundError:
    return False
  return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _write_owner(fd: int, command: str) -> None:
  record = {
    "pid": os.getpid(),
    "host": socket.gethostname(),
    "command": command,
    "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
  }
  payload = (json.dumps(record) + "\n").encode()
  os.ftruncate(fd, 0)
  os.pwrite(fd, payload, 0)


def _read_owner(fd: int) -> dict[str, Any]:
  """The owner's record; {} while it is still being written (or was damaged)."""
  try:
    record = json.loads(os.pread(fd, 1 << 16, 0).decode() or "{}")
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return {}
  return record if isinstance(record, dict) else {}


def busy_message(workdir: str, owner: dict[str, Any]) -> str:
  """The one sentence that refuses a second run on `workdir`."""
  if not owner:
    who = "another process that is just starting"
  else:
    command = " ".join(str(owner.get("command", "?")).split())
    if len(command) > MAX_COMMAND_CHARS:
      command = command[: MAX_COMMAND_CHARS - 3] + "..."
    where = "" if owner.get("host") == socket.gethostname() else f" on {owner.get('host', '?')}"
    who = (
      f"process {owner.get('pid', '?')}{where} (`{command}`), "
      f"running since {owner.get('since', '?')}"
    )
  return (
    f"--workdir {workdir} is in use by {who}; wait for it "
    f"to finish or stop it, or choose another --workdir."
  )
