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
