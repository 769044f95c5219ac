"""kdmri_jax.pretrained: a finished teacher stage copied into a workdir."""

import os

import pytest

from kdmri_jax import pretrained
from kdmri_jax.errors import InputError


def _finished_stage(folder, done=True, step="500"):
  os.makedirs(os.path.join(folder, "best", step))
  with open(os.path.join(folder, "best", step, "params"), "w") as f:
    f.write("weights")
  with open(os.path.join(folder, "log.txt"), "w") as f:
    f.write("teacher epoch 1/1\n")
  os.makedirs(os.path.join(folder, "checkpoints", step))
  if done:
    open(os.path.join(folder, "done"), "w").close()
  return str(folder)


def test_copies_a_finished_teacher_without_its_training_state(tmp_path):
  source = _finished_stage(tmp_path / "trained" / "teacher")
  workdir = tmp_path / "run"
  workdir.mkdir()
  message = pretrained.install(source, str(workdir))
  assert "copied the pretrained teacher" in message
  assert (workdir / "teacher" / "done").exists()
  assert (workdir / "teacher" / "best" / "500" / "params").read_text() == "weights"
  assert not (workdir / "teacher" / "checkpoints").exists()  # Adam state is not needed to distil
  assert sorted(os.listdir(workdir)) == ["teacher"]  # no temporary folder left behind


def test_the_workdirs_own_teacher_wins(tmp_path):
  source = _finished_stage(tmp_path / "trained" / "teacher")
  own = tmp_path / "run" / "teacher"
  own.mkdir(parents=True)
  (own / "log.txt").write_text("own")
  assert pretrained.install(source, str(tmp_path / "run")) is None
  assert (own / "log.txt").read_text() == "own"
  assert not (own / "done").exists()


def test_nothing_configured_does_nothing(tmp_path):
  assert pretrained.install(None, str(tmp_path)) is None
  assert pretrained.install("", str(tmp_path)) is None
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage", ["missing", "unfinished", "no_best"])
def test_refuses_what_is_not_a_finished_teacher(tmp_path, damage):
  source = tmp_path / "trained" / "teacher"
  if damage == "unfinished":
    _finished_stage(source, done=False)
  elif damage == "no_best":
    _finished_stage(source)
    os.rename(source / "best" / "500", source / "best" / "old")
  workdir = tmp_path / "run"
  workdir.mkdir()
  with pytest.raises(InputError, match="config.pretrained_teacher"):
    pretrained.install(str(source), str(workdir))
  assert os.listdir(workdir) == []


def test_the_committed_demo_teacher_loads_as_the_demo_configs_teacher(tmp_path):
  """Its meta predates model fields added since (e.g. DCCNN.first_cascade): their defaults hold."""
  import jax

  from configs import demo
  from kdmri_jax import pipeline

  config = demo.get_config()
  workdir = tmp_path / "run"
  workdir.mkdir()
  pretrained.install(config.pretrained_teacher, str(workdir))
  name, model = pipeline.build_model(config, "teacher")
  params, meta = pipeline.load_stage_params(str(workdir), "teacher", name, model, "kd")
  assert "first_cascade" not in meta["model_kwargs"]
  assert sum(p.size for p in jax.tree.leaves(params)) == 141_765
