"""experiments/sft_table.py: its commands, its tables and its verdict from synthetic runs."""

from __future__ import annotations

import pytest

from experiments import sft_table


def _volumes(values):
  return {f"v{i}": {"PSNR": p, "SSIM": p / 100} for i, p in enumerate(values)}


def _found(sft_kd_offset: float):
  base = {42: [30.0, 31.0, 32.0], 43: [30.2, 31.1, 32.3], 44: [29.9, 30.8, 31.9]}
  found = {}
  for label, _, _ in sft_table.ROWS:
    shift = {"ZF": -8.0, "Student (no KD)": 0.0, "Teacher": 1.0, "SFT teacher": 0.9}.get(label, 0.5)
    if label.startswith("KD from the SFT"):
      shift = 0.5 + sft_kd_offset
    found[label] = {seed: _volumes([p + shift for p in ps]) for seed, ps in base.items()}
  return found


def test_the_sft_run_is_the_standard_command_with_sft_enabled(tmp_path):
  args = sft_table.build_parser().parse_args(
    ["--standard-runs", str(tmp_path / "std"), "--workdir", str(tmp_path / "sft")]
  )
  cmds = sft_table.commands(args, 43)
  assert "--config.train.seed=43" in cmds["standard"] and "--config.acc=4x" in cmds["standard"]
  assert cmds["sft"][: len(cmds["standard"]) - 1] != cmds["standard"]
  assert "--config.sft.enabled=true" in cmds["sft"]
  assert f"--workdir={tmp_path / 'sft' / 'acc_4x' / 'seed_43'}" in cmds["sft"]
  assert f"--workdir={tmp_path / 'std' / 'cpu' / 'acc_4x' / 'seed_43'}" in cmds["standard"]


def test_results_table_means_over_seeds_of_volume_means():
  table = sft_table.results_table(_found(0.3))
  student = next(line for line in table.splitlines() if line.startswith("| Student"))
  # seed means 31.0, 31.2, 30.866…: mean 31.02, sample std 0.17
  assert "31.02 ± 0.17" in student


@pytest.mark.parametrize(
  "offset, outcome", [(0.3, "above"), (-0.3, "below"), (0.05, "spread"), (0.0, "spread")]
)
def test_comparison_follows_the_reproductions_rule(offset, outcome):
  lower, upper = sft_table.COMPARED[1][1:]
  result = sft_table.comparison(_found(offset), lower, upper)
  assert result["diff"] == pytest.approx(offset, abs=1e-9)
  assert result["outcome"] == outcome
  if outcome in ("above", "below"):
    assert result["test"]["wilcoxon_p"] < 0.05 and result["test"]["n"] == 9


def test_the_comparison_table_says_not_resolved_inside_the_spread():
  text = sft_table.comparison_table(_found(0.05))
  assert text.count("not resolved") == 2  # the SFT teacher is 0.1 dB below: inside its spread


@pytest.mark.parametrize(
  "argv, fragment",
  [
    (["--seeds", "4x"], "--seeds '4x' is not a comma-separated list of integers"),
    (["--seeds", ","], "--seeds is empty"),
    (["--acc", "3y"], "3y"),
    (["--set", "no-equals"], "is not FIELD=VALUE"),
  ],
)
def test_bad_arguments_are_one_sentence_before_any_run(tmp_path, capsys, argv, fragment):
  from kdmri_jax.errors import run_cli

  status = run_cli(sft_table.main, [*argv, "--workdir", str(tmp_path / "sft"), "--dry-run"])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]
  assert not (tmp_path / "sft").exists()
