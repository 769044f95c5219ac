"""Tests for the `python -m kdmri_jax.evaluate` CLI on small reference-layout h5 files."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy import ndimage

from kdmri_jax import evaluate
from kdmri_jax.errors import run_cli

S, H, W = 3, 20, 24


# Independent references (the formulas of the authors' evaluate.py written out here, float64; no
# kdmri_jax.metrics): R is the volume's maximum.
def _psnr(gt, pred):
  """10·log10(R² / mean (gt − pred)²)."""
  gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
  return 10 * np.log10(gt.max() ** 2 / np.mean((gt - pred) ** 2))


def _nmse(gt, pred):
  """‖gt − pred‖² / ‖gt‖²."""
  gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
  return np.sum((gt - pred) ** 2) / np.sum(gt**2)


def _ssim(gt, pred):
  """Mean over slices of SSIM (Wang et al. 2004) as scikit-image's `structural_similarity` defaults
  compute it: 7×7 uniform window, K1 = 0.01, K2 = 0.03, sample (co)variances (× 49/48), mean over
  the pixels whose window lies inside the slice."""
  gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
  c1, c2 = (0.01 * gt.max()) ** 2, (0.03 * gt.max()) ** 2

  def mean(image):
    return ndimage.uniform_filter(image, size=7)

  values = []
  for x, y in zip(gt, pred):
    mx, my = mean(x), mean(y)
    vx, vy = 49 / 48 * (mean(x * x) - mx * mx), 49 / 48 * (mean(y * y) - my * my)
    cxy = 49 / 48 * (mean(x * y) - mx * my)
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    values.append(ssim_map[3:-3, 3:-3].mean())
  return float(np.mean(values))


def _write(path: pathlib.Path, key: str, data: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w") as f:
    f[key] = data


@pytest.fixture()
def folders(tmp_path):
  """targets/acc_4x/{a,b,c}.h5 ('volfs' H×W×S) and predictions/{a,b,c}.h5 ('reconstruction'
  S×H×W)."""
  rng = np.random.default_rng(0)
  volumes = {}
  for i, name in enumerate(["a", "b", "c"]):
    gt = (rng.random((S, H, W)) * (1 + i)).astype(np.float32)
    pred = (gt + 0.05 * rng.standard_normal(gt.shape)).astype(np.float32)
    _write(tmp_path / "targets" / "acc_4x" / f"{name}.h5", "volfs", gt.transpose(1, 2, 0))
    _write(tmp_path / "predictions" / f"{name}.h5", "reconstruction", pred)
    volumes[name] = (gt, pred)
  return tmp_path, volumes


def _args(tmp_path, *extra):
  return [
    "--target-path",
    str(tmp_path / "targets"),
    "--predictions-path",
    str(tmp_path / "predictions"),
    "--report-path",
    str(tmp_path / "report"),
    "--acc",
    "4x",
    *extra,
  ]


def test_cli_writes_reference_report(folders):
  tmp_path, volumes = folders
  assert run_cli(evaluate.main, _args(tmp_path, "--per-slice")) == 0
  report = tmp_path / "report"
  line = (report / "report.txt").read_text().strip()
  assert re.fullmatch(
    r"HFN = \S+ \+/- \S+ MSE = \S+ \+/- \S+ NMSE = \S+ \+/- \S+ "
    r"PSNR = \S+ \+/- \S+ SSIM = \S+ \+/- \S+",
    line,
  )
  psnrs = [_psnr(gt, pred) for gt, pred in volumes.values()]
  assert f"PSNR = {np.mean(psnrs):.4g} +/- {2 * np.std(psnrs, ddof=1):.4g}" in line
  ssims = [_ssim(gt, pred) for gt, pred in volumes.values()]
  assert f"SSIM = {np.mean(ssims):.4g} +/- {2 * np.std(ssims, ddof=1):.4g}" in line

  doc = json.loads((report / "metrics.json").read_text())
  assert doc["n_volumes"] == 3 and doc["acc"] == "4x" and doc["target_path"].endswith("acc_4x")
  assert doc["summary"]["PSNR"]["mean"] == pytest.approx(np.mean(psnrs))
  assert [v["name"] for v in doc["volumes"]] == ["a", "b", "c"]
  rows = list(csv.DictReader((report / "metrics_per_volume.csv").open()))
  assert float(rows[1]["SSIM"]) == pytest.approx(ssims[1])
  slices = list(csv.DictReader((report / "metrics_per_slice.csv").open()))
  assert len(slices) == 3 * S and slices[S]["name"] == "b" and slices[S]["slice"] == "0"


def test_knee_single_slice_targets(tmp_path):
  gt = np.random.default_rng(1).random((H, W)).astype(np.float32)
  _write(tmp_path / "targets" / "k.h5", "volfs", gt)
  _write(tmp_path / "predictions" / "k.h5", "reconstruction", (0.9 * gt)[None])
  assert run_cli(evaluate.main, _args(tmp_path)) == 0
  doc = json.loads((tmp_path / "report" / "metrics.json").read_text())
  assert doc["volumes"][0]["slices"] == 1
  assert doc["volumes"][0]["NMSE"] == pytest.approx(0.01, rel=1e-5)


def _break(tmp_path, how):
  if how == "missing_target_folder":
    return ["--target-path", str(tmp_path / "nowhere")] + _args(tmp_path)[2:]
  if how == "missing_prediction_folder":
    return (
      _args(tmp_path)[:2] + ["--predictions-path", str(tmp_path / "nowhere")] + _args(tmp_path)[4:]
    )
  if how == "no_h5_files":
    for p in (tmp_path / "targets" / "acc_4x").glob("*.h5"):
      p.unlink()
  elif how == "missing_prediction":
    (tmp_path / "predictions" / "b.h5").unlink()
  elif how == "missing_key":
    _write(tmp_path / "predictions" / "c.h5", "recon", np.zeros((S, H, W), np.float32))
  elif how == "shape_mismatch":
    _write(tmp_path / "predictions" / "c.h5", "reconstruction", np.zeros((S, H, W + 1), np.float32))
  elif how == "nan":
    bad = np.zeros((S, H, W), np.float32)
    bad[0, 0, 0] = np.nan
    _write(tmp_path / "predictions" / "c.h5", "reconstruction", bad)
  elif how == "too_small":
    _write(tmp_path / "targets" / "acc_4x" / "c.h5", "volfs", np.ones((5, 5, S), np.float32))
    _write(tmp_path / "predictions" / "c.h5", "reconstruction", np.ones((S, 5, 5), np.float32))
  elif how == "not_hdf5":
    (tmp_path / "predictions" / "a.h5").write_text("not hdf5")
  return _args(tmp_path)


@pytest.mark.parametrize(
  "how",
  [
    "missing_target_folder",
    "missing_prediction_folder",
    "no_h5_files",
    "missing_prediction",
    "missing_key",
    "shape_mismatch",
    "nan",
    "too_small",
    "not_hdf5",
  ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(folders, how, capsys):
  tmp_path, _ = folders
  assert run_cli(evaluate.main, _break(tmp_path, how)) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
  assert not (tmp_path / "report").exists() or not any((tmp_path / "report").iterdir())


def test_existing_report_needs_overwrite(folders, capsys):
  tmp_path, _ = folders
  (tmp_path / "report").mkdir()
  (tmp_path / "report" / "report.txt").write_text("old")
  assert run_cli(evaluate.main, _args(tmp_path)) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert (tmp_path / "report" / "report.txt").read_text() == "old"
  assert run_cli(evaluate.main, _args(tmp_path, "--overwrite")) == 0
  assert (tmp_path / "report" / "report.txt").read_text().startswith("HFN = ")


def test_target_key_evaluates_another_dataset(folders):
  tmp_path, volumes = folders
  for name, (gt, _) in volumes.items():
    with h5py.File(tmp_path / "targets" / "acc_4x" / f"{name}.h5", "a") as f:
      f["img_volus_4x"] = (0.5 * gt).transpose(1, 2, 0)
  assert run_cli(evaluate.main, _args(tmp_path, "--target-key", "img_volus_4x")) == 0
  doc = json.loads((tmp_path / "report" / "metrics.json").read_text())
  gt, pred = volumes["a"]
  assert doc["target_key"] == "img_volus_4x"
  assert doc["volumes"][0]["NMSE"] == pytest.approx(_nmse(0.5 * gt, pred), rel=1e-6)


def test_module_entry_point(folders):
  tmp_path, _ = folders
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
    [sys.executable, "-m", "kdmri_jax.evaluate", *_args(tmp_path)],
    capture_output=True,
    text=True,
    env=env,
    cwd=root,
  )
  assert proc.returncode == 0, proc.stderr
  assert "3 volumes: HFN = " in proc.stdout
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "kdmri_jax.evaluate",
      "--target-path",
      str(tmp_path / "x"),
      "--predictions-path",
      str(tmp_path),
      "--report-path",
      str(tmp_path / "r"),
    ],
    capture_output=True,
    text=True,
    env=env,
    cwd=root,
  )
  assert proc.returncode == 2 and proc.stderr.startswith("error: target path")
  assert not (tmp_path / "r").exists()
