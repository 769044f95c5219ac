"""kdmri_jax.inference: the one inference path (on a mesh, by volume) gives the model's image."""

import jax
import numpy as np
import pytest

from kdmri_jax import export, inference, models, sharding

SHAPE = (12, 10)


def _model(name, **overrides):
  model = models.build_model(name, **overrides)
  return model, models.init_params(model, jax.random.PRNGKey(0), *SHAPE)


def _batch(model, slices, seed=0):
  image, *rest = export.example_inputs(model, slices, *SHAPE, seed=seed)
  batch = {"input": image, "target": image}
  if rest:
    batch.update(kspace=rest[0], mask=rest[1])
  return batch


def _expected(model, params, batch):
  """The Flax model's image, computed here without `inference`."""
  keys = ("input", "kspace", "mask") if models.is_reconstruction(model) else ("input",)
  out = model.apply({"params": params}, *[batch[k] for k in keys])[0]
  return np.abs(np.asarray(out)) if np.iscomplexobj(out) else np.asarray(out)


@pytest.mark.parametrize(
  "name, overrides",
  [("student", {"num_cascades": 2}), ("vdsr_student", {"num_layers": 3, "features": 8})],
)
def test_make_predict_and_predictor_give_the_models_image(name, overrides):
  model, params = _model(name, **overrides)
  batch = _batch(model, 5)
  expected = _expected(model, params, batch)
  mesh = sharding.make_mesh(jax.devices()[:1])
  predicted = inference.make_predict(model, mesh)(params, sharding.global_batch(batch, mesh))
  np.testing.assert_allclose(np.asarray(predicted), expected, atol=1e-5)
  # Batches of 2 over 5 slices: the last batch is padded, the padding dropped; one (H, W) mask.
  if "mask" in batch:
    batch["mask"] = batch["mask"][0]
    expected = _expected(model, params, batch)
  volume = inference.predictor(model, params, batch_size=2)(*inference.model_inputs(model, batch))
  assert volume.shape == (5,) + SHAPE and volume.dtype == np.float32
  np.testing.assert_allclose(volume, expected, atol=1e-5)


def test_a_complex_models_image_is_its_magnitude():
  model, params = _model("student", num_cascades=1, complex_images=True)
  batch = _batch(model, 3, seed=2)
  batch["input"] = np.fft.ifft2(batch["kspace"], norm="ortho").astype(np.complex64)
  batch["mask"] = batch["mask"][0]  # (H, W), as valid passes it
  expected = _expected(model, params, batch)
  volume = inference.predictor(model, params, batch_size=8)(
    batch["input"], batch["kspace"], batch["mask"]
  )
  np.testing.assert_allclose(volume, expected, atol=1e-5)
  assert np.all(volume >= 0)


def test_model_inputs_and_as_batch_are_inverse():
  model, _ = _model("student", num_cascades=1)
  batch = _batch(model, 2)
  inputs = inference.model_inputs(model, batch)
  assert len(inputs) == 3
  assert inference.as_batch(model, inputs).keys() == {"input", "kspace", "mask"}
  vdsr, _ = _model("vdsr_student", num_layers=3, features=8)
  assert inference.as_batch(vdsr, inference.model_inputs(vdsr, batch)).keys() == {"input"}
