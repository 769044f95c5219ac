"""A workdir has one owner (kdmri_jax/workdir_lock.py): a second run is refused in one sentence
naming the first, and a dead owner (even SIGKILLed) never keeps the workdir locked."""

from __future__ import annotations

import json
import os
import signal
import socket
import types

import pytest

from helpers import assert_one_line_error, run_module, tiny_main_argv, tree_hash
from kdmri_jax import workdir_lock
from kdmri_jax.errors import InputError
from startup_probe import held_config, main_argv, start_main, wait_until_reached


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with workdir_lock.hold(str(tmp_path), "python -m kdmri_jax.main --config first.py") as path:
    record = json.loads(open(path).read())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    with pytest.raises(InputError) as raised:
      with workdir_lock.hold(str(tmp_path), "the second"):
        pass
  message = str(raised.value)
  assert f"--workdir {tmp_path} is in use by process {os.getpid()} " in message
  assert "`python -m kdmri_jax.main --config first.py`" in message and record["since"] in message
  assert not os.path.exists(path), "the owner removes its lock file when it finishes"
  with workdir_lock.hold(str(tmp_path), "the second"):
    pass


def test_a_lock_file_left_by_a_dead_owner_is_taken_over(tmp_path):
  path = workdir_lock.lock_path(str(tmp_path))
  with open(path, "w") as f:
    json.dump({"pid": 1, "host": "elsewhere", "command": "killed", "since": "yesterday"}, f)
  with workdir_lock.hold(str(tmp_path), "the new owner"):
    assert json.loads(open(path).read())["command"] == "the new owner"


def test_an_unwritten_record_still_gives_a_sentence(tmp_path):
  assert "another process that is just starting" in workdir_lock.busy_message(str(tmp_path), {})


def test_a_long_command_is_shortened_in_the_sentence(tmp_path):
  owner = {"pid": 7, "host": socket.gethostname(), "command": "x" * 1000, "since": "now"}
  message = workdir_lock.busy_message(str(tmp_path), owner)
  assert "process 7 (`" in message and len(message) < 400 and "..." in message


def distributed(**fields):
  return types.SimpleNamespace(
    **{
      "auto": False,
      "coordinator_address": None,
      "num_processes": None,
      "process_id": None,
      **fields,
    }
  )


def test_the_processes_of_a_multi_host_run_lock_different_files(monkeypatch):
  monkeypatch.delenv("SLURM_JOB_ID", raising=False)
  assert workdir_lock.process_key(distributed()) == ""
  explicit = distributed(coordinator_address="h:1", num_processes=2, process_id=1)
  assert workdir_lock.process_key(explicit) == "1"
  monkeypatch.setenv("SLURM_JOB_ID", "5")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  monkeypatch.setenv("SLURM_PROCID", "3")
  assert workdir_lock.process_key(distributed()) == "3"
  assert workdir_lock.lock_path("w", "3") != workdir_lock.lock_path("w", "")


def test_two_real_runs_on_one_workdir(tmp_path):
  """A held first run owns the workdir: a second `main` is refused naming it and changes nothing;
  SIGKILLed, the first leaves its lock file behind, which the next run takes over."""
  workdir, cache = tmp_path / "run", tmp_path / "cache"
  config, reached, go = held_config(tmp_path, "load_data")
  first = start_main(main_argv(config, workdir, cache))
  try:
    wait_until_reached(first, reached)
    before = tree_hash(workdir)
    second = run_module("kdmri_jax.main", tiny_main_argv(workdir, cache, epochs=1))
    line = assert_one_line_error(
      second.returncode,
      second.stderr,
      f"in use by process {first.pid}",
      "running since",
      os.path.basename(config),
      "choose another --workdir",
    )
    assert second.returncode == 2, line
    assert tree_hash(workdir) == before, "the refused run changed the workdir"
  finally:
    first.kill()
    first.communicate()
  lock = workdir_lock.lock_path(str(workdir))
  assert json.loads(open(lock).read())["pid"] == first.pid, "a SIGKILLed owner leaves its file"

  config, reached, go = held_config(tmp_path, "load_data", name="again")
  third = start_main(main_argv(config, workdir, cache))
  try:
    wait_until_reached(third, reached)
    assert json.loads(open(lock).read())["pid"] == third.pid
  finally:
    third.send_signal(signal.SIGTERM)
    out, err = third.communicate(timeout=120)
  assert third.returncode == 143, err
  assert not os.path.exists(lock), "a run stopped by SIGTERM releases the workdir"
