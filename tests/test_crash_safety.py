"""A `main` run that dies loses no finished work: it resumes to exactly the parameters of a run that
never died.

Real processes (`python -m kdmri_jax.main --config configs/demo.py` made tiny by
`helpers.tiny_main_argv`: embedded brain at 32×32, 8 slices, 2 epochs of 4 steps, a checkpoint after
every step) are
- SIGKILLed at seeded random moments of training, while a training-state checkpoint is being written
  and while a best-model checkpoint is being written, then restarted with the same command;
- stopped with SIGTERM and SIGINT (they must save, say so, and exit 0), then restarted;
- restarted after their newest checkpoint was truncated or overwritten with garbage;
and every finished run's training state (params, Adam moments, RNG, step) and best parameters must
be bit-identical to the uninterrupted reference run (conftest.py `uninterrupted_runs`), its log's
epoch lines the same (an interrupted epoch's training loss averages all its steps, before and after
the restart), and a resumed run must say from which step it resumed and what it moved aside. A
`--workdir` that cannot be written (inside a regular file, on a read-only file system, on a full
disk) is refused at start-up in one sentence.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import (
  REPO,
  assert_one_line_error,
  assert_same_state,
  stage_state,
  subprocess_env,
  tiny_main_argv,
)

STEPS = 8  # 2 epochs × 4 steps of the tiny config
TMP = ".orbax-checkpoint-tmp"


def epoch_lines(workdir, stage="teacher"):
  """{epoch: the last log.txt line of that epoch, without its wall time}."""
  with open(os.path.join(workdir, stage, "log.txt")) as f:
    return {
      line.split()[2]: line.rsplit(" time ", 1)[0]
      for line in f.read().splitlines()
      if line.startswith(f"{stage} epoch ")
    }


def _entries(workdir, folder="checkpoints", stage="teacher"):
  try:
    return os.listdir(os.path.join(workdir, stage, folder))
  except FileNotFoundError:
    return []


def committed(workdir, folder="checkpoints"):
  """Steps whose checkpoint folder is complete (orbax renames `<step>.orbax-checkpoint-tmp` when
  done)."""
  return sorted(int(n) for n in _entries(workdir, folder) if n.isdigit())


def writing(workdir, folder="checkpoints"):
  return any(TMP in n for n in _entries(workdir, folder))


class Run:
  """One `main` subprocess writing its output to a log file next to its workdir."""

  def __init__(self, workdir, data_cache, xla_cache, attempt=0):
    self.workdir = workdir
    self.log = f"{workdir}.attempt{attempt}.log"
    with open(self.log, "w") as out:
      self.proc = subprocess.Popen(
        [sys.executable, "-m", "kdmri_jax.main", *tiny_main_argv(workdir, data_cache)],
        cwd=REPO,
        env=subprocess_env(xla_cache),
        stdout=out,
        stderr=subprocess.STDOUT,
      )

  def wait_for(self, condition, timeout=240.0) -> bool:
    """Polls `condition()` every 2 ms while the process lives; False if it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      if self.proc.poll() is not None:
        return False
      if condition():
        return True
      time.sleep(0.002)
    raise TimeoutError(f"{self.workdir}: condition not met in {timeout} s")

  def finish(self, timeout=240.0) -> int:
    return self.proc.wait(timeout)

  def output(self) -> str:
    with open(self.log) as f:
      return f.read()


def _kill_scenario(name, workdir, data_cache, xla_cache):
  """Kills a run as scenario `name` says, restarts it to the end; returns a description of the
  kill."""
  run = Run(workdir, data_cache, xla_cache)
  if name.startswith("random-"):
    rng = random.Random(int(name.split("-")[1]))
    # leaves >= 3 steps to kill within
    after, delay = rng.randint(1, STEPS - 3), rng.uniform(0.0, 0.03)
    reached = run.wait_for(lambda: committed(workdir) and committed(workdir)[-1] >= after)
    time.sleep(delay)
    moment = f"{delay * 1e3:.0f} ms after step {after}'s checkpoint"
  elif name == "mid-state-write":
    # a training-state checkpoint half written, after some are complete
    reached = run.wait_for(lambda: committed(workdir) and writing(workdir))
    moment = "while writing a training-state checkpoint"
  elif name == "mid-best-write":  # the best-model (inference) checkpoint half written
    reached = run.wait_for(lambda: writing(workdir, "best"))
    moment = "while writing a best-model checkpoint"
  else:
    raise ValueError(name)
  assert reached, f"{name}: the run ended before the kill ({run.output()[-1500:]})"
  run.proc.send_signal(signal.SIGKILL)
  run.finish()
  left = committed(workdir)
  assert not os.path.exists(os.path.join(workdir, "teacher", "done")), (
    f"{name}: killed after the end"
  )
  resumed = Run(workdir, data_cache, xla_cache, attempt=1)
  status = resumed.finish()
  assert status == 0, f"{name}: resumed run failed:\n{resumed.output()[-3000:]}"
  return f"{name}: SIGKILL {moment}; committed steps {left}; resumed to step {STEPS}"


