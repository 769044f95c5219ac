"""The PyTorch reference models: the authors' key names, parameter counts, DC arithmetic, weight
transfer."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdmri_jax import (  # noqa: E402
  convert,
  masks,
  torch_reference as ref,  # noqa: E402
)

COUNTS = {"teacher": 141_765, "student": 49_285, "vdsr_teacher": 333_569, "vdsr_student": 185_857}


def _authors_keys(model_name):
  """The state_dict keys of the authors' DCTeacherNet / DCStudentNet / TeacherVDSR / StudentVDSR."""
  convs = {"teacher": 5, "student": 3, "vdsr_teacher": 11, "vdsr_student": 7}[model_name]
  prefixes = [f"cascade{c}." for c in range(1, 6)] if model_name in ("teacher", "student") else [""]
  return [
    f"{p}conv{j}.{leaf}"
    for p in prefixes
    for j in range(1, convs + 1)
    for leaf in ("weight", "bias")
  ]


@pytest.mark.parametrize("model_name", sorted(COUNTS))
def test_state_dict_keys_and_counts_match_the_authors(model_name):
  state = ref.build(model_name).state_dict()
  assert list(state) == _authors_keys(model_name)
  assert sum(v.numel() for v in state.values()) == COUNTS[model_name]
  assert list(convert.expected_shapes(model_name)) == list(state)


def test_data_consistency_matches_numpy():
  rng = np.random.default_rng(0)
  image = rng.standard_normal((2, 1, 16, 12)).astype(np.float32)
  mask = masks.cartesian_mask((16, 12), 4, seed=0)
  measured = (np.fft.fft2(rng.standard_normal((2, 16, 12)), norm="ortho") * mask).astype(
    np.complex64
  )
  out = ref.data_consistency(
    torch.from_numpy(image), torch.from_numpy(measured), torch.from_numpy(mask)
  )
  merged = mask * measured + (1 - mask) * np.fft.fft2(image[:, 0], norm="ortho")
  expected = np.fft.ifft2(merged, norm="ortho").real
  assert out.shape == (2, 1, 16, 12) and out.dtype == torch.float32
  np.testing.assert_allclose(out[:, 0].numpy(), expected, atol=1e-5)
  assert np.abs(expected - image[:, 0]).max() > 0.1  # DC did change the image


def test_dccnn_returns_image_and_features_under_inference_mode():
  model = ref.build("student")
  image = torch.rand(2, 1, 20, 20)
  kspace = torch.fft.fft2(image[:, 0], norm="ortho")
  mask = torch.from_numpy(masks.cartesian_mask((20, 20), 4, seed=1))
  with torch.inference_mode():
    out, features = model(image, kspace, mask)
  assert out.shape == (2, 1, 20, 20)
  assert len(features) == 5 and [f.shape for f in features[0]] == [(2, 32, 20, 20)] * 2
  assert all(float(f.min()) >= 0 for cascade in features for f in cascade)  # post-ReLU


@pytest.mark.parametrize("model_name", ["student", "vdsr_student"])
def test_jax_to_torch_is_the_inverse_of_the_converter(model_name):
  state = ref.build(model_name).state_dict()
  params = convert.torch_state_dict_to_params(model_name, state)
  back = ref.jax_to_torch_state_dict(model_name, params)
  assert list(back) == list(state)
  for key in state:
    assert torch.equal(back[key], state[key]), key
  ref.build(model_name).load_state_dict(back)  # strict: same keys and shapes


def test_unknown_model_is_refused():
  with pytest.raises(ValueError, match="unknown model"):
    ref.build("unet")


def test_data_consistency_of_a_bfloat16_image_runs_in_float32():
  """Under bf16 autocast the CNN hands DC a bfloat16 image; FFTs have no bf16 kernels, so DC
  upcasts."""
  rng = np.random.default_rng(0)
  image = torch.from_numpy(rng.random((2, 1, 8, 8), dtype=np.float32)).to(torch.bfloat16)
  mask = torch.from_numpy((rng.random((8, 8)) < 0.5).astype(np.float32))
  kspace = (
    torch.fft.fft2(torch.from_numpy(rng.random((2, 8, 8), dtype=np.float32)), norm="ortho") * mask
  )
  out = ref.data_consistency(image, kspace, mask)
  assert out.dtype == torch.float32
  assert torch.equal(out, ref.data_consistency(image.float(), kspace, mask))
