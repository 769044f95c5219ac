"""Tests of experiments/brain_studies.py (ablation and methods rows over seeds) on made-up
metrics."""

from __future__ import annotations

import json
import os

import pytest

from experiments import brain_studies as bs, reproduce_brain as rb

VOLUMES = ("vol_a", "vol_b", "vol_c")
SEEDS = (42, 43, 44)


def write_metrics(workdir, method, psnr, params=49285, seconds=None, stage="kd"):
  """results/<method>/metrics.json as the evaluate stage writes it, and optionally a stage log
  line."""
  folder = os.path.join(workdir, "results", method)
  os.makedirs(folder)
  volumes = [{"name": n, "slices": 10, "PSNR": p, "SSIM": p / 40.0} for n, p in zip(VOLUMES, psnr)]
  with open(os.path.join(folder, "metrics.json"), "w") as f:
    json.dump({"method": method, "params": params, "n_volumes": 3, "volumes": volumes}, f)
  if seconds is not None:
    os.makedirs(os.path.join(workdir, stage), exist_ok=True)
    with open(os.path.join(workdir, stage, "log.txt"), "w") as f:
      f.write(
        f"{stage} epoch 1/1 step 5 train_loss 0.1 val_loss 0.1 "
        f"val_psnr 20.00 best 0.1@5 lr 1.0e-03 time {seconds}s\n"
      )


def fake_runs(root):
  """Three seeds at 8x: student 30/31/32 dB per volume (+seed offset), the paper's KD 0.5 dB better,
  imitation-only 1 dB better on every volume, fitnet 0.2 dB worse; feature_only and fsp never
  ran."""
  run_dirs = {}
  for i, seed in enumerate(SEEDS):
    workdir = rb.run_dir(str(root), "cpu", "8x", seed)
    student = [30.0 + i, 31.0 + i, 32.0 + i]
    write_metrics(workdir, "student", student, seconds=10, stage="student")
    write_metrics(workdir, "teacher", [s + 1 for s in student], params=141765)
    write_metrics(workdir, "kd", [s + 0.5 for s in student])
    write_metrics(
      bs.study_dir(workdir, "imitation_only"), "kd", [s + 1.0 for s in student], seconds=7
    )
    write_metrics(bs.study_dir(workdir, "method:fitnet"), "kd", [s - 0.2 for s in student])
    run_dirs[seed] = workdir
  return run_dirs


def test_rows_over_seeds_and_the_paired_test_against_the_student(tmp_path):
  run_dirs = fake_runs(tmp_path)
  student = bs.row_stats(run_dirs, "student")
  assert student["PSNR"] == pytest.approx((32.0, 1.0)) and student["train_s"] == 10
  imitation = bs.row_stats(run_dirs, "imitation_only")
  assert imitation["PSNR"] == pytest.approx((33.0, 1.0)) and imitation["seeds"] == list(SEEDS)
  assert imitation["test"]["wins"] == 9 and imitation["test"]["wilcoxon_p"] == pytest.approx(
    2 / 2**9
  )
  assert imitation["train_s"] == 7
  assert bs.row_stats(run_dirs, "method:fitnet")["test"]["wins"] == 0
  missing = bs.row_stats(run_dirs, "feature_only")
  assert missing["PSNR"] is None and missing["seeds"] == [] and missing["test"] is None


def test_tables_and_verdict(tmp_path):
  run_dirs = fake_runs(tmp_path)
  text = bs.sections(
    run_dirs, "8x", ["attention", "fitnet", "fsp"], ["python -m kdmri_jax.main ..."]
  )
  assert (
    "| Imitation only |  | ✓ | 33.00 ± 1.00 | 0.8250 ± 0.0250 | +1.00 | 9/9 | 0.00391 |" in text
  )
  assert "| AT only (then α = 1) | ✓ |  | not run |" in text
  assert (
    "| KD: attention (paper) | 32.50 ± 1.00 |" in text and "| KD: fitnet | 31.80 ± 1.00 | " in text
  )
  assert (
    "| KD: fsp | not run |" in text and "| Teacher | 33.00 ± 1.00 | 0.8250 ± 0.0250 | — |" in text
  )
  verdict = bs.verdict(run_dirs, "8x", ["attention", "fitnet"])
  # imitation only and the paper's are 1.0 and 0.5 dB above the student: not more than its 1 dB std
  assert (
    "0 of 2 distilled students beat the student alone in PSNR by more than the larger seed "
    "std with paired p < 0.05 (none)"
  ) in verdict
  assert (
    "above it on mean PSNR but not resolved: Imitation only (+1.00 dB, p = 0.00391), "
    "AT + imitation (paper) (+0.50 dB"
  ) in verdict
  assert "the best is Imitation only at +1.00 dB" in verdict
  assert "0 of 2 distilled students" in verdict.split("method comparison")[1]
  # the made-up teacher is 1 dB better than the student
  assert "extra stage of training" not in verdict
  for workdir in run_dirs.values():  # now a teacher 1 dB worse than the student
    with open(os.path.join(workdir, "results", "teacher", "metrics.json")) as f:
      document = json.load(f)
    for volume in document["volumes"]:
      volume["PSNR"] -= 2.0
    with open(os.path.join(workdir, "results", "teacher", "metrics.json"), "w") as f:
      json.dump(document, f)
  assert "extra stage of training" in bs.verdict(run_dirs, "8x", ["attention", "fitnet"])


