"""experiments/ as a package: scripts import as `experiments.NAME`, share `experiments.common`,
and run from the repository root as `python -m experiments.NAME` (no import-path edits)."""

import os
import subprocess
import sys

import pytest

from experiments import ablation, brain_studies, common, compare_methods, reproduce_brain
from kdmri_jax.errors import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_scripts_share_one_common_module():
  assert compare_methods.common is ablation.common is brain_studies.common is common
  assert reproduce_brain.common is common


def test_script_command_is_the_module_form():
  assert common.script_command(["--base", "demo"], "ablation.py") == (
    "python -m experiments.ablation --base demo"
  )
  assert common.script_command([], "compare_methods") == "python -m experiments.compare_methods"


@pytest.mark.parametrize(
  "script, extra", [(compare_methods, ["--methods", "attention,fitnet"]), (ablation, [])]
)
def test_dry_run_prints_each_pipeline_run_and_writes_nothing(script, extra, tmp_path, capsys):
  workdir = tmp_path / "runs"
  argv = ["--dry-run", "--workdir", str(workdir), "--out", str(tmp_path / "table.md"), *extra]
  assert run_cli(script.main, argv) == 0
  runs = [line for line in capsys.readouterr().out.splitlines() if "-m kdmri_jax.main" in line]
  assert len(runs) == (3 if script is compare_methods else 4)
  assert not workdir.exists() and not (tmp_path / "table.md").exists()


def fake_study_runs(monkeypatch):
  """Replaces the pipeline runs and their metrics of a study script; returns the runs' labels."""
  runs = []

  def timed_run(command, workdir, label, stages, dry_run=False):
    runs.append(label)
    return 100.0 + len(runs)

  def row(label, workdir, method, stages=(), run_wall=None, **extra):
    psnr = {"mean": 30.0 + len(label) / 10, "std": 0.1}
    ssim = {"mean": 0.9, "std": 0.01}
    fields = dict(psnr=psnr, ssim=ssim, n=3, params=1000, train_s=None, wall_s=run_wall)
    return {"label": label, **fields, **extra}

  monkeypatch.setattr(common, "timed_run", timed_run)
  monkeypatch.setattr(common, "link_stage", lambda source, workdir, stage: None)
  monkeypatch.setattr(common, "row", row)
  return runs


def test_a_study_table_names_its_base_its_rows_and_its_own_command_first(tmp_path, monkeypatch):
  runs = fake_study_runs(monkeypatch)
  out = tmp_path / "ablation.md"
  argv = ["--workdir", str(tmp_path / "runs"), "--out", str(out), "--set", "train.num_epochs=2"]
  assert ablation.main(argv) == 0
  text = out.read_text()
  assert runs == ["student", "attention_imitation", "imitation_only", "feature_only"]
  assert text.startswith("# Ablation: attention transfer and imitation\n\nKD-MRI's ablation on ")
  assert "on `demo` with train.num_epochs=2: the student alone" in text
  assert "All variants share one teacher. PSNR/SSIM: mean ± std over the 3 validation volumes." in (
    text
  )
  assert "| Model | AT | Imitation | PSNR (dB) | SSIM |" in text
  assert "| AT + imitation (paper) | ✓ | ✓ | 32.20 ± 0.10 |" in text
  block = text.split("```\n")[1].split("\n")
  assert block[0] == "python -m experiments.ablation " + " ".join(argv)
  assert "configs/ablation.py:demo,student" in block[1]

  out = tmp_path / "methods.md"
  argv = ["--workdir", str(tmp_path / "m"), "--out", str(out), "--methods", "attention,sp"]
  assert compare_methods.main(argv) == 0
  text = out.read_text()
  assert "pipeline on `demo`: each method trains" in text
  assert "| Model | PSNR (dB) |" in text and "| KD: attention (paper) |" in text
  assert text.split("```\n")[1].startswith("python -m experiments.compare_methods --workdir")


def test_an_existing_table_stops_a_study_before_any_run(tmp_path, monkeypatch):
  runs = fake_study_runs(monkeypatch)
  out = tmp_path / "table.md"
  out.write_text("kept")
  for script in (ablation, compare_methods):
    with pytest.raises(common.InputError, match="exists; pass --overwrite to replace it"):
      script.main(["--workdir", str(tmp_path / "runs"), "--out", str(out)])
  assert runs == [] and out.read_text() == "kept"


def test_markdown_table_rows():
  assert common.table_head(["A", "B"]) == ["| A | B |", "|---|---|"]
  assert common.table_row(["x", ""]) == "| x |  |"


@pytest.mark.parametrize("name", ["compare_methods", "reproduce_brain"])
def test_runs_as_a_module_from_the_repository_root(name):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  process = subprocess.run(
    [sys.executable, "-m", f"experiments.{name}", "--help"],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=120,
  )
  assert process.returncode == 0, process.stderr
  assert "usage:" in process.stdout
