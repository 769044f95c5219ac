"""Parameter counts, shapes and feature-map indexing of the paper's models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdmri_jax import fft, masks, models
from kdmri_jax.errors import InputError

PAPER_COUNTS = {
  "teacher": 141_765,
  "student": 49_285,
  "vdsr_teacher": 333_569,
  "vdsr_student": 185_857,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts(name):
  params = models.init_params(models.build_model(name), jax.random.PRNGKey(0), 8, 8)
  assert models.count_params(params) == PAPER_COUNTS[name]


def _batch(shape=(2, 24, 24), seed=0):
  rng = np.random.default_rng(seed)
  target = rng.random(shape, dtype=np.float32)
  mask = masks.cartesian_mask(shape[-2:], 4, seed=seed)
  kspace = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)
  zf = np.fft.ifft2(kspace, norm="ortho").real.astype(np.float32)
  return {"input": zf, "target": target, "kspace": kspace, "mask": mask}


@pytest.mark.parametrize("name,convs", [("teacher", 5), ("student", 3)])
def test_dccnn_outputs_image_and_every_feature_map(name, convs):
  model = models.build_model(name)
  params = models.init_params(model, jax.random.PRNGKey(0), 24, 24)
  batch = _batch()
  image, features = jax.jit(lambda p, b: models.apply(model, p, b))(params, batch)
  assert image.shape == (2, 24, 24) and image.dtype == jnp.float32
  assert len(features) == 5 and all(len(c) == convs - 1 for c in features)
  assert features[4][convs - 2].shape == (2, 24, 24, 32)
  assert float(jnp.min(features[0][0])) >= 0.0  # post-ReLU


def test_features_equal_a_manual_cascade_recomputation():
  """features[c][l] is conv l of cascade c applied to the previous cascade's DC output."""
  model = models.build_model("student", num_cascades=2)
  params = models.init_params(model, jax.random.PRNGKey(1), 16, 16)
  batch = _batch((1, 16, 16))
  image, features = models.apply(model, params, batch)

  def conv(p, x):
    return (
      jax.lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      + p["bias"]
    )

  x = batch["input"][..., None]
  for c in range(2):
    p = params[f"cascade_{c}"]
    h1 = jax.nn.relu(conv(p["conv_0"], x))
    h2 = jax.nn.relu(conv(p["conv_1"], h1))
    np.testing.assert_allclose(features[c][0], h1, atol=1e-5)
    np.testing.assert_allclose(features[c][1], h2, atol=1e-5)
    x = fft.data_consistency(conv(p["conv_2"], h2)[..., 0], batch["kspace"], batch["mask"])[
      ..., None
    ]
  np.testing.assert_allclose(image, x[..., 0], atol=1e-5)


def test_variants_noisy_learned_lambda_residual_complex():
  batch = _batch((1, 16, 16))
  learned = models.build_model("student", learn_lambda=True, noise_lambda=2.0)
  params = models.init_params(learned, jax.random.PRNGKey(0), 16, 16)
  assert float(params["dc_0"]["noise_lambda"]) == 2.0
  grads = jax.grad(lambda p: jnp.mean(models.apply(learned, p, batch)[0] ** 2))(params)
  assert np.isfinite(float(grads["dc_0"]["noise_lambda"]))
  residual = models.build_model("student", residual=True)
  assert models.count_params(models.init_params(residual, jax.random.PRNGKey(0), 8, 8)) == 49_285
  complex_model = models.build_model("student", complex_images=True)
  cparams = models.init_params(complex_model, jax.random.PRNGKey(0), 16, 16)
  out, _ = complex_model.apply(
    {"params": cparams}, batch["input"].astype(np.complex64), batch["kspace"], batch["mask"]
  )
  assert out.shape == (1, 16, 16) and jnp.iscomplexobj(out)


def test_bf16_compute_stays_close_to_float32():
  batch = _batch((1, 16, 16))
  params = models.init_params(models.build_model("student"), jax.random.PRNGKey(0), 16, 16)
  full, _ = models.apply(models.build_model("student"), params, batch)
  half, _ = models.apply(models.build_model("student", dtype=jnp.bfloat16), params, batch)
  assert half.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(full - half))) < 0.05


def test_vdsr_global_residual_and_features():
  model = models.build_model("vdsr_student")
  params = models.init_params(model, jax.random.PRNGKey(0), 16, 16)
  x = np.random.default_rng(0).random((2, 16, 16), dtype=np.float32)
  out, features = models.apply(model, params, {"input": x})
  assert out.shape == x.shape and len(features) == 6 and features[3].shape == (2, 16, 16, 64)
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, params)
  np.testing.assert_allclose(models.apply(model, zeroed, {"input": x})[0], x)  # x + net(x), net = 0


def test_unknown_model_is_one_sentence():
  with pytest.raises(InputError, match="unknown model 'teachr'"):
    models.build_model("teachr")