SCENARIOS = ["random-0", "random-1", "random-2", "mid-state-write", "mid-best-write"]


def test_sigkill_at_random_moments_and_mid_write_then_resume_equals_uninterrupted_run(
  uninterrupted_runs, tiny_run_dirs, tmp_path
):
  reference = stage_state(uninterrupted_runs[0])
  assert reference["step"] == STEPS
  data_cache, xla_cache = tiny_run_dirs
  # the runs share 2 cores; they wait
  with concurrent.futures.ThreadPoolExecutor(len(SCENARIOS)) as pool:
    futures = {
      name: pool.submit(_kill_scenario, name, str(tmp_path / name), data_cache, xla_cache)
      for name in SCENARIOS
    }
  reference_log = epoch_lines(uninterrupted_runs[0])
  assert len(reference_log) == 2
  for name, future in futures.items():
    print(future.result())  # raises the scenario's assertion, naming it
    assert_same_state(stage_state(tmp_path / name), reference, name)
    assert epoch_lines(tmp_path / name) == reference_log, name


def _stop_and_resume(sig, workdir, data_cache, xla_cache):
  run = Run(workdir, data_cache, xla_cache)
  assert run.wait_for(lambda: len(committed(workdir)) >= 1), run.output()[-1500:]
  run.proc.send_signal(sig)
  status, output = run.finish(), run.output()
  stopped_at = committed(workdir)
  done = os.path.exists(os.path.join(workdir, "teacher", "done"))
  resumed = Run(workdir, data_cache, xla_cache, attempt=1)
  return status, output, stopped_at, done, resumed.finish(), resumed.output()


def test_sigterm_and_sigint_save_say_so_exit_0_and_resume_exactly(
  uninterrupted_runs, tiny_run_dirs, tmp_path
):
  data_cache, xla_cache = tiny_run_dirs
  reference = stage_state(uninterrupted_runs[0])
  signals = (signal.SIGTERM, signal.SIGINT)
  with concurrent.futures.ThreadPoolExecutor(len(signals)) as pool:
    results = list(
      pool.map(
        lambda sig: _stop_and_resume(sig, str(tmp_path / sig.name), data_cache, xla_cache), signals
      )
    )
  for sig, (status, output, stopped_at, done, resumed_status, resumed_output) in zip(
    signals, results
  ):
    assert status == 0, output[-3000:]
    assert f"stopped by {sig.name}" in output and "rerun the same command to resume" in output, (
      output[-1500:]
    )
    step = int(output.split(f"stopped by {sig.name} at step ")[1].split()[0])
    # the promised checkpoint is there, complete
    assert step in stopped_at and step < STEPS and not done
    assert resumed_status == 0, resumed_output[-3000:]
    epoch, offset = divmod(step, STEPS // 2)
    at = f"the end of epoch {epoch}/2" if offset == 0 else f"step {offset}/4 of epoch {epoch + 1}/2"
    resumed = f"teacher: resuming in {tmp_path / sig.name / 'teacher'} from step {step} ({at})"
    assert resumed in resumed_output, resumed_output[-2000:]
    assert "teacher: starting in" not in resumed_output
    assert_same_state(stage_state(tmp_path / sig.name), reference, sig.name)
    assert epoch_lines(tmp_path / sig.name) == epoch_lines(uninterrupted_runs[0]), sig.name


def _damage(folder, how):
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      if how == "truncated":
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 3)
      else:
        with open(path, "wb") as f:
          f.write(b"\x00not a checkpoint\xff" * 7)


def _damage_and_resume(how, workdir, data_cache, xla_cache):
  run = Run(workdir, data_cache, xla_cache)
  assert run.wait_for(lambda: len(committed(workdir)) >= 3)
  run.proc.send_signal(signal.SIGKILL)
  run.finish()
  bad = os.path.join(workdir, "teacher", "checkpoints", str(committed(workdir)[-1]))
  _damage(bad, how)
  resumed = Run(workdir, data_cache, xla_cache, attempt=1)
  return bad, resumed.finish(), resumed.output()


