"""Student-friendly teacher training (kdmri_jax.sft): the branches, the three-term loss, the
objective that keeps only the teacher, and the stage through the pipeline."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kdmri_jax import fft, models, outputs, sft, train
from kdmri_jax.errors import InputError
from tests.helpers import tiny_config

H = W = 12


def _batch(seed: int = 0, batch: int = 2) -> dict[str, jnp.ndarray]:
  rng = np.random.default_rng(seed)
  target = rng.random((batch, H, W)).astype(np.float32)
  mask = (rng.random((H, W)) < 0.4).astype(np.float32)
  kspace = fft.fft2(jnp.asarray(target)) * mask
  return {
    "input": fft.ifft2(kspace).real.astype(jnp.float32),
    "kspace": kspace,
    "mask": jnp.asarray(mask),
    "target": jnp.asarray(target),
  }


def _models(cascades: int = 3):
  teacher = models.build_model("teacher", num_cascades=cascades, features=4)
  student = models.build_model("student", num_cascades=cascades, features=4)
  return teacher, student


def _reference(params, image, batch, first: int, end: int) -> jnp.ndarray:
  """Cascades first … end−1 written out here: 3×3 'SAME' convs with ReLU after all but the last,
  then hard data consistency (the real part of the inverse FFT)."""
  x = image
  for c in range(first, end):
    convs = params[f"cascade_{c}"]
    h = x[..., None]
    names = sorted(convs, key=lambda name: int(name.split("_")[-1]))
    for i, name in enumerate(names):
      kernel, bias = convs[name]["kernel"], convs[name]["bias"]
      dims = ("NHWC", "HWIO", "NHWC")
      h = lax.conv_general_dilated(h, kernel, (1, 1), "SAME", dimension_numbers=dims) + bias
      h = jax.nn.relu(h) if i < len(names) - 1 else h
    x = fft.ifft2(fft.consistent_kspace(fft.fft2(h[..., 0]), batch["kspace"], batch["mask"])).real
  return x


def _params(teacher, student):
  t = models.init_params(teacher, jax.random.PRNGKey(1), H, W)
  s = sft.init_branches(student, H, W)(jax.random.PRNGKey(2))
  return t, s


def test_teacher_outputs_are_its_cascades_and_end_in_its_reconstruction():
  teacher, student = _models()
  t_params, _ = _params(teacher, student)
  batch = _batch()
  outs = sft.teacher_outputs(teacher, t_params, batch)
  assert len(outs) == 3
  whole = models.apply(teacher, t_params, batch)[0]
  np.testing.assert_allclose(outs[-1], whole, atol=1e-5)
  image = batch["input"]
  for c, out in enumerate(outs):
    image = _reference(t_params, image, batch, c, c + 1)
    np.testing.assert_allclose(out, image, atol=1e-4)


def test_branch_k_runs_the_students_later_cascades_on_the_teachers_kth_output():
  teacher, student = _models()
  t_params, s_params = _params(teacher, student)
  assert sorted(k for k in s_params if k.startswith("cascade_")) == ["cascade_1", "cascade_2"]
  batch = _batch()
  handed = sft.teacher_outputs(teacher, t_params, batch)
  branches = sft.branch_outputs(student, s_params, handed, batch)
  assert len(branches) == 2
  for k, branch in enumerate(branches, start=1):
    expected = _reference(s_params, _reference(t_params, batch["input"], batch, 0, k), batch, k, 3)
    np.testing.assert_allclose(branch, expected, atol=1e-4)


def test_loss_is_the_three_terms():
  teacher, student = _models()
  t_params, s_params = _params(teacher, student)
  batch = _batch()
  l1 = lambda a, b: jnp.mean(jnp.abs(a - b))  # noqa: E731
  x_t = _reference(t_params, batch["input"], batch, 0, 3)
  branches = [
    _reference(s_params, _reference(t_params, batch["input"], batch, 0, k), batch, k, 3)
    for k in (1, 2)
  ]
  teacher_term = l1(x_t, batch["target"])
  branch_term = np.mean([l1(b, batch["target"]) for b in branches])
  agreement = np.mean([l1(b, x_t) for b in branches])
  value, terms = sft.loss(teacher, student, l1, 0.5, 2.0, "mean")(t_params, s_params, batch)
  np.testing.assert_allclose(terms["teacher"], teacher_term, rtol=1e-4)
  np.testing.assert_allclose(terms["branches"], branch_term, rtol=1e-4)
  np.testing.assert_allclose(terms["agreement"], agreement, rtol=1e-4)
  np.testing.assert_allclose(value, teacher_term + 0.5 * branch_term + 2.0 * agreement, rtol=1e-4)
  per_numel = sft.loss(teacher, student, l1, 1.0, 1.0, "per_numel")(t_params, s_params, batch)[1]
  np.testing.assert_allclose(per_numel["agreement"], agreement / x_t.size, rtol=1e-4)


def test_the_agreement_reaches_the_teacher():
  teacher, student = _models()
  t_params, s_params = _params(teacher, student)
  batch = _batch()
  agreement_only = sft.loss(teacher, student, lambda a, b: 0.0 * jnp.sum(a), 0.0, 1.0, "mean")
  grads = jax.grad(lambda t: agreement_only(t, s_params, batch)[0])(t_params)
  assert float(jnp.abs(grads["cascade_0"]["conv_0"]["kernel"]).sum()) > 0


def test_check_models_refuses_vdsr_and_different_cascade_counts():
  teacher, student = _models(3)
  with pytest.raises(InputError, match="same number"):
    sft.check_models(teacher, _models(2)[1])
  with pytest.raises(InputError, match="DC-CNN"):
    sft.check_models(models.build_model("vdsr_teacher"), student)


def _sft_config(**fields):
  config = tiny_config(**{"models.num_cascades": 2, "sft.enabled": True, **fields})
  return config


def test_the_objective_trains_teacher_and_branches_and_keeps_the_teacher():
  config = _sft_config()
  teacher, student = _models(2)
  objective = train.make_objective("teacher", config, teacher, student=student)
  params = objective.trainable(
    models.init_params(teacher, jax.random.PRNGKey(0), H, W), jax.random.PRNGKey(3)
  )
  assert set(params) == {"teacher", "branches"}
  assert objective.model_params(params) is params["teacher"]
  train.check_objective(objective)
  loss, aux = objective.loss(params, None, _batch())
  assert set(aux) == {"loss", "teacher", "branches", "agreement"}
  assert train.describe_objective("teacher", config)["sft"]["agreement"] == "mean"
  with pytest.raises(InputError, match="student model"):
    train.make_objective("teacher", config, teacher)


def test_the_teacher_record_names_the_sft_fields_only_when_enabled():
  on = outputs.record_fields(_sft_config(), "teacher")
  off = outputs.record_fields(tiny_config(), "teacher")
  assert on["sft.enabled"] is True and on["sft.agreement"] == "mean"
  assert not any(name.startswith("sft.") for name in off)


def test_an_sft_teacher_stage_leaves_a_plain_teacher_that_the_feature_stage_reads(tmp_path):
  from kdmri_jax import checkpoints, pipeline

  config = _sft_config(
    **{
      "data.image_size": 32,
      "data.max_slices": 4,
      "data.cache_dir": str(tmp_path / "cache"),
      "train.num_epochs": 1,
      "stages": "teacher,feature",
    }
  )
  assert pipeline.run(config, str(tmp_path / "run")) == 0
  _, params, meta = checkpoints.load_params(str(tmp_path / "run" / "teacher" / "best"))
  assert "teacher" not in params and "cascade_0" in params
  assert meta["objective"]["sft"]["branch_weight"] == 1.0
  assert os.path.exists(tmp_path / "run" / "feature" / "done")
