"""Parameter counts, shapes and feature-map indexing of the paper's models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdmri_jax import fft, masks, models
from kdmri_jax.errors import InputError
from kdmri_jax.models import structure

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


def _written_out_dccnn(model, params, image, kspace, mask):
  """DCCNN's forward pass as the Flax modules computed it before `models.structure` (issue 14),
  written out over the parameter tree: the oracle for every variant."""

  def conv(p, x):  # nn.Conv: input, kernel and bias in the model's dtype
    x, kernel, bias = (a.astype(model.dtype) for a in (x, p["kernel"], p["bias"]))
    return (
      jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      + bias
    )

  complex_images = model.complex_images
  x = (fft.to_channels(image) if complex_images else image[..., None]).astype(jnp.float32)
  features = []
  for c in range(model.num_cascades):
    p, h, hidden = params[f"cascade_{c}"], x, []
    for j in range(model.num_convs - 1):
      h = jax.nn.relu(conv(p[f"conv_{j}"], h))
      hidden.append(h)
    out = conv(p[f"conv_{model.num_convs - 1}"], h).astype(jnp.float32)
    out = x + out if model.residual else out
    lam = params[f"dc_{c}"]["noise_lambda"] if model.learn_lambda else model.noise_lambda
    if complex_images:
      dc = fft.data_consistency(fft.to_complex(out), kspace, mask, lam, keep_complex=True)
      x = fft.to_channels(dc)
    else:
      x = fft.data_consistency(out[..., 0], kspace, mask, lam)[..., None]
    features.append(tuple(hidden))
  return (fft.to_complex(x) if complex_images else x[..., 0]), tuple(features)


VARIANTS = [
  {},
  {"residual": True},
  {"noise_lambda": 0.1},
  {"learn_lambda": True, "noise_lambda": 2.0},
  {"complex_images": True},
  {"complex_images": True, "residual": True, "learn_lambda": True},
  {"dtype": jnp.bfloat16},
  {"dtype": jnp.bfloat16, "residual": True},
]


def _student_case(cascades: int, overrides: dict, seed: int):
  """(student model, its params, (image, k-space, mask)) on a 2×16×16 batch; a complex model gets
  the complex zero-filled image."""
  model = models.build_model("student", num_cascades=cascades, **overrides)
  params = models.init_params(model, jax.random.PRNGKey(seed), 16, 16)
  batch = _batch((2, 16, 16), seed=seed + 1)
  image = batch["input"]
  if model.complex_images:
    image = np.fft.ifft2(batch["kspace"], norm="ortho").astype(np.complex64)
  return model, params, (image, batch["kspace"], batch["mask"])


@pytest.mark.parametrize("overrides", VARIANTS)
def test_every_variant_equals_the_written_out_forward_pass(overrides):
  model, params, inputs = _student_case(2, overrides, seed=2)
  out, features = model.apply({"params": params}, *inputs)
  want_out, want_features = _written_out_dccnn(model, params, *inputs)
  assert out.dtype == want_out.dtype and np.std(np.abs(want_out)) > 1e-3
  np.testing.assert_allclose(out, want_out, rtol=1e-6, atol=1e-6)
  for got, want in zip(jax.tree.leaves(features), jax.tree.leaves(want_features), strict=True):
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=1e-6, atol=1e-6)


def _cascade_params(params, cascades):
  """The entries of `cascades` (cascade_{c}, dc_{c}) of a DC-CNN parameter tree."""
  names = {f"{prefix}_{c}" for c in cascades for prefix in ("cascade", "dc")}
  return {name: value for name, value in params.items() if name in names}


@pytest.mark.parametrize(
  "overrides", [{}, {"complex_images": True, "residual": True, "learn_lambda": True}]
)
def test_first_cascade_runs_the_later_cascades_of_the_whole_model(overrides):
  model, params, (image, kspace, mask) = _student_case(3, overrides, seed=4)
  batch = {"kspace": kspace, "mask": mask}
  whole, whole_features = model.apply({"params": params}, image, kspace, mask)
  # Parameters of first_cascade=1: the later cascades only, under their absolute names, with the
  # values the whole model's init gives them.
  later = model.clone(first_cascade=1)
  later_params = models.init_params(later, jax.random.PRNGKey(4), 16, 16)
  assert set(later_params) == set(_cascade_params(params, (1, 2)))
  jax.tree.map(np.testing.assert_array_equal, later_params, _cascade_params(params, (1, 2)))
  # Cascades [0, 1) then [1, 3) is the whole model.
  first = model.clone(num_cascades=1)
  handed_over, _ = first.apply(
    {"params": _cascade_params(params, (0,))}, image, batch["kspace"], batch["mask"]
  )
  out, features = later.apply({"params": later_params}, handed_over, batch["kspace"], batch["mask"])
  np.testing.assert_allclose(out, whole, rtol=1e-6, atol=1e-6)
  assert features[0] == () and len(features) == 3
  jax.tree.map(np.testing.assert_array_equal, features[1:], whole_features[1:])
  # One cascade at a time, with the whole tree (extra entries are not read).
  for c in range(3):
    single = model.clone(first_cascade=c, num_cascades=c + 1)
    image, _ = single.apply({"params": params}, image, batch["kspace"], batch["mask"])
  np.testing.assert_allclose(image, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("first", [-1, 3])
def test_first_cascade_outside_the_cascades_is_one_sentence(first):
  model = models.build_model("student", num_cascades=3, first_cascade=first)
  with pytest.raises(InputError, match=f"first_cascade={first} must be in 0 … num_cascades−1 = 2"):
    models.init_params(model, jax.random.PRNGKey(0), 8, 8)


def test_the_forward_pass_is_one_function_over_its_ops():
  """`structure.forward` on a recording backend: the layers, ReLUs and DC steps in order."""

  class Record:
    def channels(self, x):
      return x + ["channels"]

    def image(self, x):
      return x + ["image"]

    def conv(self, conv, x):
      return x + ["/".join(conv.path)]

    def relu(self, x):
      return x + ["relu"]

    def add(self, x, y):
      return y + ["add"]

    def data_consistency(self, kspace, mask):
      return lambda x, cascade: x + [f"dc_{cascade}"]

  model = models.build_model("student", num_cascades=3, first_cascade=2, residual=True)
  out, features = structure.forward(Record(), model, [])
  stack = ["cascade_2/conv_0", "relu", "cascade_2/conv_1", "relu", "cascade_2/conv_2"]
  assert out == ["channels"] + stack + ["add", "image", "dc_2"]
  assert features[:2] == ((), ()) and len(features[2]) == 2
  vdsr, _ = structure.forward(Record(), models.build_model("vdsr_student", num_layers=2), [])
  assert vdsr == ["channels", "conv_0", "relu", "conv_1", "add", "image"]


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
