"""A `main` run that dies loses no finished work: it resumes to exactly the parameters of a run that
never died.

Real processes (`python -m kdmri_jax.main --config configs/demo.py` made tiny by
`helpers.tiny_main_argv`: embedded brain at 32×32, 8 slices, 2 epochs of 4 steps, a checkpoint after
every step) are
- SIGKILLed at seeded random moments of training, while a training-state checkpoint is being written
  and while a best-model checkpoint is being written, then restarted with the same command;
- stopped with SIGTERM and SIGINT (they must save, say so, and exit 0), then restarted;
- restarted after their newest checkpoint was truncated or overwritten with garbage;
in three chains (`CHAINS`) of three interruptions each: one workdir per chain, its run interrupted
at each event in turn and restarted with the same command each time (so the later restarts resume
a workdir interrupted more than once);
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


def newest(workdir):
  """The newest complete training-state step (0 if none)."""
  return max(committed(workdir), default=0)


def is_done(workdir):
  return os.path.exists(os.path.join(workdir, "teacher", "done"))


class Run:
  """One `main` subprocess writing its output to a log file next to its workdir; `start` is the
  newest complete step it found (the step it resumes from, unless that one is damaged)."""

  def __init__(self, workdir, data_cache, xla_cache, attempt=0):
    self.workdir, self.start = workdir, newest(workdir)
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


# --- interruptions ------------------------------------------------------------------------------
# Each takes the running `Run`, interrupts it and returns what the tests check of it; the run that
# resumes after it is started by the chain (below).


def _sigkill(name, run):
  """Kills `run` with SIGKILL at the moment `name` says."""
  workdir = run.workdir
  if name.startswith("random-"):
    rng = random.Random(int(name.split("-")[1]))
    # leaves >= 3 steps to kill within; a resumed run is killed in steps it trains itself
    after, delay = max(rng.randint(1, STEPS - 3), run.start + 1), rng.uniform(0.0, 0.03)
    reached = run.wait_for(lambda: newest(workdir) >= after)
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
  assert not is_done(workdir), f"{name}: killed after the end"
  return {
    "said": f"{name}: SIGKILL {moment} of a run from step {run.start}; committed steps "
    f"{committed(workdir)}"
  }


def _stop(name, run):
  """Sends SIGTERM or SIGINT once `run` has written a checkpoint of its own."""
  assert run.wait_for(lambda: newest(run.workdir) > run.start), run.output()[-1500:]
  run.proc.send_signal(getattr(signal, name))
  status = run.finish()
  return {
    "status": status,
    "output": run.output(),
    "stopped_at": committed(run.workdir),
    "done": is_done(run.workdir),
  }


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


def _kill_and_damage(how, run):
  """SIGKILLs `run` once 3 checkpoints are kept (one of its own), then damages the newest."""
  workdir = run.workdir
  reached = run.wait_for(lambda: len(committed(workdir)) >= 3 and newest(workdir) > run.start)
  assert reached, f"{how}: the run ended before the kill ({run.output()[-1500:]})"
  run.proc.send_signal(signal.SIGKILL)
  run.finish()
  bad = os.path.join(workdir, "teacher", "checkpoints", str(newest(workdir)))
  _damage(bad, how)
  return {"bad": bad}


INTERRUPTIONS = {
  **{name: _sigkill for name in ("random-0", "random-1", "random-2")},
  "mid-state-write": _sigkill,
  "mid-best-write": _sigkill,
  "SIGTERM": _stop,
  "SIGINT": _stop,
  "truncated": _kill_and_damage,
  "garbage": _kill_and_damage,
}
KILLS = ("random-0", "random-1", "random-2", "mid-state-write", "mid-best-write")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
DAMAGES = ("truncated", "garbage")
# Each chain is one workdir: its run is interrupted at each event in turn, each time restarted
# with the same command, and the last restart runs to the end. The stops come first (a stop must
# land before the last step), a random moment before any later one of its chain, and the kill
# while best/ is written last (it waits for the next best write, at step 4 or 8).
CHAINS = {
  "a": ("random-2", "random-0", "mid-best-write"),
  "b": ("SIGTERM", "random-1", "truncated"),
  "c": ("SIGINT", "mid-state-write", "garbage"),
}


def _run_chain(events, workdir, data_cache, xla_cache):
  """{event: what its interruption left, 'resumed': the run after it}, and the final run's
  (status, output); an event that failed holds 'error', and the chain stops there."""
  records, run = {}, Run(workdir, data_cache, xla_cache)
  for attempt, name in enumerate(events, start=1):
    try:
      records[name] = INTERRUPTIONS[name](name, run)
    except (AssertionError, TimeoutError) as error:
      run.proc.kill()
      run.finish()
      records[name] = {"error": error}
      for later in events[attempt:]:
        records[later] = {"error": AssertionError(f"{later}: not run, {name} failed first")}
      return records, (None, run.output())
    run = records[name]["resumed"] = Run(workdir, data_cache, xla_cache, attempt)
  return records, (run.finish(), run.output())


@pytest.fixture(scope="module")
def chains(uninterrupted_runs, tiny_run_dirs, tmp_path_factory):
  """{chain: (workdir, {event: record}, (final status, final output))}, the chains run side by
  side (the runs share 2 cores; they wait)."""
  root = tmp_path_factory.mktemp("interrupted")
  data_cache, xla_cache = tiny_run_dirs
  with concurrent.futures.ThreadPoolExecutor(len(CHAINS)) as pool:
    futures = {
      chain: pool.submit(_run_chain, events, str(root / chain), data_cache, xla_cache)
      for chain, events in CHAINS.items()
    }
  return {chain: (root / chain, *future.result()) for chain, future in futures.items()}


def _event(chains, name):
  """(workdir, record) of event `name`; raises the assertion it failed, naming it."""
  chain = next(c for c, events in CHAINS.items() if name in events)
  workdir, records, (status, final_output) = chains[chain]
  record = records[name]
  if "error" in record:
    raise record["error"]
  assert status == 0, (
    f"{name}: the chain's last run (status {status}) failed:\n{final_output[-3000:]}"
  )
  return workdir, record


def test_sigkill_at_random_moments_and_mid_write_then_resume_equals_uninterrupted_run(
  uninterrupted_runs, chains
):
  reference = stage_state(uninterrupted_runs[0])
  assert reference["step"] == STEPS
  reference_log = epoch_lines(uninterrupted_runs[0])
  assert len(reference_log) == 2
  for name in KILLS:
    workdir, record = _event(chains, name)  # raises the event's assertion, naming it
    print(f"{record['said']}; resumed to step {STEPS}")
    assert_same_state(stage_state(workdir), reference, name)
    assert epoch_lines(workdir) == reference_log, name


def test_sigterm_and_sigint_save_say_so_exit_0_and_resume_exactly(uninterrupted_runs, chains):
  reference = stage_state(uninterrupted_runs[0])
  for sig in SIGNALS:
    workdir, record = _event(chains, sig.name)
    status, output = record["status"], record["output"]
    resumed_output = record["resumed"].output()
    assert status == 0, output[-3000:]
    assert f"stopped by {sig.name}" in output and "rerun the same command to resume" in output, (
      output[-1500:]
    )
    step = int(output.split(f"stopped by {sig.name} at step ")[1].split()[0])
    # the promised checkpoint is there, complete
    assert step in record["stopped_at"] and step < STEPS and not record["done"]
    epoch, offset = divmod(step, STEPS // 2)
    at = f"the end of epoch {epoch}/2" if offset == 0 else f"step {offset}/4 of epoch {epoch + 1}/2"
    resumed = f"teacher: resuming in {workdir / 'teacher'} from step {step} ({at})"
    assert resumed in resumed_output, resumed_output[-2000:]
    assert "teacher: starting in" not in resumed_output
    assert_same_state(stage_state(workdir), reference, sig.name)
    assert epoch_lines(workdir) == epoch_lines(uninterrupted_runs[0]), sig.name


def test_a_truncated_or_garbage_newest_checkpoint_is_named_and_the_previous_one_used(
  uninterrupted_runs, chains
):
  reference = stage_state(uninterrupted_runs[0])
  for how in DAMAGES:
    workdir, record = _event(chains, how)
    bad, output = record["bad"], record["resumed"].output()
    assert bad in output and "unreadable" in output, output[-2000:]
    resumed = next(line for line in output.splitlines() if line.startswith("teacher: resuming in "))
    step = os.path.basename(bad)
    assert resumed.endswith(f"; moved aside the damaged checkpoint(s) of step {step}"), resumed
    assert_same_state(stage_state(workdir), reference, how)


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
