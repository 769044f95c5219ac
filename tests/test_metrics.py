"""Tests for kdmri_jax.metrics: every metric against a hand-computed or scikit-image value."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from skimage.filters import laplace
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kdmri_jax import metrics


def _pair(seed=0, shape=(3, 32, 40), noise=0.1):
  rng = np.random.default_rng(seed)
  gt = rng.random(shape).astype(np.float32)
  pred = (gt + noise * rng.standard_normal(shape)).astype(np.float32)
  return gt, pred


def _phantom(h=48, w=40):
  """A structured image: an ellipse on a smooth gradient with a sharp bar."""
  y, x = np.mgrid[:h, :w].astype(np.float64)
  img = 0.2 + 0.3 * x / w + 0.5 * (((y - h / 2) / (h / 3)) ** 2 + ((x - w / 2) / (w / 4)) ** 2 < 1)
  img[h // 4 : h // 4 + 3, 5 : w - 5] = 1.0
  return img


def test_mse_nmse_hand_computed():
  gt = np.array([[[1.0, 2.0], [3.0, 4.0]]])
  pred = np.array([[[1.0, 2.0], [3.0, 2.0]]])
  assert metrics.mse(gt, pred) == pytest.approx(4.0 / 4)
  assert metrics.nmse(gt, pred) == pytest.approx(4.0 / 30.0)
  # MSE is symmetric; NMSE normalises by the target, so it is not.
  assert metrics.mse(pred, gt) == metrics.mse(gt, pred)
  assert metrics.nmse(pred, gt) == pytest.approx(4.0 / 18.0)


def test_psnr_hand_computed_and_identical_is_inf():
  gt = np.full((2, 8, 8), 2.0)
  pred = gt + 0.5  # MSE = 0.25, R = gt.max() = 2
  assert metrics.psnr(gt, pred) == pytest.approx(10 * math.log10(4.0 / 0.25))
  assert metrics.psnr(gt, gt) == math.inf
  # With a fixed data range, PSNR is symmetric.
  a, b = _pair()
  assert metrics.psnr(a, b, data_range=1.0) == pytest.approx(metrics.psnr(b, a, data_range=1.0))
  # The default range is the target's max, as skimage's psnr with data_range=gt.max().
  assert metrics.psnr(a, b) == pytest.approx(
    peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=float(a.max()))
  )


def test_volume_ssim_is_multichannel_skimage_over_slices():
  gt, pred = _pair(shape=(4, 24, 32))
  gt[1] *= 3.0  # the data range is the whole volume's max, not each slice's
  expected = structural_similarity(
    gt.transpose(1, 2, 0).astype(np.float64),
    pred.transpose(1, 2, 0).astype(np.float64),
    channel_axis=-1,
    data_range=float(gt.max()),
  )
  assert metrics.ssim(gt, pred) == pytest.approx(expected, abs=1e-10)
  per_slice = [
    structural_similarity(g.astype(np.float64), p.astype(np.float64), data_range=float(gt.max()))
    for g, p in zip(gt, pred)
  ]
  assert metrics.ssim(gt, pred) == pytest.approx(np.mean(per_slice), abs=1e-10)
  assert metrics.ssim(gt, gt) == pytest.approx(1.0)


def test_laplacian_is_reference_laplace_with_zero_border():
  delta = np.zeros((7, 7))
  delta[3, 3] = 1.0
  lap = metrics.laplacian(delta)
  assert lap[3, 3] == 4.0 and lap[2, 3] == lap[4, 3] == lap[3, 2] == lap[3, 4] == -1.0
  assert np.count_nonzero(lap) == 5
  img = _phantom()
  expected = laplace(img)
  expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 0.0  # skimage <= 0.18
  np.testing.assert_allclose(metrics.laplacian(img), expected, atol=1e-12)


def test_hfn_matches_explicit_formula_and_clips_prediction():
  gt, pred = _pair(shape=(3, 24, 24), noise=0.2)
  pred[0, 5, 5] = 7.0  # clipped to 1 before the Laplacian
  expected = []
  for g, p in zip(gt.astype(np.float64), pred.astype(np.float64)):
    lg, lp = laplace(g), laplace(np.clip(p, 0, 1))
    for lap in (lg, lp):
      lap[0, :] = lap[-1, :] = lap[:, 0] = lap[:, -1] = 0.0
    expected.append(np.sum((lg - lp) ** 2) / np.sum(lg**2))
  assert metrics.hfn(gt, pred) == pytest.approx(np.mean(expected), rel=1e-10)
  assert metrics.hfn(gt, np.clip(pred, 0, 1)) == pytest.approx(metrics.hfn(gt, pred))
  assert metrics.hfn(gt, gt) == 0.0


def test_volume_metrics_and_slice_metrics_agree():
  gt, pred = _pair(shape=(5, 24, 28))
  vol = metrics.volume_metrics(gt, pred)
  assert tuple(vol) == metrics.METRIC_NAMES
  per = metrics.slice_metrics(gt, pred)
  assert all(v.shape == (5,) for v in per.values())
  for name in ("MSE", "SSIM", "HFN"):  # these average exactly over slices with R = volume max
    assert np.mean(per[name]) == pytest.approx(vol[name], rel=1e-10)
  assert per["PSNR"][2] == pytest.approx(metrics.psnr(gt[2], pred[2], data_range=float(gt.max())))
  assert per["NMSE"][1] == pytest.approx(metrics.nmse(gt[1], pred[1]))
  # A 2-D slice (a knee file) is a one-slice volume.
  assert metrics.volume_metrics(gt[0], pred[0])["SSIM"] == pytest.approx(
    metrics.ssim(gt[:1], pred[:1])
  )


def test_shape_mismatch_raises():
  with pytest.raises(ValueError):
    metrics.mse(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_summarize_sample_std_and_nonfinite():
  s = metrics.summarize([1.0, 2.0, 4.0, math.inf])
  assert s["mean"] == pytest.approx(7.0 / 3) and s["n"] == 3 and s["n_nonfinite"] == 1
  assert s["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
  one = metrics.summarize([3.0])
  assert one == {"mean": 3.0, "std": 0.0, "n": 1, "n_nonfinite": 0}
  assert math.isnan(metrics.summarize([math.nan])["mean"])
  assert metrics.mean_std_text([1.0, 3.0], digits=2) == f"2.00 ± {np.std([1, 3], ddof=1):.2f}"


# --------------------------------------------------------------------------------------------------
# JAX versions against scikit-image.


def _skimage_ssim(gt, pred, data_range=None):
  return np.array(
    [
      structural_similarity(
        g.astype(np.float64),
        p.astype(np.float64),
        data_range=float(g.max() if data_range is None else data_range),
      )
      for g, p in zip(gt, pred)
    ]
  )


def _structured_batch():
  img = _phantom()
  rng = np.random.default_rng(3)
  gt = np.stack([img, img[::-1], 0.5 * img]).astype(np.float32)
  blurred = 0.25 * (np.roll(gt, 1, 1) + np.roll(gt, -1, 1) + np.roll(gt, 1, 2) + np.roll(gt, -1, 2))
  pred = (blurred + 0.02 * rng.standard_normal(gt.shape)).astype(np.float32)
  return gt, pred


@pytest.mark.parametrize("kind", ["random", "structured", "large_values"])
def test_batch_ssim_and_psnr_match_skimage(kind):
  if kind == "structured":
    gt, pred = _structured_batch()
  else:
    gt, pred = _pair(seed=1, shape=(3, 32, 40))
    pred = np.clip(pred, 0, None)
    if kind == "large_values":  # unnormalised magnitudes: float32 precision must hold
      gt, pred = gt * 1000.0, pred * 1000.0
  ssim = np.asarray(jax.jit(metrics.batch_ssim)(gt, pred))
  np.testing.assert_allclose(ssim, _skimage_ssim(gt, pred), atol=1e-4)
  psnr = np.asarray(jax.jit(metrics.batch_psnr)(gt, pred))
  expected = [
    peak_signal_noise_ratio(g.astype(np.float64), p.astype(np.float64), data_range=float(g.max()))
    for g, p in zip(gt, pred)
  ]
  np.testing.assert_allclose(psnr, expected, atol=1e-4)
  nmse = np.asarray(metrics.batch_nmse(gt, pred))
  np.testing.assert_allclose(nmse, [metrics.nmse(g, p) for g, p in zip(gt, pred)], rtol=1e-4)


def test_batch_metrics_with_volume_range_give_volume_values():
  gt, pred = _pair(seed=2, shape=(4, 24, 24))
  r = float(gt.max())
  out = jax.jit(metrics.batch_metrics)(gt, pred, r)
  assert float(np.mean(out["SSIM"])) == pytest.approx(metrics.ssim(gt, pred), abs=1e-5)
  np.testing.assert_allclose(out["SSIM"], _skimage_ssim(gt, pred, data_range=r), atol=1e-4)
  np.testing.assert_allclose(out["MSE"], np.mean((gt - pred) ** 2, axis=(1, 2)), rtol=1e-5)
  # A per-slice range array works too.
  per_range = gt.max(axis=(1, 2))
  np.testing.assert_allclose(
    metrics.batch_psnr(gt, pred, per_range), metrics.batch_psnr(gt, pred), rtol=1e-6
  )


def test_batch_edge_cases():
  gt, pred = _pair(seed=4, shape=(2, 16, 16))
  assert np.all(np.asarray(metrics.batch_psnr(gt, gt)) == np.inf)
  np.testing.assert_allclose(metrics.batch_ssim(gt, gt), 1.0, atol=1e-6)
  # PSNR with a fixed range is symmetric; SSIM is symmetric with a fixed range too.
  np.testing.assert_allclose(
    metrics.batch_psnr(gt, pred, 1.0), metrics.batch_psnr(pred, gt, 1.0), rtol=1e-6
  )
  np.testing.assert_allclose(
    metrics.batch_ssim(gt, pred, 1.0), metrics.batch_ssim(pred, gt, 1.0), atol=1e-6
  )
  # A blank target slice uses R = 1 rather than producing NaN.
  blank = np.zeros((1, 16, 16), np.float32)
  assert np.isfinite(np.asarray(metrics.batch_ssim(blank, blank + 0.1))).all()
