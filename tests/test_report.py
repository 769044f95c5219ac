"""Tests for kdmri_jax.report: the results table, report.md and the qualitative figure."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kdmri_jax import report


def _rows():
  return {
    "ZF": {
      "PSNR": [29.0, 31.0],
      "SSIM": [0.60, 0.62],
      "NMSE": [0.05, 0.07],
      "HFN": [0.5, 0.7],
      "params": None,
    },
    "Teacher": {
      "PSNR": [40.0, 42.0],
      "SSIM": [0.97, 0.99],
      "NMSE": [0.01, 0.01],
      "HFN": [0.2, 0.2],
      "params": 141765,
    },
    "Student": {"PSNR": [39.0, 41.0], "SSIM": [0.96, 0.98], "params": 49285},
    "KD": {
      "PSNR": [39.5, np.inf],
      "SSIM": [0.97, 0.97],
      "NMSE": [0.01, 0.02],
      "HFN": [0.3, 0.3],
      "parameters": 49285,
    },
  }


def test_results_table_layout_and_values():
  table = report.results_table(_rows())
  lines = table.strip().splitlines()
  assert lines[0] == "| Method | PSNR (dB) | SSIM | NMSE | HFN | Parameters |"
  assert [line.split("|")[1].strip() for line in lines[2:]] == ["ZF", "Teacher", "Student", "KD"]
  std = np.std([40.0, 42.0], ddof=1)
  assert f"| Teacher | 41.00 ± {std:.2f} | 0.9800 ± {np.std([0.97, 0.99], ddof=1):.4f} |" in table
  assert "141,765" in lines[3] and lines[2].rstrip().endswith("| — |")  # ZF has no parameters
  assert "| — | — | 49,285 |" in lines[4]  # Student without NMSE/HFN
  assert "39.50 ± 0.00 (1 inf/NaN left out)" in lines[5]


def test_write_report_atomic_with_meta(tmp_path):
  table = report.results_table(_rows())
  path = report.write_report(
    tmp_path / "out",
    table,
    {
      "title": "Brain 4x",
      "dataset": "brain",
      "acc": "4x",
      "command": "python -m kdmri_jax.main",
      "date": "2026-01-01 00:00 UTC",
      "figure": str(tmp_path / "out" / "figure.png"),
    },
  )
  assert path == tmp_path / "out" / "report.md"
  text = path.read_text()
  assert text.startswith("# Brain 4x\n")
  for needle in (
    "- Dataset: brain, acceleration 4x",
    "`python -m kdmri_jax.main`",
    "- Machine: ",
    "jax ",
    "- Date: 2026-01-01 00:00 UTC",
    "| Teacher |",
    "](figure.png)",
  ):
    assert needle in text
  assert [p.name for p in path.parent.iterdir()] == ["report.md"]  # no temporary file left
  report.write_report(path, "| new |\n", {"machine": "test machine"})
  assert "| new |" in path.read_text() and "test machine" in path.read_text()


def _synthetic(h=240, w=240):
  y, x = np.mgrid[:h, :w] / h
  target = 0.8 * (((y - 0.5) / 0.4) ** 2 + ((x - 0.5) / 0.3) ** 2 < 1) + 0.2 * (
    ((y - 0.45) / 0.1) ** 2 + ((x - 0.55) / 0.08) ** 2 < 1
  )
  rng = np.random.default_rng(0)
  images = {
    name: np.clip(target + s * rng.standard_normal(target.shape), 0, 1)
    for name, s in (("ZF", 0.15), ("Teacher", 0.03), ("Student", 0.05), ("KD", 0.04))
  }
  return images, target


def test_qualitative_figure_png(tmp_path):
  images, target = _synthetic()
  path = report.qualitative_figure(
    tmp_path / "figure.png", images, target, title="synthetic brain 4x"
  )
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(data) < 300_000
  assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
  with pytest.raises(ValueError):
    report.qualitative_figure(tmp_path / "bad.png", {"ZF": target[:10]}, target)


def _kd_objective(imitation, **fields):
  from configs import default
  from kdmri_jax import train

  config = default.get_config()
  config.kd.imitation = imitation
  for key, value in fields.items():
    section, name = key.split("__")
    setattr(getattr(config, section), name, value)
  return {
    **train.describe_objective("kd", config),
    "init": train.describe_objective("feature", config),
  }


@pytest.mark.parametrize(
  "imitation, formula, alpha",
  [
    ("paper", "α·L1(x_S, y) + (1 − α)·L1(x_S, x_T)", ", α = 0.3;"),
    ("authors_code", "L1(x_S, y) + L1(x_S, x_T) / N", " (α not used);"),
    ("authors_script", "L1(x_S, y) alone", " (α not used);"),
    ("authors_sr", "L1(x_S, y) + L1(x_S, x_T): the authors' super-resolution", " (α not used);"),
  ],
)
def test_objectives_section_names_objective_alpha_and_feature_criterion(imitation, formula, alpha):
  section = report.objectives_section(
    {"Teacher": {"loss": "l1", "best": "val_mse"}, "KD": _kd_objective(imitation, kd__alpha=0.3)}
  )
  lines = section.splitlines()
  assert lines[0] == "Training objectives:"
  assert lines[2] == "- Teacher: L1(x, y); best checkpoint by lowest validation MSE to the target."
  assert lines[3].startswith(f"- KD: imitation `{imitation}`: {formula}") and alpha in lines[3]
  assert (
    "started from the AT student (feature stage, `attention` on layer pairs `paper`" in (lines[3])
  )
  assert "(`attention_mse`, the authors' code)" in lines[3]


def test_objectives_section_other_settings():
  objective = _kd_objective(
    "paper", kd__feature_best="objective", train__loss="l2", kd__init_from="student"
  )
  objective["init"] = {"loss": "l2", "best": "val_mse"}
  text = report.objective_text(objective)
  assert "with L2 in place of L1" in text and "started from the student baseline" in text
  feature = _kd_objective("paper", kd__feature_best="objective")["init"]
  feature_text = report.objective_text(feature)
  assert "lowest validation value of its own feature loss (`objective`)" in feature_text
  assert report.objective_text(None) == "not recorded"
  assert report.objective_text({**objective, "from_config": True}).endswith(
    "(from the config: the checkpoint predates the record)."
  )


def test_report_places_the_objectives_after_the_table(tmp_path):
  section = report.objectives_section({"KD": _kd_objective("authors_sr")})
  text = report.write_report(
    tmp_path, report.results_table(_rows()), {"objectives": section, "machine": "m"}
  ).read_text()
  needles = ("| KD |", "Training objectives:", "- KD: imitation `authors_sr`")
  places = [text.index(needle) for needle in needles]
  assert places == sorted(places)


def test_every_best_checkpoint_criterion_has_words():
  from kdmri_jax import train

  assert set(train.FEATURE_BEST) | {"val_mse"} <= set(report.BEST_TEXT)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
  report.write_text_atomic(tmp_path / "a.md", "old")

  def fail(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    report.write_atomic(tmp_path / "a.md", fail)
  assert [p.name for p in tmp_path.iterdir()] == ["a.md"]
  assert (tmp_path / "a.md").read_text() == "old"


def test_atomic_writes_get_an_ordinary_files_mode(tmp_path):
  old = os.umask(0o022)
  try:
    report.write_text_atomic(tmp_path / "a.md", "x")
  finally:
    os.umask(old)
  assert (tmp_path / "a.md").stat().st_mode & 0o777 == 0o644
