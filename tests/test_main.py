"""Tests for the kdmri_jax.main CLI: bad flags and missing inputs give one sentence and a non-zero
exit."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from helpers import assert_one_line_error, run_module, tree_hash
from kdmri_jax import main
from kdmri_jax.errors import run_cli
from startup_probe import held_config, main_argv, start_main, wait_until_reached

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "brain_cpu.py")


def error_line(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


@pytest.mark.parametrize(
  "argv, phrase",
  [
    (["--config.train.nonsense=1"], "--config.train.nonsense: the config has no field 'nonsense'"),
    (["--config.nothing=1"], "the config has no field 'nothing'"),
    (["--config.train.num_epochs=many"], "--config.train.num_epochs=many"),
    (["--config", "configs/missing.py"], "config file configs/missing.py does not exist"),
    (["--no_such_flag"], "no_such_flag"),
    (["--config.stages=teacher,distill"], "unknown stage(s) ['distill']"),
  ],
)
def test_bad_command_lines_exit_2_with_one_line(argv, phrase, capsys, tmp_path):
  assert run_cli(main.main, ["--config", DEMO, "--workdir", str(tmp_path), *argv]) == 2
  assert phrase in error_line(capsys)


@pytest.mark.parametrize("stages", ["feature", "kd"])
def test_missing_teacher_checkpoint_is_one_sentence(stages, capsys, tmp_path):
  status = run_cli(
    main.main, ["--config", DEMO, "--workdir", str(tmp_path), f"--config.stages={stages}"]
  )
  assert status == 2
  line = error_line(capsys)
  assert (
    f"stage '{stages}' needs the teacher checkpoint" in line and "--config.stages=teacher" in line
  )


def test_data_root_without_the_acceleration_is_one_sentence(capsys, tmp_path):
  root = tmp_path / "data"
  (root / "train" / "acc_4x").mkdir(parents=True)
  (root / "validation" / "acc_4x").mkdir(parents=True)
  status = run_cli(
    main.main,
    [
      "--config",
      os.path.join(REPO, "configs", "brain_8x.py"),
      "--workdir",
      str(tmp_path / "run"),
      "--config.stages=teacher",
      f"--config.data.root={root}",
    ],
  )
  assert status == 2
  assert "8x" in error_line(capsys)


# --- issue 15: config ranges, one owner per workdir, SIGTERM during start-up ----------------------

ISSUE_RANGE_CASES = [
  ("train.num_epochs", "0"),
  ("train.num_epochs", "-3"),
  ("train.keep_checkpoints", "0"),
  ("train.batch_size", "0"),
  ("train.lr_step_epochs", "0"),
  ("data.image_size", "0"),
  ("train.learning_rate", "0"),
]


def earlier_workdir(tmp_path):
  """A workdir that already holds an earlier run's file."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"earlier": "run"}\n')
  return workdir


@pytest.mark.parametrize("field,value", ISSUE_RANGE_CASES)
def test_a_config_value_out_of_range_is_refused_before_anything_runs(
  field, value, capsys, tmp_path
):
  workdir = earlier_workdir(tmp_path)
  before = tree_hash(workdir)
  argv = ["--config", DEMO, "--workdir", str(workdir), f"--config.{field}={value}"]
  status = run_cli(main.main, argv)
  assert status == 2
  line = error_line(capsys)
  assert line.startswith(f"error: config.{field}=") and "is out of range" in line, line
  assert tree_hash(workdir) == before


def test_a_range_error_from_the_real_entry_point(tmp_path):
  result = run_module(
    "kdmri_jax.main",
    ["--config", DEMO, "--workdir", str(tmp_path / "run"), "--config.train.keep_checkpoints=0"],
  )
  assert result.returncode == 2
  assert_one_line_error(result.returncode, result.stderr, "config.train.keep_checkpoints=0", "≥ 1")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["config", "load_data"])
def test_sigterm_during_start_up_says_so_and_exits_143(where, tmp_path):
  """SIGTERM while the config file loads, or inside the pipeline after the workdir is locked (before
  any stage began): one sentence, status 143, the workdir as it was and not locked."""
  workdir = earlier_workdir(tmp_path)
  before = tree_hash(workdir)
  config, reached, _ = held_config(tmp_path, where)
  proc = start_main(main_argv(config, workdir, tmp_path / "cache"))
  wait_until_reached(proc, reached)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, (out, err)
  lines = [line for line in err.splitlines() if line.strip()]
  assert lines == [
    "error: stopped by SIGTERM during start-up, before any stage began: no "
    "checkpoint or result was written; rerun the same command to start the run."
  ], err
  assert tree_hash(workdir) == before


# The sentence of a signal that comes after start-up: tests/test_stop_sentences.py.


def test_a_config_that_imports_configs_from_another_folder_is_one_sentence(
  tmp_path, monkeypatch, capsys
):
  """A config file that imports `configs.*`, run from a folder where `configs` is not importable:
  the real ModuleNotFoundError branch of main._parse, one sentence naming the folder."""
  config = tmp_path / "mine.py"
  config.write_text(
    "from configs import brain_cpu\n\n\ndef get_config():\n  return brain_cpu.get_config()\n"
  )
  monkeypatch.setattr(
    sys, "path", [p for p in sys.path if os.path.realpath(p or os.getcwd()) != REPO]
  )
  monkeypatch.chdir(tmp_path)
  for name in [n for n in sys.modules if n == "configs" or n.startswith("configs.")]:
    monkeypatch.delitem(sys.modules, name)
  status = run_cli(main.main, ["--config", str(config), "--workdir", str(tmp_path / "run")])
  assert status == 2
  line = error_line(capsys)
  assert line == (
    f"error: the config file imports 'configs', which is not importable from {tmp_path}; run the "
    f"command from the repository root (where configs/ is) or install the package (pip install .)."
  )
  assert not (tmp_path / "run").exists()