def test_a_truncated_or_garbage_newest_checkpoint_is_named_and_the_previous_one_used(
  uninterrupted_runs, tiny_run_dirs, tmp_path
):
  data_cache, xla_cache = tiny_run_dirs
  reference = stage_state(uninterrupted_runs[0])
  kinds = ("truncated", "garbage")
  with concurrent.futures.ThreadPoolExecutor(len(kinds)) as pool:
    results = list(
      pool.map(
        lambda how: _damage_and_resume(how, str(tmp_path / how), data_cache, xla_cache), kinds
      )
    )
  for how, (bad, status, output) in zip(kinds, results):
    assert status == 0, f"{how}: {output[-3000:]}"
    assert bad in output and "unreadable" in output, output[-2000:]
    resumed = next(line for line in output.splitlines() if line.startswith("teacher: resuming in "))
    step = os.path.basename(bad)
    assert resumed.endswith(f"; moved aside the damaged checkpoint(s) of step {step}"), resumed
    assert_same_state(stage_state(tmp_path / how), reference, how)


def test_restore_newest_good_names_a_damaged_step_moves_it_aside_and_uses_the_previous(tmp_path):
  """The fallback itself, on a real orbax manager: newest step garbage -> named, moved aside,
  previous read."""
  import numpy as np
  import orbax.checkpoint as ocp

  from kdmri_jax import checkpoints

  directory = str(tmp_path / "ckpts")
  with ocp.CheckpointManager(
    directory, options=ocp.CheckpointManagerOptions(max_to_keep=3), item_names=("state",)
  ) as mngr:
    for step in (1, 2, 3):
      mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.full(4, step, np.float32)})),
      )
    mngr.wait_until_finished()
  _damage(os.path.join(directory, "3"), "garbage")
  _damage(os.path.join(directory, "2"), "truncated")
  said = []
  with ocp.CheckpointManager(directory, item_names=("state",)) as mngr:
    step, restored = checkpoints.restore_newest_good(
      mngr,
      lambda s: mngr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state,
      said.append,
    )
    assert step == 1 and np.array_equal(restored["w"], np.full(4, 1, np.float32))
    # the damaged steps are out of the manager's view, so they can be rewritten
    assert mngr.latest_step() == 1
    mngr.save(
      3, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.zeros(4, np.float32)}))
    )
    mngr.wait_until_finished()
  assert (
    len(said) == 2
    and os.path.join(directory, "3") in said[0]
    and os.path.join(directory, "2") in said[1]
  )
  assert sorted(n.split(".corrupt-")[0] for n in os.listdir(directory) if ".corrupt-" in n) == [
    "2",
    "3",
  ]


# --- a workdir that cannot be written fails at start-up -------------------------------------------


def _main_in_process(workdir, tiny_run_dirs, capsys):
  from kdmri_jax import main
  from kdmri_jax.errors import run_cli

  capsys.readouterr()
  status = run_cli(main.main, tiny_main_argv(workdir, tiny_run_dirs[0]))
  return status, capsys.readouterr().err


def test_require_writable_dir_refuses_file_parent_read_only_fs_and_full_disk(tmp_path, monkeypatch):
  from kdmri_jax import errors

  (tmp_path / "a_file").write_text("x")
  with pytest.raises(errors.InputError, match="is a file, not a folder"):
    errors.require_writable_dir(str(tmp_path / "a_file" / "run"))
  # sysfs refuses new entries even to root: a real read-only place, no mount needed.
  if os.path.isdir("/sys") and not os.path.exists("/sys/kdmri_jax_probe"):
    with pytest.raises(errors.InputError, match="not writable"):
      errors.require_writable_dir("/sys/kdmri_jax_probe")
  # A full disk, simulated: statvfs reports 1 MiB free (we cannot fill a shared disk in a test).
  monkeypatch.setattr(
    errors.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, 2**20)
  )
  with pytest.raises(errors.InputError, match="only 1 MiB free"):
    errors.require_writable_dir(str(tmp_path / "ok"))


def test_main_refuses_a_workdir_inside_a_file_at_start_up(tiny_run_dirs, tmp_path, capsys):
  (tmp_path / "a_file").write_text("x")
  status, err = _main_in_process(tmp_path / "a_file" / "run", tiny_run_dirs, capsys)
  assert_one_line_error(status, err, "a_file", "--workdir")


def test_main_refuses_a_full_disk_at_start_up(tiny_run_dirs, tmp_path, capsys, monkeypatch):
  from kdmri_jax import errors, train

  def no_training(*args, **kwargs):
    raise AssertionError("training started on a full disk")

  monkeypatch.setattr(train, "fit", no_training)
  monkeypatch.setattr(
    errors.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, 2**20)
  )
  monkeypatch.setattr(
    shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, 2**20)
  )
  status, err = _main_in_process(tmp_path / "run", tiny_run_dirs, capsys)
  assert_one_line_error(status, err, "free", "--workdir")
