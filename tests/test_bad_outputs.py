"""Unwritable outputs and work thrown away at the end (issue 15, classes 4 and 6).

Every command that writes checks its output at start-up, before any work, with
`errors.require_writable_output`: an output path inside an existing file, a read-only output
folder and (for file outputs) a missing folder are one sentence and exit status 2, and the earlier
results stay as they were. `benchmark` also refuses `--device gpu` where JAX sees no GPU, instead
of timing nothing.

Paths inside a file and missing folders run in-process through each module's `main` via `run_cli`;
read-only folders run through the real `python -m` entry points. Root writes through chmod, so as
root the folder is bind-mounted read-only in a mount namespace of the command's own (`unshare -m`),
a real read-only file system; where neither works the read-only test is skipped, saying why.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import subprocess
import sys
import tempfile

import h5py
import jax
import numpy as np
import pytest

from helpers import (
  REPO,
  assert_one_line_error,
  prepare_argv,
  run_module,
  save_unread_checkpoint,
  subprocess_env,
  tree_hash,
)
from kdmri_jax import masks
from kdmri_jax.errors import run_cli

SHAPE = (24, 20)
MODULES = {
  name: f"kdmri_jax.{name}"
  for name in ("valid", "evaluate", "export", "prepare", "convert", "benchmark")
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """Good inputs of every writing command: a reference volume, its mask and prediction, a plain
  volume, a student checkpoint and a file named like a PyTorch checkpoint (never read: the output
  is checked first)."""
  root = tmp_path_factory.mktemp("bad_outputs")
  rng = np.random.default_rng(0)
  mask = masks.cartesian_mask(SHAPE, 4, seed=0)
  np.save(root / "mask_4x.npy", mask)
  for folder in ("data", "predictions", "volumes"):
    (root / folder).mkdir()
  target = rng.random((3,) + SHAPE).astype(np.float32)
  kspace = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)
  image = np.abs(np.fft.ifft2(kspace, norm="ortho"))
  with h5py.File(root / "data" / "vol_a.h5", "w") as f:
    for key, value in (("volfs", target), ("img_volus_4x", image), ("kspace_volus_4x", kspace)):
      f.create_dataset(key, data=np.moveaxis(value, 0, -1))
  with h5py.File(root / "predictions" / "vol_a.h5", "w") as f:
    f.create_dataset("reconstruction", data=target * 0.9)
  np.save(root / "volumes" / "v0.npy", rng.random((2, 16, 16)).astype(np.float32))
  save_unread_checkpoint(root / "student_ckpt")
  (root / "best_model.pt").write_bytes(b"never read: the output is checked first")
  return root


# command: (output flag, output name, argv(world, output path)); the name is of a folder
# ('result'), a file ('result.jax', 'result.json') or a dataset root ('new_root').
COMMANDS = {
  "valid": (
    "--out-dir",
    "result",
    lambda w, o: [
      "--checkpoint",
      w / "student_ckpt",
      "--data-path",
      w / "data",
      "--mask",
      w / "mask_4x.npy",
      "--out-dir",
      o,
    ],
  ),
  "evaluate": (
    "--report-path",
    "result",
    lambda w, o: [
      "--target-path",
      w / "data",
      "--predictions-path",
      w / "predictions",
      "--report-path",
      o,
    ],
  ),
  "export": (
    "--out",
    "result.jax",
    lambda w, o: [
      "--checkpoint",
      w / "student_ckpt",
      "--model",
      "student",
      "--shape",
      "24",
      "20",
      "--out",
      o,
    ],
  ),
  "prepare": (
    "--out",
    "new_root",
    lambda w, o: prepare_argv(w / "volumes", o),
  ),
  "convert": (
    "--out",
    "result",
    lambda w, o: ["--torch-checkpoint", w / "best_model.pt", "--model", "student", "--out", o],
  ),
  # The default benchmark (two models, two shapes, every implementation) runs for many
  # minutes: a refusal within the test's time shows the output was checked before the work.
  "benchmark": ("--json", "result.json", lambda w, o: ["--json", o]),
}
FILE_OUTPUTS = ("export", "benchmark")


@pytest.fixture
def earlier(tmp_path):
  """A folder of earlier results: a report (the file outputs are put inside) and a config."""
  folder = tmp_path / "outputs"
  (folder / "previous").mkdir(parents=True)
  (folder / "report.txt").write_text("HFN = 1 +/- 0 earlier results\n")
  (folder / "previous" / "config.json").write_text('{"earlier": "run"}\n')
  return folder


def _inside_a_file(w, t, command):
  flag, name, argv = COMMANDS[command]
  output = t / "outputs" / "report.txt" / name
  return argv(w, output), [flag, "report.txt", "is a file, not a folder"]


def _missing_folder(w, t, command):
  flag, name, argv = COMMANDS[command]
  output = t / "outputs" / "not_made" / name
  return argv(w, output), [flag, "not_made", "does not exist", "create it"]


def _of_the_other_kind(w, t, command, output, fragments):
  return COMMANDS[command][2](w, t / "outputs" / output), fragments


# (id, command, setup(world, tmp) -> (argv, fragments the one error line must contain))
CASES = (
  [
    (f"{command}-inside-a-file", command, lambda w, t, c=command: _inside_a_file(w, t, c))
    for command in COMMANDS
  ]
  + [
    (f"{command}-missing-folder", command, lambda w, t, c=command: _missing_folder(w, t, c))
    for command in FILE_OUTPUTS
  ]
  + [
    (
      "valid-out-dir-is-a-file",
      "valid",
      lambda w, t: _of_the_other_kind(
        w, t, "valid", "report.txt", ["--out-dir", "report.txt", "is a file, not a folder"]
      ),
    ),
    (
      "export-out-is-a-folder",
      "export",
      lambda w, t: _of_the_other_kind(
        w, t, "export", "previous", ["--out", "previous", "is a folder, not a file"]
      ),
    ),
  ]
)


def test_the_table_covers_every_writing_command():
  assert {case[1] for case in CASES} == set(MODULES)
  assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,command,setup", CASES, ids=[c[0] for c in CASES])
def test_unwritable_output_is_one_sentence_before_any_work(
  world, earlier, tmp_path, capsys, monkeypatch, case_id, command, setup
):
  from kdmri_jax import benchmark

  def no_benchmark(*args, **kwargs):
    raise AssertionError("the benchmark ran before its --json output was checked")

  monkeypatch.chdir(REPO)
  monkeypatch.setattr(benchmark, "run", no_benchmark)
  argv, fragments = setup(world, tmp_path)
  before, world_before = tree_hash(earlier), tree_hash(world)
  capsys.readouterr()
  status = run_cli(importlib.import_module(MODULES[command]).main, [str(a) for a in argv])
  assert_one_line_error(status, capsys.readouterr().err, *fragments)
  assert status == 2
  assert tree_hash(earlier) == before, f"{case_id} changed the earlier results in {earlier}"
  assert tree_hash(world) == world_before, f"{case_id} changed its inputs"
  assert not [
    name for _, _, names in os.walk(tmp_path) for name in names if name.startswith(".write-test-")
  ], "a probe file was left behind"


# --- read-only folders, through the real entry points ---------------------------------------------


def _bind_read_only_works() -> bool:
  """Whether `unshare -m` can bind-mount a folder read-only here (root in most containers can)."""
  with tempfile.TemporaryDirectory() as folder:
    script = 'mount --bind -o ro "$0" "$0" && ! touch "$0/x"'
    try:
      result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, folder], capture_output=True, timeout=30
      )
    except (OSError, subprocess.SubprocessError):
      return False
    return result.returncode == 0 and not os.path.exists(os.path.join(folder, "x"))


@pytest.fixture(scope="module")
def read_only():
  """A function (folder, command line) -> command line that runs with `folder` read-only."""
  if os.geteuid() != 0:
    return lambda folder, argv: argv  # the test chmods the folder, which binds a user
  if not _bind_read_only_works():
    pytest.skip(
      "running as root, which writes through chmod, and `unshare -m` cannot mount a "
      "folder read-only here: no way to make a read-only folder"
    )
  script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
  return lambda folder, argv: ["unshare", "-m", "sh", "-c", script, str(folder), *argv]


def test_read_only_output_folder_is_one_sentence_for_every_command(world, tmp_path, read_only):
  """Each writing command with its output in a read-only folder that holds earlier results."""
  jobs = {}
  for command, (flag, name, argv) in COMMANDS.items():
    folder = tmp_path / command / "read_only"
    (folder / "previous").mkdir(parents=True)
    (folder / "report.txt").write_text("earlier\n")
    line = [sys.executable, "-m", MODULES[command], *map(str, argv(world, folder / name))]
    jobs[command] = (read_only(folder, line), folder, [flag, "read_only", "cannot be written"])
  hashes = {command: tree_hash(job[1]) for command, job in jobs.items()}
  if os.geteuid() != 0:
    for _, folder, _ in jobs.values():
      os.chmod(folder, 0o555)

  def run(job):
    return subprocess.run(
      job[0], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )

  try:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      results = dict(zip(jobs, pool.map(run, jobs.values())))
  finally:
    for _, folder, _ in jobs.values():
      os.chmod(folder, 0o755)
  for command, result in results.items():
    assert result.returncode == 2, (command, result.stderr[-2000:])
    assert_one_line_error(result.returncode, result.stderr, *jobs[command][2])
    assert tree_hash(jobs[command][1]) == hashes[command], command


# --- benchmark: outputs and devices before the work (class 6) -------------------------------------


def test_benchmark_refuses_a_missing_gpu_before_the_work(tmp_path, capsys, monkeypatch):
  from kdmri_jax import benchmark

  if any(d.platform == "gpu" for d in jax.devices()):
    pytest.skip("JAX sees a GPU here; the entry-point test below hides it")

  def no_benchmark(*args, **kwargs):
    raise AssertionError("the benchmark ran on a device it does not have")

  monkeypatch.setattr(benchmark, "run", no_benchmark)
  status = run_cli(benchmark.main, ["--device", "gpu", "--json", str(tmp_path / "b.json")])
  assert_one_line_error(status, capsys.readouterr().err, "--device gpu", "no GPU", "--device cpu")
  assert not (tmp_path / "b.json").exists()


def test_benchmark_entry_point_checks_the_device_first(tmp_path):
  """The default benchmark (many minutes of work) on a GPU JAX does not see: refused within
  seconds, nothing written. (Its --json is checked first too: by the read-only test above, and the
  missing folder in-process with the work replaced by a failure.)"""
  result = run_module(
    "kdmri_jax.benchmark",
    ["--device", "gpu", "--json", tmp_path / "b.json"],
    env=subprocess_env(JAX_PLATFORMS="cpu"),
    timeout=90,
  )
  assert_one_line_error(result.returncode, result.stderr, "--device gpu", "no GPU")
  assert result.returncode == 2
  assert os.listdir(tmp_path) == []
