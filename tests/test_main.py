"""Tests for the kdmri_jax.main CLI: bad flags and missing inputs give one sentence and a non-zero exit."""

from __future__ import annotations

import os

import pytest

from kdmri_jax import main
from kdmri_jax.errors import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.py")


def error_line(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


@pytest.mark.parametrize("argv, phrase", [
    (["--config.train.nonsense=1"], "--config.train.nonsense: the config has no field 'nonsense'"),
    (["--config.nothing=1"], "the config has no field 'nothing'"),
    (["--config.train.num_epochs=many"], "--config.train.num_epochs=many"),
    (["--config", "configs/missing.py"], "config file configs/missing.py does not exist"),
    (["--no_such_flag"], "no_such_flag"),
    (["--config.stages=teacher,distill"], "unknown stage(s) ['distill']"),
])
def test_bad_command_lines_exit_2_with_one_line(argv, phrase, capsys, tmp_path):
  assert run_cli(main.main, ["--config", DEMO, "--workdir", str(tmp_path), *argv]) == 2
  assert phrase in error_line(capsys)


@pytest.mark.parametrize("stages", ["feature", "kd"])
def test_missing_teacher_checkpoint_is_one_sentence(stages, capsys, tmp_path):
  status = run_cli(main.main, ["--config", DEMO, "--workdir", str(tmp_path), f"--config.stages={stages}"])
  assert status == 2
  line = error_line(capsys)
  assert f"stage '{stages}' needs the teacher checkpoint" in line and "--config.stages=teacher" in line


def test_data_root_without_the_acceleration_is_one_sentence(capsys, tmp_path):
  root = tmp_path / "data"
  (root / "train" / "acc_4x").mkdir(parents=True)
  (root / "validation" / "acc_4x").mkdir(parents=True)
  status = run_cli(main.main, ["--config", os.path.join(REPO, "configs", "brain_8x.py"),
                               "--workdir", str(tmp_path / "run"), "--config.stages=teacher",
                               f"--config.data.root={root}"])
  assert status == 2
  assert "8x" in error_line(capsys)
