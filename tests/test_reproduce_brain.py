"""Tests of experiments/reproduce_brain.py's table and statistics on made-up per-volume metrics (no
training)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments import reproduce_brain as rb

VOLUMES = ("vol_a", "vol_b", "vol_c")
PARAMS = {"zf": None, "teacher": 141765, "student": 49285, "kd": 49285}


def fake_run(root, acc, seed, psnr):
  """Writes results/<method>/metrics.json as the evaluate stage does; psnr[method] = per-volume
  list."""
  workdir = rb.run_dir(str(root), "cpu", acc, seed)
  for method, values in psnr.items():
    folder = os.path.join(workdir, "results", method)
    os.makedirs(folder)
    volumes = [
      {"name": n, "slices": 10, "PSNR": p, "SSIM": p / 40.0} for n, p in zip(VOLUMES, values)
    ]
    with open(os.path.join(folder, "metrics.json"), "w") as f:
      json.dump(
        {"method": method, "params": PARAMS[method], "n_volumes": len(volumes), "volumes": volumes},
        f,
      )
  return workdir


def metrics(zf, teacher, student, kd):
  return {"zf": zf, "teacher": teacher, "student": student, "kd": kd}


def test_gap_closed():
  assert rb.gap_closed(40.03, 39.36, 39.8) == pytest.approx(0.44 / 0.67)
  assert rb.gap_closed(30.0, 28.0, 27.0) == pytest.approx(-0.5)  # KD worse than the student
  assert rb.gap_closed(28.0, 28.0, 29.0) is None  # no gap
  assert rb.gap_closed(27.0, 28.0, 29.0) is None  # teacher worse than the student


def test_mean_std_over_seeds():
  assert rb.mean_std([]) is None
  assert rb.mean_std([3.0]) == (3.0, 0.0)
  mean, std = rb.mean_std([1.0, 2.0, 6.0])
  assert mean == pytest.approx(3.0)
  assert std == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))


def test_paired_test_wilcoxon_and_t():
  student = np.array([30.0, 31.0, 29.5, 30.2, 28.9, 31.4, 30.7, 29.9, 30.1])
  # KD better in all 9 pairs
  kd = student + np.array([0.3, 0.1, 0.5, 0.2, 0.4, 0.05, 0.6, 0.25, 0.15])
  test = rb.paired_test(kd, student)
  assert test["n"] == 9 and test["wins"] == 9
  assert test["wilcoxon_p"] == pytest.approx(2 / 2**9)  # exact two-sided p, all signs positive
  assert test["min_p"] == pytest.approx(2 / 2**9)
  assert 0 < test["t_p"] < 0.01
  mixed = rb.paired_test(
    student + np.array([0.3, -0.1, 0.5, -0.2, 0.4, -0.05, 0.6, -0.25, 0.15]), student
  )
  assert mixed["wins"] == 5 and mixed["wilcoxon_p"] > 0.05
  assert rb.paired_test(student[:3], student[:3])["wilcoxon_p"] is None  # no differences


def test_table_stats_over_seeds_and_volumes(tmp_path):
  fake_run(
    tmp_path, "4x", 42, metrics([20, 21, 22], [30, 31, 32], [29, 30, 31], [29.5, 30.5, 31.5])
  )
  fake_run(tmp_path, "4x", 43, metrics([20, 21, 22], [32, 33, 34], [29, 30, 31], [30, 31, 32]))
  runs = {
    ("4x", s): rb.read_volumes(rb.run_dir(str(tmp_path), "cpu", "4x", s)) for s in (42, 43, 44)
  }
  runs.update({("8x", 42): None})
  assert runs[("4x", 44)] is None
  stats = rb.table_stats(runs)
  entry = stats["4x"]
  assert entry["seeds"] == [42, 43] and entry["missing"] == [44]
  # per-run means over volumes: teacher 31 and 33 -> 32 ± sqrt(2)
  assert entry[("teacher", "PSNR")] == pytest.approx((32.0, np.sqrt(2.0)))
  assert entry[("student", "PSNR")] == pytest.approx((30.0, 0.0))
  assert entry[("kd", "PSNR")] == pytest.approx((30.75, np.std([30.5, 31.0], ddof=1)))
  assert entry["gap"] == pytest.approx(0.75 / 2.0)
  assert entry["gap_per_seed"] == pytest.approx({42: 0.5, 43: 1.0 / 3.0})
  assert entry["test"]["n"] == 6 and entry["test"]["wins"] == 6
  assert entry["params"]["teacher"] == 141765
  assert stats["8x"]["seeds"] == [] and stats["8x"][("kd", "PSNR")] is None

  table = rb.main_table(stats, ["4x", "5x", "8x"])
  assert "32.00 ± 1.41" in table
  assert table.count("not run") == 2 * 4 * 2  # 5x and 8x: 4 methods x (PSNR, SSIM)
  gaps = rb.gap_table(stats, ["4x", "5x", "8x"])
  assert "38 %" in gaps and "6/6" in gaps and "| 8x | none | not run" in gaps
  text = rb.verdict(stats, ["4x", "5x", "8x"], "cpu")
  # teacher − KD = 1.25 dB is inside the teacher's seed std sqrt(2): the ordering is not resolved
  assert "PSNR ordering reproduces at no acceleration run (4x: not resolved)" in text
  assert f"teacher − KD (+1.25 dB) is inside the larger seed std ({np.sqrt(2.0):.2f} dB)" in text
  assert "Not run: 5x, 8x" in text and "reduced setting `cpu`" in text


def test_verdict_when_teacher_is_not_better(tmp_path):
  fake_run(
    tmp_path, "8x", 42, metrics([20, 21, 22], [28, 28, 28], [29, 29, 29], [28.5, 28.5, 28.5])
  )
  stats = rb.table_stats({("8x", 42): rb.read_volumes(rb.run_dir(str(tmp_path), "cpu", "8x", 42))})
  assert stats["8x"]["gap"] is None
  assert "T ≤ S: undefined" in rb.gap_table(stats, ["8x"])
  assert "8x: no resolvable teacher–student gap" in rb.verdict(stats, ["8x"], "cpu")
  assert "one seed gives no seed spread" in rb.verdict(stats, ["8x"], "cpu")
  assert "No training curves" in rb.verdict(stats, ["8x"], "cpu")
  assert "the 40-epoch schedule is too short" in rb.verdict(stats, ["8x"], "cpu_long", {"8x": 0.3})
  levelled = rb.verdict(stats, ["8x"], "cpu_long", {"8x": 0.02})
  assert "levelled off (+0.02 dB" in levelled and "too short" not in levelled
  assert "--config.train.num_epochs=40" in " ".join(rb.run_command("cpu_long", "8x", 42, "w"))


def test_collect_only_writes_partial_table(tmp_path):
  fake_run(
    tmp_path, "4x", 42, metrics([20, 21, 22], [30, 31, 32], [29, 30, 31], [29.5, 30.5, 31.5])
  )
  out = tmp_path / "brain.md"
  argv = ["--collect-only", "--workdir", str(tmp_path), "--seeds", "42,43", "--out", str(out)]
  assert rb.main(argv) == 0
  text = out.read_text()
  assert "1 of 6 (acc, seed) runs finished" in text and "not run" in text
  assert "--config.acc=8x --config.train.seed=43" in text
  assert "| 4x | 42 | finished |" in text and "| 5x | 43 | not run |" in text
  with pytest.raises(rb.common.InputError, match="--overwrite"):
    rb.main(argv)  # an existing table is kept unless --overwrite
  with pytest.raises(rb.common.InputError, match="--seeds"):
    rb.main(["--collect-only", "--seeds", "4a", "--out", str(tmp_path / "x.md")])


def test_figures_are_named_by_setting_so_settings_do_not_overwrite_each_other(tmp_path):
  for setting in ("cpu", "cpu_long"):
    fake_run(
      tmp_path / setting, "4x", 42, metrics([20, 21, 22], [30, 31, 32], [29, 30, 31], [29, 30, 31])
    )
    if setting != "cpu":  # fake_run writes the cpu layout
      os.rename(tmp_path / setting / "cpu", tmp_path / setting / setting)
    workdir = rb.run_dir(str(tmp_path / setting), setting, "4x", 42)
    os.makedirs(os.path.join(workdir, "report"))
    with open(os.path.join(workdir, "report", "figure.png"), "wb") as f:
      f.write(setting.encode())
  for setting in ("cpu", "cpu_long"):
    out = tmp_path / "results" / f"{setting}.md"
    assert (
      rb.main(
        [
          "--collect-only",
          "--setting",
          setting,
          "--accs",
          "4x",
          "--seeds",
          "42",
          "--workdir",
          str(tmp_path / setting),
          "--out",
          str(out),
        ]
      )
      == 0
    )
    assert f"(brain_figures/{setting}_4x.png)" in out.read_text()
  for setting in ("cpu", "cpu_long"):
    assert (
      tmp_path / "results" / "brain_figures" / f"{setting}_4x.png"
    ).read_bytes() == setting.encode()


def test_setting_epochs_follow_overrides():
  assert rb.setting_epochs("cpu") == 10
  assert rb.setting_epochs("gpu") == 30
  assert rb.setting_epochs("gpu", ["train.num_epochs=25", "kd.alpha=0.3"]) == 25


def test_run_all_runs_every_job_in_parallel_and_reports_a_failure_after_the_rest(monkeypatch):
  import datetime
  import threading
  import time

  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  started, barrier = [], threading.Barrier(3, timeout=10)

  def run_one(acc, seed):
    started.append((acc, seed))
    barrier.wait()  # only passes if three runs are alive at the same time
    time.sleep(0.01)

  jobs = [("4x", 42), ("5x", 42), ("8x", 42)]
  rb.run_all(jobs, run_one, parallel=3, stop=None, stop_after=None)
  assert sorted(started) == sorted(jobs)
  assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.30"

  done = []

  def failing(acc, seed):
    if acc == "4x":
      raise rb.common.InputError("the 4x seed 42 run failed")
    time.sleep(0.05)
    done.append(acc)

  with pytest.raises(rb.common.InputError, match="4x"):
    rb.run_all(jobs, failing, parallel=3, stop=None, stop_after=None)
  assert sorted(done) == ["5x", "8x"]  # the others finished before the error was raised

  past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
  skipped = []
  rb.run_all(jobs, lambda a, s: skipped.append(a), parallel=1, stop=past, stop_after="00:00")
  assert skipped == []


def test_verdict_says_when_the_finding_reproduces_at_every_acc(tmp_path):
  for acc in ("4x", "8x"):
    for seed in (42, 43):
      fake_run(tmp_path, acc, seed, metrics([20, 21, 22], [32, 33, 34], [30, 31, 32], [31, 32, 33]))
  stats = rb.table_stats(
    {
      (a, s): rb.read_volumes(rb.run_dir(str(tmp_path), "cpu", a, s))
      for a in ("4x", "8x")
      for s in (42, 43)
    }
  )
  text = rb.verdict(stats, ["4x", "8x"], "gpu", epochs=30)  # seeds alike: stds 0, p = 1/32
  assert (
    "PSNR ordering reproduces at every acceleration run (4x, 8x), where KD closes 50 %, "
    "50 % of the teacher–student gap (paper: 44–68 %)."
  ) in text
  assert "SSIM ordering reproduces at every acceleration run (4x, 8x)." in text
  assert "(30 epochs per stage)" in text and "neither confirmed nor refuted" not in text
  assert "more GPU time than was lent" in text
  # One acc where KD does not beat the student: no claim of reproduction.
  fake_run(tmp_path, "5x", 42, metrics([20, 21, 22], [32, 33, 34], [30, 31, 32], [29, 30, 31]))
  stats["5x"] = rb.table_stats(
    {("5x", 42): rb.read_volumes(rb.run_dir(str(tmp_path), "cpu", "5x", 42))}
  )["5x"]
  text = rb.verdict(stats, ["4x", "5x", "8x"], "gpu")
  assert "reproduces at every" not in text and "reproduces at 4x, 8x, where KD closes" in text
  assert "; not at 5x: no resolvable teacher–student gap." in text  # one seed: no spread


def test_collect_only_says_the_machine_line_is_where_the_table_was_collected(tmp_path):
  fake_run(
    tmp_path, "4x", 42, metrics([20, 21, 22], [30, 31, 32], [29, 30, 31], [29.5, 30.5, 31.5])
  )
  out = tmp_path / "brain.md"
  assert (
    rb.main(
      [
        "--collect-only",
        "--workdir",
        str(tmp_path),
        "--accs",
        "4x",
        "--seeds",
        "42",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  assert (
    "(where the table was collected; the runs ran where the introduction says)" in out.read_text()
  )


# --- the verdict rule: the paper's whole ordering ZF < student < KD < teacher beyond the spread ---


def per_seed(zf, student, kd, teacher):
  return {"zf": zf, "student": student, "kd": kd, "teacher": teacher}


def test_a_clean_ordering_reproduces():
  means = per_seed([20.0, 20.0], [30.0, 30.1], [30.5, 30.6], [31.0, 31.1])  # stds 0.07, steps 0.5
  assert rb.ordering_verdict(means).status == rb.REPRODUCES
  ordering = rb.ordering_verdict(means, kd_student_p=0.03)
  assert ordering.status == "reproduces" and "teacher − student +1.00 dB" in ordering.sentence
  # the same steps judged on a paired test that does not resolve KD − student
  weak = rb.ordering_verdict(means, kd_student_p=0.2)
  assert weak.status == "not resolved"
  assert "KD − student (+0.50 dB, paired p = 0.2)" in weak.sentence


def test_kd_above_the_teacher_is_not_a_reproduction():
  # The old verdict counted this as reproducing: T > S and KD > S (gap closed 125 %).
  means = per_seed([20.0, 20.0], [29.0, 29.1], [31.5, 31.6], [31.0, 31.1])
  ordering = rb.ordering_verdict(means, kd_student_p=0.03)
  assert ordering.status == rb.NO_GAP == "no resolvable teacher–student gap"
  assert (
    "KD is above the teacher (+0.50 dB), so the gap closed would be over 100 %" in ordering.sentence
  )


def test_a_gap_inside_the_seed_spread_is_no_resolvable_gap():
  # brain.md's 8x pattern: teacher 0.3 dB above the student, its seed std larger than that.
  teacher, student = [30.0, 30.8], [30.0, 30.2]
  means = per_seed([20.0, 20.0], student, [30.15, 30.25], teacher)
  ordering = rb.ordering_verdict(means, kd_student_p=0.03)
  spread = max(np.std(teacher, ddof=1), np.std(student, ddof=1))
  assert ordering.status == rb.NO_GAP and "reproduces" not in ordering.sentence
  assert (
    f"teacher − student (+0.30 dB) is inside the larger seed std ({spread:.2f} dB)"
    in ordering.sentence
  )


def test_zf_above_the_student_fails_and_says_so():
  ordering = rb.ordering_verdict(per_seed([31.0, 31.0], [30.0, 30.1], [30.5, 30.6], [31.5, 31.6]))
  assert ordering.status == rb.FAILS
  assert "zero-filling (31.00) is above the student (30.05)" in ordering.sentence


def test_kd_inside_the_spread_is_not_resolved_and_kd_below_the_student_fails():
  inside = rb.ordering_verdict(per_seed([20.0, 20.0], [30.0, 30.4], [30.1, 30.3], [31.5, 31.6]))
  assert inside.status == rb.NOT_RESOLVED
  spread = np.std([30.0, 30.4], ddof=1)
  assert (
    f"KD − student (+0.00 dB) is inside the larger seed std ({spread:.2f} dB)" in inside.sentence
  )
  below = rb.ordering_verdict(
    per_seed([20.0, 20.0], [30.0, 30.1], [29.0, 29.1], [31.0, 31.1]), kd_student_p=0.03
  )
  assert below.status == rb.FAILS
  assert "KD − student (-1.00 dB, paired p = 0.03) is below zero" in below.sentence


def test_one_seed_resolves_no_gap_and_ssim_is_judged_with_four_digits():
  one = rb.ordering_verdict(per_seed([20.0], [30.0], [30.5], [31.0]))
  assert one.status == rb.NO_GAP and "one seed gives no seed spread" in one.sentence
  ssim = rb.ordering_verdict(per_seed([0.6, 0.6], [0.90, 0.91], [0.93, 0.94], [0.95, 0.96]), "SSIM")
  assert ssim.status == rb.REPRODUCES
  assert f"SSIM ZF 0.6000, student 0.9050 ± {np.std([0.90, 0.91], ddof=1):.4f}" in ssim.sentence


def test_ordering_verdict_is_summary_verdict_of_the_seed_means_and_stds():
  means = per_seed([20.0] * 3, [30.0, 30.3, 29.9], [30.4, 30.2, 30.9], [31.0, 30.1, 31.4])
  summary = {m: (float(np.mean(v)), float(np.std(v, ddof=1))) for m, v in means.items()}
  assert rb.ordering_verdict(means, "PSNR", 0.04) == rb.summary_verdict(summary, 3, "PSNR", 0.04)


# --- re-deriving a committed verdict, and the recorded masks / imitation objective ---------------


def two_seed_runs(root):
  """4x: a clean ordering; 8x: KD above the teacher (per-volume PSNR, 2 seeds)."""
  for seed, up in ((42, 0.0), (43, 0.1)):
    fake_run(root, "4x", seed, metrics([20, 21, 22], [32 + up] * 3, [30 + up] * 3, [31 + up] * 3))
    fake_run(root, "8x", seed, metrics([20, 21, 22], [31 + up] * 3, [30 + up] * 3, [31.5 + up] * 3))


def collect_two_seeds(root, out):
  argv = ["--collect-only", "--workdir", str(root), "--accs", "4x,8x", "--seeds", "42,43"]
  assert rb.main(argv + ["--out", str(out)]) == 0
  return out.read_text()


def test_the_written_verdict_does_not_call_kd_above_the_teacher_a_reproduction(tmp_path):
  two_seed_runs(tmp_path)  # T > S and KD > S at both accs: the old verdict said "reproduces"
  stats = rb.table_stats(
    {
      (a, s): rb.read_volumes(rb.run_dir(str(tmp_path), "cpu", a, s))
      for a in ("4x", "8x")
      for s in (42, 43)
    }
  )
  text = rb.verdict(stats, ["4x", "8x"], "gpu")
  assert "reproduces at every" not in text
  assert "PSNR ordering reproduces at 4x, where KD closes 50 % of the teacher–student gap" in text
  assert "; not at 8x: no resolvable teacher–student gap." in text and "150 %" not in text


def verdict_section(text):
  return text.split("## Verdict\n", 1)[1].split("\n## ", 1)[0]


def test_reverdict_rederives_the_verdict_from_the_tables_and_changes_nothing_else(tmp_path):
  two_seed_runs(tmp_path)
  out = tmp_path / "brain.md"
  written = collect_two_seeds(tmp_path, out)
  masks = written.split("). ", 1)[1].split(" Data: ")[0] + " "
  old = written.replace(verdict_section(written), "\nKD reproduces everywhere (old verdict).\n\n")
  out.write_text(old.replace(masks, "", 1))  # as committed: an old verdict, no masks sentence
  assert rb.main(["--reverdict", str(out)]) == 0
  text = out.read_text()
  new, fresh = verdict_section(text), verdict_section(written)
  assert "old verdict" not in new and "--reverdict" in new
  assert "No measured number was changed" in new
  assert "with `python -m experiments.reproduce_brain --reverdict " in new  # the module form
  ssim_status = lambda ln: ln.split(" SSIM ")[1].split(" — ")[0].rsplit(": ", 1)[1]  # noqa: E731
  for acc, status in (("4x", rb.REPRODUCES), ("8x", rb.NO_GAP)):
    line = next(ln for ln in new.split("\n") if ln.startswith(f"- At {acc}"))
    from_runs = next(ln for ln in fresh.split("\n") if ln.startswith(f"- At {acc}"))
    assert line.split(" SSIM ")[0] == from_runs.split(" SSIM ")[0]  # PSNR: no rounding here
    assert f"dB: {status} — " in line and ssim_status(line) == ssim_status(from_runs) == status
  # Outside the verdict only the masks sentence differs: the runs have no config.json, so they
  # predate both fields (the reverdicted file says so as well).
  assert "every run predates the field, so `gaussian`" in masks
  assert text.replace(new, "") == written.replace(fresh, "")
  again = out.read_text()
  assert rb.main(["--reverdict", str(out)]) == 0
  assert verdict_section(out.read_text()).split("This verdict")[0] == new.split("This verdict")[0]
  assert out.read_text().replace(verdict_section(out.read_text()), "") == again.replace(
    verdict_section(again), ""
  )  # idempotent
  with pytest.raises(rb.common.InputError, match="no such file"):
    rb.main(["--reverdict", str(tmp_path / "missing.md")])
  (tmp_path / "other.md").write_text("# something else\n")
  with pytest.raises(rb.common.InputError, match="names no known setting"):
    rb.main(["--reverdict", str(tmp_path / "other.md")])


def test_reverdict_of_an_unchanged_verdict_leaves_the_file_byte_for_byte(tmp_path):
  two_seed_runs(tmp_path)
  out = tmp_path / "brain.md"
  written = collect_two_seeds(tmp_path, out)
  out.write_text(written.replace(verdict_section(written), "\nold verdict\n\n"))
  assert rb.main(["--reverdict", str(out)]) == 0
  once = out.read_text()
  dated = once.replace("re-derived on 20", "re-derived on 19", 1)  # as if derived long ago
  out.write_text(dated)
  assert rb.main(["--reverdict", str(out)]) == 0
  assert out.read_text() == dated  # the same verdict keeps its note: no new date, no change


def test_reverdict_of_a_damaged_table_is_one_sentence(tmp_path):
  two_seed_runs(tmp_path)
  out = tmp_path / "brain.md"
  written = collect_two_seeds(tmp_path, out)
  out.write_text(written.replace("| Seeds |", "| Seedz |", 1))
  with pytest.raises(rb.common.InputError, match="tables are not as this script writes them"):
    rb.main(["--reverdict", str(out)])
  out.write_text(written.replace("## Verdict\n", "## Verdikt\n", 1))
  with pytest.raises(rb.common.InputError, match="no section '## Verdict'"):
    rb.main(["--reverdict", str(out)])


def test_the_setting_line_names_each_runs_masks_and_imitation_objective(tmp_path):
  two_seed_runs(tmp_path)
  records = {
    42: {"data": {"mask_family": "dccnn"}, "kd": {"imitation": "authors_code"}},
    43: {"data": {"mask_family": "dccnn"}, "kd": {}},
  }  # seed 43 predates kd.imitation
  for seed, config in records.items():
    with open(os.path.join(rb.run_dir(str(tmp_path), "cpu", "4x", seed), "config.json"), "w") as f:
      json.dump(config, f)
  assert rb.run_record(rb.run_dir(str(tmp_path), "cpu", "4x", 42)) == {
    "data.mask_family": "dccnn",
    "kd.imitation": "authors_code",
  }
  text = collect_two_seeds(tmp_path, tmp_path / "brain.md")
  setting_line = next(ln for ln in text.split("\n") if ln.startswith("Setting **cpu**"))
  assert (
    "Masks `config.data.mask_family` = `dccnn` (4x seed 42, 4x seed 43), `gaussian` (8x "
    "seed 42, 8x seed 43) (8x seed 42, 8x seed 43 predate the field, so `gaussian`: "
    "kdmri_jax's earlier generated masks)"
  ) in setting_line
  assert (
    "imitation objective `config.kd.imitation` = `authors_code` (4x seed 42), `paper` (4x "
    "seed 43, 8x seed 42, 8x seed 43)"
  ) in setting_line


def test_the_command_line_keeps_its_flags_in_their_order():
  flags = [a.option_strings[-1] for a in rb.build_parser()._actions if a.option_strings]
  assert flags == [
    "--help",
    "--setting",
    "--accs",
    "--seeds",
    "--workdir",
    "--set",
    "--note",
    "--studies-acc",
    "--methods",
    "--curves-workdir",
    "--collect-only",
    "--parallel",
    "--stop-after",
    "--out",
    "--overwrite",
    "--dry-run",
    "--reverdict",
  ]
  args = rb.build_parser().parse_args([])
  assert (args.setting, args.accs, args.seeds, args.parallel) == ("cpu", "4x,5x,8x", "42,43,44", 1)
  assert args.out == os.path.join(rb.common.RESULTS, "brain.md")