def test_run_studies_links_the_shared_stages_and_runs_each_row(tmp_path, monkeypatch):
  run = tmp_path / "run"
  for stage in ("teacher", "student", "feature"):
    (run / stage).mkdir(parents=True)
    (run / stage / "done").write_text("{}")
  ran = []
  monkeypatch.setattr(
    bs.common,
    "timed_run",
    lambda command, workdir, label, stages, dry_run: ran.append((command, workdir, tuple(stages))),
  )
  bs.run_studies(
    str(run), "demo", ["acc=8x", "train.seed=42"], ["attention", "fitnet"], "8x seed 42"
  )
  assert [os.path.basename(w) for _, w, _ in ran] == [
    "imitation_only",
    "feature_only",
    "method_fitnet",
  ]
  assert [s for _, _, s in ran] == [("kd",), ("kd",), ("feature", "kd")]
  assert (
    "--config=configs/methods.py:demo,fitnet" in ran[2][0] and "--config.train.seed=42" in ran[2][0]
  )
  assert os.path.realpath(run / "studies" / "imitation_only" / "student") == str(run / "student")
  assert os.path.realpath(run / "studies" / "feature_only" / "feature") == str(run / "feature")
  assert not os.path.lexists(run / "studies" / "method_fitnet" / "student")


def test_run_studies_needs_a_finished_run(tmp_path):
  with pytest.raises(bs.common.InputError, match="not a finished teacher stage"):
    bs.run_studies(str(tmp_path), "demo", [], ["attention"], "x")


def test_reproduce_rejects_a_studies_acc_without_runs_and_unknown_methods(tmp_path):
  out = str(tmp_path / "b.md")
  with pytest.raises(bs.common.InputError, match="--studies-acc 8x is not one of --accs"):
    rb.main(["--collect-only", "--accs", "4x", "--studies-acc", "8x", "--out", out])
  with pytest.raises(bs.common.InputError, match="fitnett"):
    rb.main(["--collect-only", "--methods", "attention,fitnett", "--out", out])


def test_resolve_says_why_a_difference_is_not_resolved():
  assert bs.resolve((30.0, 0.0), (30.5, 0.0), seeds=1) == "one seed"
  assert bs.resolve((30.0, 0.2), (30.5, 0.6), seeds=2) == "spread"
  assert bs.resolve((30.0, 0.2), (30.5, 0.1), seeds=2, p=0.2) == "p"
  assert bs.resolve((30.5, 0.1), (30.0, 0.2), seeds=2, p=0.03) == "below"
  assert bs.paired_p({"wilcoxon_p": None}) == 1.0 and bs.p_text(None) == "—"


def test_step_needs_a_difference_beyond_the_larger_seed_std_and_a_significant_pair_test():
  assert bs.step((30.0, 0.2), (30.5, 0.1), seeds=2) == "above"
  assert bs.step((30.5, 0.1), (30.0, 0.2), seeds=2) == "below"
  assert bs.step((30.0, 0.2), (30.5, 0.6), seeds=2) == "inside"  # 0.5 dB, but a seed std of 0.6
  assert bs.step((30.0, 0.2), (30.5, 0.1), seeds=2, p=0.2) == "inside"  # test not significant
  assert bs.step((30.0, 0.2), (30.5, 0.1), seeds=2, p=0.03) == "above"
  assert bs.step((30.0, 0.0), (30.5, 0.0), seeds=1) == "inside"  # one seed: no spread at all


def test_the_studies_verdict_from_a_written_table_matches_the_one_from_the_runs(tmp_path):
  run_dirs = fake_runs(tmp_path)
  text = "Setting **cpu**: x.\n\n" + bs.sections(run_dirs, "8x", ["attention", "fitnet"], ["cmd"])
  assert rb.studies_from_markdown(text) == bs.verdict(run_dirs, "8x", ["attention", "fitnet"])
  assert rb.studies_from_markdown("no studies here") == ""
