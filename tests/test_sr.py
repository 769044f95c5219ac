"""Super-resolution degradation: central k-space window against an explicit DFT-matrix reference."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from configs import default
from kdmri_jax.data import sr
from kdmri_jax.errors import InputError


def _dft(n):
  k = np.arange(n)
  return np.exp(-2j * np.pi * np.outer(k, k) / n) / np.sqrt(n)


def _reference(target, keep):
  """|F_H⁻¹ (m_H ⊙ F_H X F_Wᵀ ⊙ m_W) F_W⁻ᵀ| with m = 1 on the signed frequencies
  [−⌊keep/2⌋, keep − ⌊keep/2⌋)."""
  h, w = target.shape[-2:]

  def window(n):
    signed = np.array([k if k < n - n // 2 else k - n for k in range(n)])  # 0, 1, .., −2, −1
    return ((signed >= -(keep // 2)) & (signed < keep - keep // 2)).astype(float)

  fh, fw = _dft(h), _dft(w)
  kspace = fh @ target @ fw.T
  kspace = kspace * window(h)[:, None] * window(w)[None, :]
  return np.abs(fh.conj().T @ kspace @ fw.conj())


@pytest.mark.parametrize(
  "shape,keep", [((16, 16), 4), ((2, 12, 10), 5), ((15, 15), 6), ((9, 14), 3)]
)
def test_low_resolution_matches_dft_reference(shape, keep):
  target = np.random.default_rng(0).random(shape).astype(np.float32)
  lr = sr.low_resolution(target, keep)
  assert lr.shape == target.shape and lr.dtype == np.float32
  expected = np.stack([_reference(t, keep) for t in target.reshape(-1, *shape[-2:])]).reshape(shape)
  np.testing.assert_allclose(lr, expected, atol=1e-5)


def test_paper_setting_256_keep_64():
  target = np.random.default_rng(1).random((256, 256)).astype(np.float32)
  lr = sr.low_resolution(target)  # keep = 64 by default
  # The authors' recipe: centred k-space, rows/cols 96..159 kept, inverse FFT without unshifting.
  kspace = np.fft.fftshift(np.fft.fft2(target, norm="ortho"))
  window = np.zeros((256, 256))
  window[96:160, 96:160] = 1
  np.testing.assert_allclose(lr, np.abs(np.fft.ifft2(window * kspace, norm="ortho")), atol=1e-5)
  # Undoing the shift before the inverse FFT changes only the phase; that image keeps 64 × 64
  # frequencies.
  lowpass = np.fft.ifft2(np.fft.ifftshift(window * kspace), norm="ortho")
  np.testing.assert_allclose(lr, np.abs(lowpass), atol=1e-5)
  assert np.count_nonzero(np.abs(np.fft.fft2(lowpass, norm="ortho")) > 1e-8) == 64 * 64


def test_full_window_and_constant_images_are_unchanged():
  target = np.random.default_rng(2).random((8, 8)).astype(np.float32)
  np.testing.assert_allclose(sr.low_resolution(target, 8), target, atol=1e-6)
  np.testing.assert_allclose(sr.low_resolution(np.full((8, 8), 0.5), 1), 0.5, atol=1e-6)
  assert not np.allclose(sr.low_resolution(target, 2), target, atol=1e-2)


class _Targets:
  shape = (12, 12)

  def __init__(self, with_target=True):
    rng = np.random.default_rng(3)
    self.items = [
      {
        "target": rng.random((12, 12)),
        "input": np.zeros((12, 12)),
        "kspace": np.zeros((12, 12), np.complex64),
      }
      for _ in range(3)
    ]
    if not with_target:
      for item in self.items:
        del item["target"]

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]

  def locate(self, i):
    return "vol", i


def test_super_resolution_source():
  config = ml_collections.ConfigDict({"sr": {"keep": 4}})
  source = sr.SuperResolutionSource(_Targets(), config)
  assert len(source) == 3 and source.keep == 4 and source.mask is None
  example = source[1]
  assert sorted(example) == ["input", "target"]
  assert example["input"].dtype == np.float32 and example["target"].dtype == np.float32
  np.testing.assert_allclose(
    example["input"], _reference(_Targets().items[1]["target"], 4), atol=1e-5
  )
  assert source.shape == (12, 12) and source.locate(2) == ("vol", 2)  # forwarded
  # configs/default.py's sr section holds the paper's window; the code reads it without a fallback.
  assert sr.keep_from_config(default.get_config()) == 64
  with pytest.raises(AttributeError):
    sr.keep_from_config(ml_collections.ConfigDict())


def test_super_resolution_source_errors():
  with pytest.raises(InputError, match="config.sr.keep=13 must be in 1..12"):
    sr.SuperResolutionSource(_Targets(), keep=13)
  with pytest.raises(InputError, match="fully-sampled targets"):
    sr.SuperResolutionSource(_Targets(with_target=False), keep=4)[0]
  with pytest.raises(InputError, match=r"\(H, W\) or \(B, H, W\)"):
    sr.low_resolution(np.zeros(5), 2)
