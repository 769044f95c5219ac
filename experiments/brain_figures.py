"""The figures of experiments/results/brain.md: each acceleration's qualitative figure (the report
stage's PNG of one run) and the training curves (validation PSNR per epoch of teacher, student and
KD, read from the stages' log.txt lines `... val_psnr X ...`)."""

from __future__ import annotations

import os
import re
import shutil
from typing import Mapping

CURVE_STAGES = (("teacher", "Teacher"), ("student", "Student"), ("kd", "KD (from the AT stage)"))


def read_curve(log_path: str) -> list[tuple[int, float]]:
  """[(epoch, validation PSNR)] from a stage's log.txt; empty when the file or the field is missing
  (runs logged before val_psnr existed). A resumed stage logs an epoch once, so the last line per
  epoch wins."""
  if not os.path.exists(log_path):
    return []
  points = {}
  with open(log_path) as f:
    for line in f:
      match = re.search(r"\bepoch (\d+)/\d+ .*\bval_psnr (\S+)", line)
      if match:
        points[int(match.group(1))] = float(match.group(2))
  return sorted(points.items())


def late_gain(curve: list[tuple[int, float]], epochs: int = 3) -> float | None:
  """Validation PSNR gained over the last `epochs` epochs of a curve (None when it is shorter)."""
  if len(curve) <= epochs:
    return None
  return curve[-1][1] - curve[-1 - epochs][1]


def copy_qualitative(run_workdir: str, out_path: str) -> bool:
  """Copies the run's report figure (ZF, target, teacher, student, KD and error maps) to
  `out_path`."""
  source = os.path.join(run_workdir, "report", "figure.png")
  if not os.path.exists(source):
    return False
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  shutil.copyfile(source, out_path)
  return True


def plot_curves(runs: Mapping[str, str], out_path: str, title: str) -> bool:
  """One panel per acc ({acc: run workdir}): validation PSNR per epoch of teacher, student and KD.
  Returns False (and writes nothing) when no run logged val_psnr."""
  curves = {
    acc: {stage: read_curve(os.path.join(workdir, stage, "log.txt")) for stage, _ in CURVE_STAGES}
    for acc, workdir in runs.items()
  }
  curves = {acc: c for acc, c in curves.items() if any(c.values())}
  if not curves:
    return False
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False)
  for ax, (acc, by_stage) in zip(axes[0], curves.items()):
    for stage, label in CURVE_STAGES:
      if by_stage[stage]:
        epochs, psnr = zip(*by_stage[stage])
        ax.plot(epochs, psnr, marker="o", markersize=3, label=label)
    ax.set_title(acc)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("validation PSNR (dB)")
  axes[0][-1].legend(fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  fig.savefig(out_path, dpi=80)
  plt.close(fig)
  return True
