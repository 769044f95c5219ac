"""Tests of experiments/brain_figures.py: reading validation PSNR curves from logs and drawing
them."""

from __future__ import annotations

import os

import pytest

from experiments import brain_figures as bf


def write_log(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def test_read_curve_takes_the_last_line_per_epoch_and_ignores_old_logs(tmp_path):
  log = str(tmp_path / "kd" / "log.txt")
  write_log(
    log,
    [
      "kd epoch 1/3 step 5 train_loss 0.1 val_loss 0.1 val_psnr 20.50 best 0.1@5 lr 1e-3 time 1s",
      "kd: stopped by SIGTERM at step 7 (epoch 2)",
      "kd epoch 2/3 step 10 train_loss 0.1 val_loss 0.1 val_psnr 21.00 best 0.1@5 lr 1e-3 time 1s",
      "kd epoch 2/3 step 10 train_loss 0.1 val_loss 0.1 val_psnr 21.25 best 0.1@5 lr 1e-3 time 1s",
    ],
  )
  assert bf.read_curve(log) == [(1, 20.5), (2, 21.25)]
  old = str(tmp_path / "old" / "log.txt")
  write_log(
    old, ["teacher epoch 1/3 step 5 train_loss 0.1 val_loss 0.1 best 0.1@5 lr 1e-3 time 1s"]
  )
  assert bf.read_curve(old) == [] and bf.read_curve(str(tmp_path / "missing.txt")) == []


def test_plot_curves_writes_a_png_only_when_a_run_logged_psnr(tmp_path):
  run = tmp_path / "run"
  for stage in ("teacher", "student"):
    write_log(
      str(run / stage / "log.txt"),
      [
        f"{stage} epoch {e}/2 step {e} train_loss 0.1 val_loss "
        f"0.1 val_psnr {20 + e}.00 best 0.1@1 lr 1e-3 time 1s"
        for e in (1, 2)
      ],
    )
  out = str(tmp_path / "figs" / "curves.png")
  assert not bf.plot_curves({"4x": str(tmp_path / "empty")}, out, "t") and not os.path.exists(out)
  assert bf.plot_curves({"4x": str(run), "8x": str(tmp_path / "empty")}, out, "t")
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_copy_qualitative(tmp_path):
  assert not bf.copy_qualitative(str(tmp_path), str(tmp_path / "out.png"))
  (tmp_path / "report").mkdir()
  (tmp_path / "report" / "figure.png").write_bytes(b"png")
  assert bf.copy_qualitative(str(tmp_path), str(tmp_path / "f" / "out.png"))
  assert (tmp_path / "f" / "out.png").read_bytes() == b"png"


def test_late_gain():
  curve = [(1, 20.0), (2, 21.0), (3, 21.5), (4, 21.6), (5, 21.9)]
  assert bf.late_gain(curve) == pytest.approx(0.9) and bf.late_gain(curve, 4) == pytest.approx(1.9)
  assert bf.late_gain(curve[:3]) is None
