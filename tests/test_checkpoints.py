"""Inference checkpoints: round-trip, best-step resolution, wrong model and damaged folders."""

import os

import jax
import numpy as np
import pytest

from kdmri_jax import checkpoints, models
from kdmri_jax.errors import InputError


def _student():
  model = models.build_model("student", num_cascades=2)
  return model, models.init_params(model, jax.random.PRNGKey(0), 8, 8)


def test_roundtrip_rebuilds_the_model_from_meta(tmp_path):
  model, params = _student()
  checkpoints.save_params(
    tmp_path / "ck", params, checkpoints.make_meta("student", model, stage="student")
  )
  loaded_model, loaded, meta = checkpoints.load_params(tmp_path / "ck")
  assert loaded_model == model and meta["stage"] == "student"
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, loaded)


def test_refuses_to_overwrite_and_names_the_wrong_model(tmp_path):
  model, params = _student()
  meta = checkpoints.make_meta("student", model)
  checkpoints.save_params(tmp_path / "ck", params, meta)
  with pytest.raises(InputError, match="already exists"):
    checkpoints.save_params(tmp_path / "ck", params, meta)
  with pytest.raises(InputError, match="holds a 'student' model, not the 'teacher'"):
    checkpoints.load_params(tmp_path / "ck", expected_model="teacher")


def test_best_step_is_chosen_by_validation_loss(tmp_path):
  model, params = _student()
  meta = checkpoints.make_meta("student", model)
  with checkpoints.manager(tmp_path / "best", max_to_keep=2) as mngr:
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0)]:
      scaled = jax.tree_util.tree_map(lambda p: p * step, params)
      mngr.save(step, args=checkpoints.save_args(scaled, meta), metrics={"val_loss": loss})
    mngr.wait_until_finished()
  assert checkpoints.resolve(tmp_path / "best")[1] == 2
  assert checkpoints.resolve(tmp_path)[1] == 2  # a stage folder holding best/
  assert checkpoints.resolve(tmp_path / "best" / "3")[1] == 3


def test_damaged_or_foreign_folders_get_one_sentence(tmp_path):
  with pytest.raises(InputError, match="does not exist"):
    checkpoints.load_params(tmp_path / "nothing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(InputError, match="holds no kdmri_jax checkpoint"):
    checkpoints.load_params(tmp_path / "empty")
  model, params = _student()
  checkpoints.save_params(tmp_path / "ck", params, checkpoints.make_meta("student", model))
  params_dir = tmp_path / "ck" / "0" / "params"
  for root, _, files in os.walk(params_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(InputError, match="unreadable parameters"):
    checkpoints.load_params(tmp_path / "ck")


def test_has_step_damage_and_move_aside(tmp_path):
  model, params = _student()
  checkpoints.save_params(tmp_path / "ck", params, checkpoints.make_meta("student", model))
  assert checkpoints.has_step(tmp_path / "ck") and not checkpoints.has_step(tmp_path / "none")
  assert checkpoints.damage(tmp_path / "ck") is None
  for root, _, files in os.walk(tmp_path / "ck" / "0" / "params"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  assert "unreadable parameters" in checkpoints.damage(tmp_path / "ck")
  first = checkpoints.move_aside(tmp_path / "ck")
  (tmp_path / "ck").mkdir()
  second = checkpoints.move_aside(tmp_path / "ck")  # the same second: a name of its own
  assert first != second and os.path.isdir(first) and os.path.isdir(second)
  assert all(os.path.basename(p).startswith("ck.damaged-") for p in (first, second))
  assert not os.path.exists(tmp_path / "ck")
  assert checkpoints.move_aside(tmp_path / "gone") == str(tmp_path / "gone")
