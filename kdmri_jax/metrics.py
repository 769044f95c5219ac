"""Image-quality metrics of KD-MRI: PSNR, SSIM, NMSE, MSE and HFN, in NumPy (reference) and JAX (on
device).

**NumPy, per volume** (`mse`, `nmse`, `psnr`, `ssim`, `hfn`, `volume_metrics`): the definitions of
the authors' `evaluate.py`, for a volume given as an (S, H, W) array, slices first (the reference
reads H×W×S and keeps slices last; only the axis order differs). Everything is computed in float64,
as the scikit-image of the reference's time did (today's scikit-image computes SSIM of float32
inputs in float32).

- MSE  = mean (gt − pred)²
- NMSE = ‖gt − pred‖² / ‖gt‖²
- PSNR = 10·log10(R² / MSE) with R = gt.max() of the whole volume. Identical volumes give MSE = 0
  and PSNR = +inf, as in the reference; nothing is capped. `summarize` leaves non-finite values out
  of the mean and std and counts them in `n_nonfinite`, so one perfect volume cannot turn a table
  into inf/nan.
- SSIM = mean over slices of the SSIM of each H×W slice (the reference's `multichannel=True` on
  H×W×S treats slices as channels), with R = gt.max() of the whole volume, scikit-image's defaults:
  7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance (N/(N−1)), mean over the pixels whose
  window lies inside the image.
- HFN (high-frequency error norm) = mean over slices of ‖L(gt) − L(pred)‖² / ‖L(gt)‖², where the
  prediction is first clipped to [0, 1] (the target is not) and L is the reference's
  `skimage.filters.laplace`: the 3×3 discrete Laplacian [[0,−1,0],[−1,4,−1],[0,−1,0]] with reflected
  borders and — in the scikit-image ≤ 0.18 the reference ran on — the one-pixel image border of the
  result set to 0. It is a plain Laplacian, not a Laplacian of Gaussian (no smoothing, no sigma).

**JAX, per slice of a batch** (`batch_mse`, `batch_nmse`, `batch_psnr`, `batch_ssim`,
`batch_metrics`): jit-able functions of (B, H, W) arrays returning (B,) values, for validation
during training. Their data range defaults to each target slice's own maximum (a batch knows no
volumes); pass the volume maximum as `data_range` to get the reference's per-volume values (the mean
of `batch_ssim` over a volume's slices with R = volume max is the volume SSIM). A blank target slice
(max ≤ 1e-18, where R² would underflow float32) uses R = 1 instead of producing NaN.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

# The metric names and the order the reference's report.txt prints them in (sorted).
METRIC_NAMES = ("HFN", "MSE", "NMSE", "PSNR", "SSIM")

SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03

_LAPLACE_KERNEL = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def _volumes(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  gt = np.asarray(gt, dtype=np.float64)
  pred = np.asarray(pred, dtype=np.float64)
  if gt.shape != pred.shape:
    raise ValueError(f"target shape {gt.shape} and prediction shape {pred.shape} differ")
  return gt, pred


def _as_slices(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  gt, pred = _volumes(gt, pred)
  if gt.ndim == 2:  # one slice (the knee files hold single slices)
    gt, pred = gt[None], pred[None]
  if gt.ndim != 3:
    raise ValueError(f"expected an (S, H, W) volume or an (H, W) slice, got shape {gt.shape}")
  return gt, pred


# --------------------------------------------------------------------------------------------------
# NumPy reference metrics, per volume.


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
  """MSE = mean (gt − pred)² over the whole volume."""
  gt, pred = _volumes(gt, pred)
  return float(np.mean((gt - pred) ** 2))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
  """NMSE = ‖gt − pred‖² / ‖gt‖² over the whole volume (not symmetric in its arguments)."""
  gt, pred = _volumes(gt, pred)
  return float(np.sum((gt - pred) ** 2) / np.sum(gt**2))


def psnr(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> float:
  """PSNR = 10·log10(R² / MSE), R = gt.max() of the volume unless given; +inf for identical
  inputs."""
  gt, pred = _volumes(gt, pred)
  data_range = float(gt.max()) if data_range is None else float(data_range)
  err = float(np.mean((gt - pred) ** 2))
  if err == 0.0:
    return math.inf
  return float(10.0 * np.log10(data_range**2 / err))


def ssim(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> float:
  """Volume SSIM: scikit-image's SSIM with the slices as channels, R = gt.max() of the volume.

  This is the reference's `compare_ssim(gt, pred, multichannel=True, data_range=gt.max())` on H×W×S
  arrays: the mean over slices of the 2-D SSIM (7×7 uniform window, K1 = 0.01, K2 = 0.03, sample
  covariance), computed in float64.
  """
  gt, pred = _as_slices(gt, pred)
  data_range = float(gt.max()) if data_range is None else float(data_range)
  return float(structural_similarity(gt, pred, channel_axis=0, data_range=data_range))


def laplacian(image: np.ndarray) -> np.ndarray:
  """The reference's `skimage.filters.laplace` of one (H, W) slice, float64.

  Convolution with [[0,−1,0],[−1,4,−1],[0,−1,0]] (reflected borders), then the one-pixel border set
  to 0 as scikit-image ≤ 0.18 did when no mask is given (newer versions keep the border values).
  """
  result = ndimage.convolve(np.asarray(image, dtype=np.float64), _LAPLACE_KERNEL, mode="reflect")
  result[0, :] = 0.0
  result[-1, :] = 0.0
  result[:, 0] = 0.0
  result[:, -1] = 0.0
  return result


def slice_hfn(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """HFN of every slice: ‖L(gt) − L(clip(pred, 0, 1))‖² / ‖L(gt)‖², L = `laplacian`; shape (S,)."""
  gt, pred = _as_slices(gt, pred)
  pred = np.clip(pred, 0.0, 1.0)  # the reference brings only the prediction into [0, 1]
  values = []
  for gt_slice, pred_slice in zip(gt, pred):
    gt_lap = laplacian(gt_slice)
    values.append(np.sum((gt_lap - laplacian(pred_slice)) ** 2) / np.sum(gt_lap**2))
  return np.asarray(values, dtype=np.float64)


def hfn(gt: np.ndarray, pred: np.ndarray) -> float:
  """HFN = mean over slices of ‖L(gt) − L(clip(pred, 0, 1))‖² / ‖L(gt)‖² (see `laplacian`)."""
  return float(np.mean(slice_hfn(gt, pred)))


METRICS = {"MSE": mse, "NMSE": nmse, "PSNR": psnr, "SSIM": ssim, "HFN": hfn}


def volume_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
  """All five reference metrics of one (S, H, W) volume (or one (H, W) slice): {name: value}."""
  gt, pred = _as_slices(gt, pred)
  return {name: METRICS[name](gt, pred) for name in METRIC_NAMES}


def slice_metrics(
  gt: np.ndarray, pred: np.ndarray, data_range: float | None = None
) -> dict[str, np.ndarray]:
  """The five metrics of every slice of an (S, H, W) volume: {name: (S,) array}.

  R defaults to the *volume's* gt.max(), so the slice values aggregate to the volume values: the
  mean over slices of MSE, SSIM and HFN equals the volume MSE, SSIM and HFN. NMSE and PSNR are per
  slice (‖gt_s‖² = 0 gives a non-finite NMSE; identical slices give PSNR = +inf).
  """
  gt, pred = _as_slices(gt, pred)
  data_range = float(gt.max()) if data_range is None else float(data_range)
  axes = (1, 2)
  err = np.mean((gt - pred) ** 2, axis=axes)
  with np.errstate(divide="ignore", invalid="ignore"):
    nmse_s = np.sum((gt - pred) ** 2, axis=axes) / np.sum(gt**2, axis=axes)
    psnr_s = 10.0 * np.log10(data_range**2 / err)
    hfn_s = slice_hfn(gt, pred)
  ssim_s = np.array([structural_similarity(g, p, data_range=data_range) for g, p in zip(gt, pred)])
  return {"HFN": hfn_s, "MSE": err, "NMSE": nmse_s, "PSNR": psnr_s, "SSIM": ssim_s}


# --------------------------------------------------------------------------------------------------
# Aggregation.


def summarize(values: Iterable[float], ddof: int = 1) -> dict[str, float]:
  """Mean and standard deviation of the finite values: {mean, std, n, n_nonfinite}.

  `std` uses `ddof=1` (the sample standard deviation, as the reference's `runstats.Statistics`);
  with fewer than two finite values it is 0.0. Non-finite values (PSNR = +inf of a perfect
  reconstruction, NaN of an empty slice) are left out of both and counted in `n_nonfinite`; with no
  finite value at all the mean is NaN.
  """
  values = np.asarray(
    list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64
  ).ravel()
  finite = values[np.isfinite(values)]
  n = int(finite.size)
  mean = float(finite.mean()) if n else math.nan
  std = float(finite.std(ddof=ddof)) if n > ddof else 0.0
  return {"mean": mean, "std": std, "n": n, "n_nonfinite": int(values.size - n)}


def summarize_all(
  per_item: Mapping[str, Iterable[float]], ddof: int = 1
) -> dict[str, dict[str, float]]:
  """`summarize` of every metric of {name: values}."""
  return {name: summarize(values, ddof=ddof) for name, values in per_item.items()}


def mean_std_text(values: Iterable[float], digits: int = 4, scale: float = 1.0) -> str:
  """'mean ± scale·std' with `digits` decimals, e.g. '39.8012 ± 1.2345'; notes excluded values."""
  s = summarize(values)
  text = f"{s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
  if s["n_nonfinite"]:
    text += f" ({s['n_nonfinite']} non-finite left out)"
  return text


# --------------------------------------------------------------------------------------------------
# JAX metrics, per slice of a (B, H, W) batch; jit-able.


_BLANK = 1e-18


def _data_range(target: jnp.ndarray, data_range) -> jnp.ndarray:
  if data_range is None:
    data_range = jnp.max(target, axis=(1, 2))
  data_range = jnp.broadcast_to(jnp.asarray(data_range, target.dtype), target.shape[:1])
  # A blank slice (max ≤ 1e-18, where R² and the SSIM constants underflow float32 to 0/0): R = 1.
  return jnp.where(data_range > _BLANK, data_range, jnp.ones_like(data_range))


def batch_mse(target: jnp.ndarray, prediction: jnp.ndarray) -> jnp.ndarray:
  """MSE of each slice: mean over (H, W) of (target − prediction)²; (B,)."""
  return jnp.mean(jnp.square(target - prediction), axis=(1, 2))


def batch_nmse(target: jnp.ndarray, prediction: jnp.ndarray) -> jnp.ndarray:
  """NMSE of each slice: ‖target − prediction‖² / ‖target‖²; (B,)."""
  return jnp.sum(jnp.square(target - prediction), axis=(1, 2)) / jnp.sum(
    jnp.square(target), axis=(1, 2)
  )


def batch_psnr(target: jnp.ndarray, prediction: jnp.ndarray, data_range=None) -> jnp.ndarray:
  """PSNR of each slice: 10·log10(R² / MSE), R = each target slice's max by default; (B,).

  `data_range` may be a scalar or a (B,) array (e.g. each slice's volume max). Identical slices give
  +inf, as the NumPy `psnr`.
  """
  data_range = _data_range(target, data_range)
  error = batch_mse(target, prediction)
  # MSE = 0 is +inf by definition, also when R² underflows float32 (a near-blank slice: 0/0 would be
  # NaN).
  return jnp.where(error == 0, jnp.inf, 10.0 * jnp.log10(jnp.square(data_range) / error))


def _box_mean(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """Mean over every size×size window that lies inside the image ('valid'); (B, H−size+1,
  W−size+1)."""
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, size, size), (1, 1, 1), "VALID")
  return total / (size * size)


def batch_ssim(
  target: jnp.ndarray,
  prediction: jnp.ndarray,
  data_range=None,
  win_size: int = SSIM_WIN_SIZE,
  k1: float = SSIM_K1,
  k2: float = SSIM_K2,
) -> jnp.ndarray:
  """SSIM of each slice, matching `skimage.metrics.structural_similarity` defaults; (B,).

  SSIM = mean over pixels of (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
  C1 = (K1·R)², C2 = (K2·R)², local statistics over a win_size×win_size uniform window with the
  sample-covariance factor N/(N−1). scikit-image filters with reflected borders and then drops a
  (win_size−1)/2 border, which is exactly the pixels whose window lies inside the image, so a
  'valid' window here gives the same numbers. R = each target slice's max unless `data_range` is
  given.
  """
  target = jnp.asarray(target, jnp.float32)
  prediction = jnp.asarray(prediction, jnp.float32)
  # SSIM is unchanged when x, y and R are scaled alike: dividing by R first keeps the products of
  # squared statistics and constants (~R⁴) from underflowing float32 to 0/0 for a tiny range (R ~
  # 1e-12).
  data_range = _data_range(target, data_range)[:, None, None]
  target, prediction = target / data_range, prediction / data_range
  # (Co)variances are shift invariant: subtracting each image's own slice mean first keeps float32
  # E[x²] − E[x]² precise for both (one shared shift loses precision when the means differ, and
  # makes SSIM(a, b) ≠ SSIM(b, a)).
  shift_x = jnp.mean(target, axis=(1, 2), keepdims=True)
  shift_y = jnp.mean(prediction, axis=(1, 2), keepdims=True)
  x, y = target - shift_x, prediction - shift_y
  n = win_size * win_size
  cov_norm = n / (n - 1.0)
  mx, my = _box_mean(x, win_size), _box_mean(y, win_size)
  vx = cov_norm * (_box_mean(x * x, win_size) - mx * mx)
  vy = cov_norm * (_box_mean(y * y, win_size) - my * my)
  vxy = cov_norm * (_box_mean(x * y, win_size) - mx * my)
  ux, uy = mx + shift_x, my + shift_y
  c1, c2 = k1 * k1, k2 * k2  # (K·R)² with R = 1 after the scaling
  s = ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=(1, 2))


def batch_metrics(
  target: jnp.ndarray, prediction: jnp.ndarray, data_range=None
) -> dict[str, jnp.ndarray]:
  """{'MSE', 'NMSE', 'PSNR', 'SSIM'} of each slice of a (B, H, W) batch, each (B,); jit-able."""
  return {
    "MSE": batch_mse(target, prediction),
    "NMSE": batch_nmse(target, prediction),
    "PSNR": batch_psnr(target, prediction, data_range),
    "SSIM": batch_ssim(target, prediction, data_range),
  }
