"""Reproduces KD-MRI's brain table (Murugesan et al. 2020, Table 1) on the embedded MNI brain data
at 4x, 5x and 8x with several seeds, and writes experiments/results/brain.md.

  python -m experiments.reproduce_brain --setting cpu --accs 4x,8x,5x --seeds 42,43,44
  python -m experiments.reproduce_brain --setting paper   # configs/brain_{acc}.py, for a GPU
  python -m experiments.reproduce_brain --setting gpu --seeds 42,43 --parallel 3
                                                          # 240×240, 30 epochs, one GPU
  python -m experiments.reproduce_brain --setting cpu --collect-only --overwrite
  python -m experiments.reproduce_brain --reverdict experiments/results/brain.md   # no runs needed

Each (acc, seed) is one `python -m kdmri_jax.main` run (stages teacher, student, feature, kd,
evaluate, report) in WORKDIR/<setting>/acc_<acc>/seed_<seed>/, with `--config.train.seed=SEED`
(parameter init and data order). Rerunning resumes: main skips finished stages. The table collects
the evaluate stage's per-volume PSNR/SSIM of ZF, teacher, student and KD from every finished run;
missing runs are marked "not run". Statistics (gap closed, paired test) are in `table_stats` so
tests can check them without training. The verdict applies one rule (`ordering_verdict`) per acc and
metric: the paper's ordering ZF < student < KD < teacher, each step beyond the seed spread.
`--reverdict FILE` re-derives a written table's verdict from its own numbers when the run folders
are gone. The setting line names each run's `config.data.mask_family` and `config.kd.imitation`
(from its config.json). Nothing here is tuned on validation: the checkpoints are the pipeline's best
by validation loss, as in the paper.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import shlex
import sys
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from experiments import (
  brain_figures,  # the qualitative figures and training curves
  brain_studies,  # the ablation and methods at one acc
  common,  # the shared run/collect helpers
)
from experiments.brain_studies import ALPHA, p_text, paired_p, resolve  # the one rule, its p
from experiments.seed_stats import mean_std, paired_test
from kdmri_jax.errors import InputError, require, run_cli

ACCS = ("4x", "5x", "8x")
SEEDS = (42, 43, 44)
METHODS = (("zf", "ZF"), ("teacher", "Teacher"), ("student", "Student"), ("kd", "KD"))
TRAINED = ("teacher", "student", "feature", "kd")


class Setting(NamedTuple):
  config: Callable[[str], str]  # acc -> config file
  overrides: tuple[str, ...]  # added to every run's command
  epochs: int  # per stage
  description: str  # for the table
  device: str = "CPU"  # what it is sized for: "CPU" or "GPU" (the verdict's and wall-time notes)


SETTINGS = {
  "paper": Setting(
    lambda acc: f"configs/brain_{acc}.py",
    (),
    150,
    "the paper's settings (configs/brain_{acc}.py: 240×240, all "
    "slices, 150 epochs per stage, lr 1e-3 ×0.1 every 40 epochs)",
    "GPU",
  ),
  "cpu": Setting(
    lambda acc: "configs/brain_cpu.py",
    (),
    10,
    "a reduced CPU setting (configs/brain_cpu.py with `acc` overridden: 64×64 images, 200 of the "
    "300 training slices, all 30 validation slices in 3 volumes, 10 epochs per stage, lr 1e-3 ×0.1 "
    "after epoch 8; the paper's models, AT layer pairs and α = 0.5)",
  ),
  "cpu_long": Setting(
    lambda acc: "configs/brain_cpu.py",
    ("train.num_epochs=40", "train.lr_step_epochs=30"),
    40,
    "a longer CPU setting (configs/brain_cpu.py with `acc` overridden and 40 epochs per stage, lr "
    "1e-3 ×0.1 after epoch 30: 64×64 images, 200 of the 300 training slices, all 30 "
    "validation slices in 3 volumes; the paper's models, AT layer pairs and α = 0.5; about "
    "20 min per run on 2 CPU cores)",
  ),
  "gpu": Setting(
    lambda acc: f"configs/brain_{acc}.py",
    ("train.num_epochs=30", "train.lr_step_epochs=22", "data.num_workers=4"),
    30,
    "a reduced GPU setting (configs/brain_{acc}.py — the paper's 240×240 images, all 300 training "
    "and 30 validation slices, batch 4, Adam 1e-3 — with 30 instead of 150 epochs per stage, lr "
    "×0.1 after epoch 22; the paper's models, AT layer pairs and α = 0.5; about 4 minutes per run "
    "on an H200, three runs side by side)",
    "GPU",
  ),
}
# Paper, Table 1 (brain, DC-CNN, MRBrainS 240×240): PSNR / SSIM per acc (Murugesan et al. 2020,
# arXiv 2004.05319).
PAPER_BRAIN = {
  "zf": {"4x": (31.38, 0.6651), "5x": (29.93, 0.6304), "8x": (29.37, 0.6065)},
  "teacher": {"4x": (40.03, 0.9781), "5x": (39.03, 0.971), "8x": (35.04, 0.9374)},
  "student": {"4x": (39.36, 0.9753), "5x": (38.58, 0.9674), "8x": (34.39, 0.9281)},
  "kd": {"4x": (39.8, 0.977), "5x": (38.78, 0.9688), "8x": (34.83, 0.9337)},
}
PAPER_GAP = "44–68 %"
PLATEAU_DB = 0.1  # a teacher gaining less over its last 3 epochs has levelled off


def run_dir(root: str, setting: str, acc: str, seed: int) -> str:
  return os.path.join(root, setting, f"acc_{acc}", f"seed_{seed}")


def run_command(
  setting: str, acc: str, seed: int, workdir: str, overrides: Sequence[str] = ()
) -> list[str]:
  return common.main_command(
    SETTINGS[setting].config(acc), workdir, run_overrides(setting, acc, seed, overrides)
  )


def run_overrides(setting: str, acc: str, seed: int, overrides: Sequence[str] = ()) -> list[str]:
  return [
    f"acc={acc}",
    f"train.seed={seed}",
    "train.progress_bar=false",
    *SETTINGS[setting].overrides,
    *overrides,
  ]


def study_base(setting: str, acc: str) -> str:
  """The base config of the ablation/methods rows: the one the setting's runs use."""
  return os.path.splitext(os.path.basename(SETTINGS[setting].config(acc)))[0]


# --- collecting -----------------------------------------------------------------------------------


def read_volumes(workdir: str) -> dict | None:
  """{method: {'params': n, 'volumes': {name: {'PSNR': x, 'SSIM': y}}}} of a finished run, else
  None."""
  out = {method: brain_studies.read_method(workdir, method) for method, _ in METHODS}
  return None if None in out.values() else out


def run_means(run: dict) -> dict:
  """{method: {'PSNR': mean over volumes, 'SSIM': ...}} of one run (the paper's per-run number)."""
  return {
    m: {k: float(np.mean([v[k] for v in run[m]["volumes"].values()])) for k in ("PSNR", "SSIM")}
    for m in run
  }


def gap_closed(teacher: float, student: float, kd: float) -> float | None:
  """Fraction of the teacher–student gap the KD student closes: (KD − S) / (T − S); None when T <= S
  (no gap to close: the fraction would be meaningless or flip sign)."""
  if teacher - student <= 0:
    return None
  return (kd - student) / (teacher - student)


def table_stats(runs: dict) -> dict:
  """Everything the tables show, from {(acc, seed): run or None}: per acc the per-method PSNR/SSIM
  mean ± std over seeds (of each run's mean over volumes), the seeds used, the gap closed (of the
  seed means, and per seed), and the KD-vs-student paired test over (seed, volume) pairs."""
  stats = {}
  for acc in sorted({a for a, _ in runs}, key=lambda a: float(a.rstrip("x"))):
    done = {s: r for (a, s), r in sorted(runs.items()) if a == acc and r is not None}
    entry = {
      "seeds": sorted(done),
      "missing": sorted(s for (a, s), r in runs.items() if a == acc and r is None),
    }
    means = {s: run_means(r) for s, r in done.items()}
    for method, _ in METHODS:
      for key in ("PSNR", "SSIM"):
        entry[(method, key)] = mean_std([means[s][method][key] for s in done])
    if done:
      psnr = {m: entry[(m, "PSNR")][0] for m, _ in METHODS}
      entry["gap"] = gap_closed(psnr["teacher"], psnr["student"], psnr["kd"])
      entry["gap_per_seed"] = {
        s: gap_closed(
          means[s]["teacher"]["PSNR"], means[s]["student"]["PSNR"], means[s]["kd"]["PSNR"]
        )
        for s in done
      }
      pairs = [
        (r["kd"]["volumes"][v]["PSNR"], r["student"]["volumes"][v]["PSNR"])
        for r in done.values()
        for v in sorted(r["kd"]["volumes"])
      ]
      entry["test"] = paired_test([p[0] for p in pairs], [p[1] for p in pairs])
      ssim_pairs = [
        (r["kd"]["volumes"][v]["SSIM"], r["student"]["volumes"][v]["SSIM"])
        for r in done.values()
        for v in sorted(r["kd"]["volumes"])
      ]
      entry["test_ssim"] = paired_test([p[0] for p in ssim_pairs], [p[1] for p in ssim_pairs])
      entry["params"] = {m: next(iter(done.values()))[m]["params"] for m, _ in METHODS}
    stats[acc] = entry
  return stats


def _cell(value: tuple[float, float] | None, digits: int) -> str:
  return "not run" if value is None else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def acc_head(accs: Sequence[str]) -> list[str]:
  """The heading of the paper's layout: Method, then acc × (PSNR, SSIM)."""
  return ["Method"] + [f"{acc} {k}" for acc in accs for k in ("PSNR (dB)", "SSIM")]


def main_table(stats: dict, accs: Sequence[str]) -> str:
  """The paper's layout: rows ZF/Teacher/Student/KD, columns acc × (PSNR, SSIM)."""
  lines = common.table_head(acc_head(accs))
  for method, label in METHODS:
    cells = [label]
    for acc in accs:
      entry = stats.get(acc, {})
      cells += [_cell(entry.get((method, "PSNR")), 2), _cell(entry.get((method, "SSIM")), 4)]
    lines.append(common.table_row(cells))
  seeds = ["Seeds"] + [
    x
    for acc in accs
    for x in (", ".join(map(str, stats.get(acc, {}).get("seeds", []))) or "none", "")
  ]
  lines.append(common.table_row(seeds))
  return "\n".join(lines)


def paper_table(accs: Sequence[str]) -> str:
  """The paper's brain numbers (MRBrainS, not our data) in the same layout, with its gap closed."""
  lines = common.table_head(acc_head(accs))
  for method, label in METHODS:
    cells = [label]
    for acc in accs:
      psnr, ssim = PAPER_BRAIN[method].get(acc, (None, None))
      cells += ["—" if psnr is None else f"{psnr:.2f}", "—" if ssim is None else f"{ssim:.4f}"]
    lines.append(common.table_row(cells))
  gaps = ["Gap closed"]
  for acc in accs:
    t, s, k = (PAPER_BRAIN[m].get(acc, (None,))[0] for m in ("teacher", "student", "kd"))
    g = None if None in (t, s, k) else gap_closed(t, s, k)
    gaps += ["—" if g is None else f"{100 * g:.0f} %", ""]
  lines.append(common.table_row(gaps))
  return "\n".join(lines)


GAP_COLUMNS = (
  "Acc",
  "Seeds",
  "T − S (dB)",
  "KD − S (dB)",
  "Gap closed (KD−S)/(T−S)",
  "Per seed",
  "KD > S (pairs)",
  "Wilcoxon p (PSNR)",
  "paired t p (PSNR)",
  "Wilcoxon p (SSIM)",
)


def gap_table(stats: dict, accs: Sequence[str]) -> str:
  """Per acc: the teacher–student gap, the share KD closes, and the KD-vs-student paired tests."""
  lines = common.table_head(GAP_COLUMNS)
  for acc in accs:
    entry = stats.get(acc)
    if not entry or not entry["seeds"]:
      lines.append(common.table_row([acc, "none"] + ["not run"] * (len(GAP_COLUMNS) - 2)))
      continue
    t, s, k = (entry[(m, "PSNR")][0] for m in ("teacher", "student", "kd"))
    gap = "T ≤ S: undefined" if entry["gap"] is None else f"{100 * entry['gap']:.0f} %"
    per_seed = ", ".join(
      f"{seed}: {'—' if g is None else f'{100 * g:.0f} %'}"
      for seed, g in entry["gap_per_seed"].items()
    )
    test = entry["test"]
    cells = [
      acc,
      ", ".join(map(str, entry["seeds"])),
      f"{t - s:+.2f}",
      f"{k - s:+.2f}",
      gap,
      per_seed,
      f"{test['wins']}/{test['n']}",
      p_text(test["wilcoxon_p"]) + f" (min {test['min_p']:.2g})",
      p_text(test["t_p"]),
      p_text(entry["test_ssim"]["wilcoxon_p"]),
    ]
    lines.append(common.table_row(cells))
  return "\n".join(lines)


def params_line(stats: dict) -> str:
  for entry in stats.values():
    if entry.get("params"):
      p = entry["params"]
      return (
        f"Parameters: teacher {p['teacher']:,}, student {p['student']:,}, "
        f"KD student {p['kd']:,} (KD student = student architecture; "
        f"{p['teacher'] / p['student']:.2f}× fewer than the teacher)."
      )
  return "Parameters: no finished run."


WALL_COLUMNS = (
  "Acc",
  "Seed",
  "Status",
  "Training epochs (s): teacher / student / feature / kd",
  "Run wall (s)",
)


def recorded_wall(workdir: str) -> float | None:
  """The run wall seconds `common.timed_run` remembered in WORKDIR/wall_seconds.json, if any."""
  path = os.path.join(workdir, "wall_seconds.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get("seconds")


def wall_table(root: str, setting: str, accs: Sequence[str], seeds: Sequence[int]) -> str:
  """Per (acc, seed): finished or not, each stage's training seconds and the run's wall time."""
  lines = common.table_head(WALL_COLUMNS)
  for acc in accs:
    for seed in seeds:
      workdir = run_dir(root, setting, acc, seed)
      finished = read_volumes(workdir) is not None
      status = (
        "finished" if finished else ("partial (stopped)" if os.path.isdir(workdir) else "not run")
      )
      epochs = [common.stage_seconds(workdir, [s]) for s in TRAINED]
      wall = recorded_wall(workdir)
      cells = [
        acc,
        str(seed),
        status,
        " / ".join("—" if e is None else f"{e:.0f}" for e in epochs),
        "—" if wall is None else f"{wall:.0f}",
      ]
      lines.append(common.table_row(cells))
  return "\n".join(lines)


def setting_epochs(setting: str, overrides: Sequence[str] = ()) -> int:
  """Epochs per stage of `setting`, after any `train.num_epochs=N` override (the last one wins)."""
  epochs = SETTINGS[setting].epochs
  for override in (*SETTINGS[setting].overrides, *overrides):
    field, _, value = override.partition("=")
    if field.strip() == "train.num_epochs":
      epochs = int(value)
  return epochs


# --- the verdict rule ---------------------------------------------------------------------------

ORDERING = ("zf", "student", "kd", "teacher")  # the paper's ordering per metric, worst to best
REPRODUCES = "reproduces"
NO_GAP = "no resolvable teacher–student gap"
NOT_RESOLVED = "not resolved"
FAILS = "fails"
RULE = (
  "Rule (`ordering_verdict`): a step of the paper's ordering ZF < student < KD < teacher holds "
  "when the higher model's seed-mean exceeds the lower one's by more than the larger of their "
  "two stds over seeds (so at least 2 seeds are needed), and for KD − student also when the "
  f'paired Wilcoxon test over (seed, volume) pairs gives p < {ALPHA}. "Reproduces" needs every '
  "step; a teacher − student difference inside that spread, or KD above the teacher (gap closed "
  'over 100 %), is "no resolvable teacher–student gap"; a step inside the spread is "not '
  'resolved"; ZF not below the student, or KD below the student by more than the spread, '
  '"fails". PSNR and SSIM are judged separately.'
)


class Ordering(NamedTuple):
  status: str  # REPRODUCES, NO_GAP, NOT_RESOLVED or FAILS
  sentence: str  # the numbers and every step that does not hold


def ordering_verdict(
  per_seed: Mapping[str, Sequence[float]], metric: str = "PSNR", kd_student_p: float | None = None
) -> Ordering:
  """The paper's ordering at one acc from each model's per-seed means ({'zf', 'student', 'kd',
  'teacher'}: one value per seed) of `metric`; `kd_student_p`: the paired test of KD vs student
  (None: judge by the spread alone)."""
  summary = {m: mean_std([float(v) for v in per_seed[m]]) for m in ORDERING}
  seeds = min(len(per_seed[m]) for m in ORDERING)
  return summary_verdict(summary, seeds, metric, kd_student_p)


class Shown(NamedTuple):
  """How a verdict writes one metric's numbers."""

  digits: int
  unit: str

  def num(self, x: float) -> str:
    return f"{x:.{self.digits}f}"

  def signed(self, x: float) -> str:
    return f"{x:+.{self.digits}f}{self.unit}"


def shown_as(metric: str) -> Shown:
  return Shown(2, " dB") if metric == "PSNR" else Shown(4, "")


def unresolved(
  name: str,
  lower: tuple[float, float],
  upper: tuple[float, float],
  seeds: int,
  shown: Shown,
  p: float | None = None,
) -> tuple[str, str] | None:
  """None when `resolve` finds `upper` above `lower`, else (its outcome, 'NAME (+d) is ...': why
  not)."""
  outcome = resolve(lower, upper, seeds, p)
  if outcome == "above":
    return None
  diff, spread = upper[0] - lower[0], max(lower[1], upper[1])
  spread_text = f"{shown.num(spread)}{shown.unit}"
  why = {
    "one seed": "not resolvable: one seed gives no seed spread",
    "spread": f"inside the larger seed std ({spread_text})",
    "p": f"outside the seed spread but not significant (p ≥ {ALPHA})",
  }.get(outcome, f"{outcome} zero by more than the seed spread ({spread_text})")
  shown_p = "" if p is None else f", paired p = {p:.3g}"
  return outcome, f"{name} ({shown.signed(diff)}{shown_p}) is {why}"


def ordering_steps(
  summary: Mapping[str, tuple[float, float]], seeds: int, shown: Shown, kd_student_p: float | None
) -> tuple[list[str], list[str], list[str], list[str]]:
  """The steps of the ordering that do not hold, as phrases grouped by what they make the verdict:
  (zero-filling failures, no gap, failures, not resolved)."""
  z, s, k, t = (summary[m] for m in ORDERING)
  zf_fails, no_gap, fails, inside = [], [], [], []
  if z[0] >= s[0]:
    zf_fails.append(
      f"zero-filling ({shown.num(z[0])}) is "
      f"{'above' if z[0] > s[0] else 'level with'} the student ({shown.num(s[0])})"
    )
  elif miss := unresolved("student − ZF", z, s, seeds, shown):
    inside.append(miss[1])
  if miss := unresolved("teacher − student", s, t, seeds, shown):
    no_gap.append(miss[1])
  if k[0] > t[0]:
    no_gap.append(
      f"KD is above the teacher ({shown.signed(k[0] - t[0])}), so the gap closed "
      "would be over 100 %"
    )
  if miss := unresolved("KD − student", s, k, seeds, shown, kd_student_p):
    (fails if miss[0] == "below" else inside).append(miss[1])
  if k[0] <= t[0] and (miss := unresolved("teacher − KD", k, t, seeds, shown)):
    inside.append(miss[1])
  return zf_fails, no_gap, fails, inside


def summary_verdict(
  summary: Mapping[str, tuple[float, float]],
  seeds: int,
  metric: str = "PSNR",
  kd_student_p: float | None = None,
) -> Ordering:
  """ordering_verdict from each model's (mean, std) over `seeds` seeds: what a table holds."""
  shown = shown_as(metric)
  zf_fails, no_gap, fails, inside = ordering_steps(summary, seeds, shown, kd_student_p)
  if zf_fails or (fails and not no_gap):
    status = FAILS
  else:
    status = NO_GAP if no_gap else NOT_RESOLVED if inside else REPRODUCES
  num = shown.num
  z, s, k, t = (summary[m] for m in ORDERING)
  numbers = (
    f"{metric} ZF {num(z[0])}, student {num(s[0])} ± {num(s[1])}, KD {num(k[0])} ± "
    f"{num(k[1])}, teacher {num(t[0])} ± {num(t[1])}{shown.unit}"
  )
  if status == REPRODUCES:
    return Ordering(
      status,
      f"{numbers}: {status} — every step exceeds the seed spread (teacher − "
      f"student {shown.signed(t[0] - s[0])}).",
    )
  reasons = "; ".join(zf_fails + no_gap + fails + inside)
  return Ordering(status, f"{numbers}: {status} — {reasons}.")


def acc_orderings(entry: dict) -> dict[str, Ordering]:
  """{'PSNR': Ordering, 'SSIM': Ordering} of one acc of table_stats (a paired test without any
  difference counts as p = 1)."""
  out = {}
  for metric, test in (("PSNR", "test"), ("SSIM", "test_ssim")):
    summary = {m: entry[(m, metric)] for m in ORDERING}
    out[metric] = summary_verdict(summary, len(entry["seeds"]), metric, paired_p(entry[test]))
  return out


def ordering_summary(orderings: dict, stats: dict, metric: str) -> str:
  """One sentence per metric: where the whole ordering reproduces (the gap closed there only)."""
  good = [a for a in orderings if orderings[a][metric].status == REPRODUCES]
  others = ", ".join(f"{a}: {o[metric].status}" for a, o in orderings.items() if a not in good)
  if not good:
    return f"The paper's whole {metric} ordering reproduces at no acceleration run ({others})."
  where = f"every acceleration run ({', '.join(good)})" if not others else ", ".join(good)
  text = f"The paper's whole {metric} ordering reproduces at {where}"
  if metric == "PSNR":
    closed = ", ".join(f"{100 * stats[a]['gap']:.0f} %" for a in good)
    text += f", where KD closes {closed} of the teacher–student gap (paper: {PAPER_GAP})"
  return text + (f"; not at {others}." if others else ".")


def no_gap_text(no_gap: Sequence[str], teacher_gains: dict | None, epochs: int) -> str:
  """Why a teacher–student gap may be missing: an unconverged teacher or a levelled-off one."""
  gains = {a: g for a, g in (teacher_gains or {}).items() if a in no_gap and g is not None}
  rising = [a for a, g in gains.items() if g > PLATEAU_DB]
  flat = [a for a, g in gains.items() if g <= PLATEAU_DB]
  shown = lambda accs: ", ".join(f"{gains[a]:+.2f} dB" for a in accs)  # noqa: E731
  text = (
    f" Where no teacher–student gap is resolvable in PSNR ({', '.join(no_gap)}), KD has "
    "nothing measurable to transfer, so the gap closed there says nothing about the paper's "
    "claim."
  )
  if rising:
    text += (
      f" At {', '.join(rising)} the teacher's validation PSNR was still rising at the end "
      f"({shown(rising)} over its last 3 epochs): the {epochs}-epoch schedule is too short "
      "for the deeper D5C5 teacher."
    )
  if flat:
    text += (
      f" At {', '.join(flat)} the teacher had levelled off ({shown(flat)} over its last 3 "
      "epochs), so more epochs of this schedule alone are unlikely to open a gap."
    )
  if not gains:
    text += " (No training curves were found to tell an unconverged teacher from a converged one.)"
  return text


def caveat(stats: dict, ran: Sequence[str], setting: str, epochs: int, reproduced: bool) -> str:
  """What the reduced setting can and cannot say."""
  seeds = min(len(stats[a]["seeds"]) for a in ran)
  runs = f"{seeds} seed{'s' * (seeds > 1)}"
  if reproduced:
    text = (
      f" This is {runs} of the reduced setting `{setting}` ({epochs} epochs per stage), not "
      "the paper's 150-epoch schedule; with at most 3 volumes per seed the paired test has "
      "little power."
    )
  else:
    text = (
      f" All of this is the reduced setting `{setting}` ({runs}, {epochs} epochs per stage), "
      "not the paper's 150-epoch schedule: the paper's claim is neither confirmed nor "
      "refuted by it; with at most 3 volumes per seed the paired test has little power."
    )
  if SETTINGS[setting].device == "GPU":
    return text + (
      " The paper's full schedule (`--setting paper`, 4 stages × 150 epochs per run) "
      "has not been run: it needs more GPU time than was lent."
    )
  return text + " The paper's setting (`--setting paper`) needs a GPU and has not been run here."


def trends_text(stats: dict, ran: Sequence[str]) -> str:
  """What holds at any scale: learning beats zero-filling, and harder undersampling costs dB."""
  gains = [
    stats[a][(m, "PSNR")][0] - stats[a][("zf", "PSNR")][0]
    for a in ran
    for m in ("teacher", "student", "kd")
  ]
  text = (
    f" Every trained model improves on zero-filling by {min(gains):.1f}–{max(gains):.1f} dB PSNR"
    f"{' at every acceleration run' if len(ran) > 1 else ''}, as in the paper."
  )
  by_acc = sorted(ran, key=lambda a: float(a.rstrip("x")))
  if len(by_acc) > 1:
    falls = all(
      stats[a][("student", "PSNR")][0] > stats[b][("student", "PSNR")][0]
      for a, b in zip(by_acc, by_acc[1:])
    )
    text += (
      f" The student's PSNR {'falls' if falls else 'does not fall monotonically'} with "
      f"acceleration ({', '.join(by_acc)}){', as in the paper' if falls else ''}."
    )
  return text


def verdict(
  stats: dict,
  accs: Sequence[str],
  setting: str,
  teacher_gains: dict | None = None,
  epochs: int | None = None,
) -> str:
  """The verdict section from the numbers: per acc and metric the status of the paper's ordering
  (`ordering_verdict`'s rule). `teacher_gains` ({acc: validation PSNR gained over the teacher's
  last 3 epochs}) tells an unconverged teacher from a levelled-off one. `epochs`: per stage."""
  epochs = epochs or setting_epochs(setting)
  ran = [a for a in accs if stats.get(a, {}).get("seeds")]
  missing = [a for a in accs if a not in ran]
  if not ran:
    return "No run has finished, so nothing can be said yet."
  orderings = {a: acc_orderings(stats[a]) for a in ran}
  lines = []
  for a in ran:
    n = len(stats[a]["seeds"])
    lines.append(
      f"- At {a} ({n} seed{'s' * (n > 1)}): {orderings[a]['PSNR'].sentence} "
      f"{orderings[a]['SSIM'].sentence}"
    )
  summaries = [ordering_summary(orderings, stats, metric) for metric in ("PSNR", "SSIM")]
  text = " ".join(summaries) + trends_text(stats, ran)
  if missing:
    text += f" Not run: {', '.join(missing)} — no claim is made there."
  if setting != "paper":
    no_gap = [a for a in ran if orderings[a]["PSNR"].status == NO_GAP]
    if no_gap:
      text += no_gap_text(no_gap, teacher_gains, epochs)
    reproduced = all(orderings[a]["PSNR"].status == REPRODUCES for a in ran)
    text += caveat(stats, ran, setting, epochs, reproduced)
  return "\n\n".join([RULE, "\n".join(lines), text])


# --- what produced the runs: fields recorded in each run's config.json --------------------------

# (config field, its value in runs that predate the field, what it is)
RECORDED = (
  ("data.mask_family", "gaussian", "masks"),
  ("kd.imitation", "paper", "imitation objective"),
)
PREDATING = {
  "gaussian": "kdmri_jax's earlier generated masks",
  "paper": "the paper's α-weighted imitation objective",
}


def run_record(workdir: str) -> dict:
  """{field: value} of RECORDED from the run's config.json (and the config_<n>.json of reruns with
  a changed config: values joined by '/'); None where no record has the field (it predates it)."""
  values = {field: [] for field, _, _ in RECORDED}
  names = os.listdir(workdir) if os.path.isdir(workdir) else []
  records = sorted(
    (n for n in names if n.startswith("config") and n.endswith(".json")), key=lambda n: (len(n), n)
  )
  for name in records:
    with open(os.path.join(workdir, name)) as f:
      config = json.load(f)
    for field, found in values.items():
      value = config
      for key in field.split("."):
        value = value.get(key) if isinstance(value, dict) else None
      if value is not None and str(value) not in found:
        found.append(str(value))
  return {field: "/".join(found) or None for field, found in values.items()}


def fields_sentence(records: Mapping[str, Mapping[str, str | None]]) -> str:
  """The masks and imitation objective of the runs ({run label: run_record}), for the setting."""
  parts = []
  for field, default, what in RECORDED:
    by_value: dict[str, list[str]] = {}
    for label, record in records.items():
      by_value.setdefault(record.get(field) or default, []).append(label)
    alike = len(by_value) == 1
    shown = ", ".join(
      f"`{value}`" + ("" if alike else f" ({', '.join(labels)})")
      for value, labels in by_value.items()
    )
    predating = [label for label, record in records.items() if record.get(field) is None]
    note = ""
    if predating:
      who = (
        "every run predates"
        if len(predating) == len(records)
        else f"{', '.join(predating)} predate"
      )
      note = f" ({who} the field, so `{default}`: {PREDATING[default]})"
    parts.append(f"{what} `config.{field}` = {shown}{' in every run' if alike else ''}{note}")
  text = "; ".join(parts) + "."
  return text[0].upper() + text[1:]


# --- re-deriving the verdict of a committed brain.md --------------------------------------------

GAP_HEADING = "## KD vs student: gap closed and paired test"


def markdown_table(text: str, heading: str) -> list[list[str]]:
  """The rows (cells, header first, no separator) of the first table after the line `heading`."""
  lines = text.split("\n")
  start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
  require(
    start is not None, f"the markdown has no line {heading!r}; is it a brain.md of this script?"
  )
  rows = []
  for line in lines[start + 1 :]:
    if line.startswith("|"):
      if not set(line) <= set("|-: "):
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    elif rows:
      break
  return rows


def _mean_std(cell: str) -> tuple[float, float] | None:
  """'41.07 ± 0.14' -> (41.07, 0.14); 'not run' -> None."""
  if cell == "not run":
    return None
  mean, _, std = cell.partition("±")
  return float(mean), float(std)


def _p_cell(cell: str) -> float | None:
  """'0.0938 (min 0.031)' -> 0.0938; '—' -> None."""
  word = cell.split()[0] if cell else "—"
  return None if word == "—" else float(word)


def _seeds(cell: str) -> list[int]:
  return [int(s) for s in cell.split(",") if s.strip().isdigit()]


def stats_from_markdown(text: str) -> tuple[str, list[str], dict]:
  """(setting, accs, table_stats-like {acc: entry}) from a brain.md's main and gap tables: the
  seed means ± stds as rounded there, the seeds, and the paired tests' p."""
  match = re.search(r"^Setting \*\*(\w+)\*\*", text, re.M)
  require(
    match is not None and match.group(1) in SETTINGS,
    "the markdown names no known setting ('Setting **NAME**'); is it a brain.md of this script?",
  )
  table = markdown_table(text, f"## Table (setting: {match.group(1)})")
  accs = [head.split()[0] for head in table[0][1::2]]
  rows = {row[0]: row[1:] for row in table[1:]}
  gap_table = markdown_table(text, GAP_HEADING)
  gaps = {row[0]: dict(zip(gap_table[0], row)) for row in gap_table[1:]}
  stats = {}
  for i, acc in enumerate(accs):
    entry = {"seeds": _seeds(rows["Seeds"][2 * i]), "missing": []}
    for method, label in METHODS:
      entry[(method, "PSNR")] = _mean_std(rows[label][2 * i])
      entry[(method, "SSIM")] = _mean_std(rows[label][2 * i + 1])
    if entry["seeds"]:
      gap = gaps[acc]
      wins, n = (int(x) for x in gap["KD > S (pairs)"].split("/"))
      entry["test"] = {
        "wins": wins,
        "n": n,
        "wilcoxon_p": _p_cell(gap["Wilcoxon p (PSNR)"]),
        "t_p": _p_cell(gap["paired t p (PSNR)"]),
        "min_p": 2.0 / 2**n,
      }
      entry["test_ssim"] = {"wilcoxon_p": _p_cell(gap["Wilcoxon p (SSIM)"])}
      entry["gap"] = gap_closed(*(entry[(m, "PSNR")][0] for m in ("teacher", "student", "kd")))
    stats[acc] = entry
  return match.group(1), accs, stats


def gains_from_markdown(text: str) -> dict:
  """{acc: the teacher's last-3-epoch validation PSNR gain} from the curves sentence, if any."""
  match = re.search(r"last 3 epochs of each stage: Teacher (.*?)(?:;|\. )", text)
  if not match:
    return {}
  found = re.findall(r"([+-]?\d+\.\d+) dB \((\w+)\)", match.group(1))
  return {acc: float(gain) for gain, acc in found}


def overrides_from_markdown(text: str) -> list[str]:
  """The `--set` overrides of the reproduce_brain command in the Commands block (epochs)."""
  block = text.split("## Commands", 1)[-1]
  line = next(
    (
      ln
      for ln in block.split("\n")
      if "reproduce_brain.py" in ln or "experiments.reproduce_brain" in ln
    ),
    "",
  )
  words = shlex.split(line) if line else []
  return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--set"]


def studies_from_markdown(text: str) -> str:
  """brain_studies.tables_verdict from a brain.md's ablation and methods tables ('' without)."""
  match = re.search(r"^## Ablation at (\w+):.*$", text, re.M)
  if not match:
    return ""

  def rows(heading):
    table = markdown_table(text, heading)
    column = {name: i for i, name in enumerate(table[0])}
    return [
      (
        row[0],
        {
          "PSNR": _mean_std(row[column["PSNR (dB)"]]),
          "seeds": _seeds(row[column["Seeds"]]),
          "test": {"wilcoxon_p": _p_cell(row[column["Wilcoxon p"]])},
        },
      )
      for row in table[1:]
    ]

  acc = match.group(1)
  return brain_studies.tables_verdict(
    acc, rows(match.group(0)), rows(f"## Feature-distillation methods at {acc}")
  )


def section(text: str, heading: str) -> tuple[int, int]:
  """(start, end) of the body of section `heading` (after its heading line, to the next '## ')."""
  start = text.find(f"\n{heading}\n")
  require(start >= 0, f"the markdown has no section {heading!r}; is it a brain.md of this script?")
  start += len(heading) + 2
  end = text.find("\n## ", start)
  return start, len(text) if end < 0 else end + 1


NOTE_START = "This verdict was re-derived on "


def derivation_note(path: str) -> str:
  """The paragraph under a re-derived verdict: when, where, how and from which numbers."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  return (
    f"{NOTE_START}{now} from this file's own tables — the seed means ± "
    "stds and the paired tests' p as rounded there (so a difference of means can differ by "
    "one unit in the last digit from the gap table's), and the teacher's last-3-epoch gains "
    "of the curves sentence — with `python -m experiments.reproduce_brain --reverdict "
    f"{common.show([path])}` on {common.machine()}, as the run folders were not on that "
    "machine. No measured number was changed."
  )


def reverdict(text: str, path: str) -> str:
  """`text` (a brain.md) with its verdict re-derived by `verdict` and brain_studies.tables_verdict
  from its own tables, a note on how, and the masks/imitation sentence added to the setting line
  when missing (such a file comes from runs that predate both fields). No table changes. A verdict
  that comes out as written keeps its note, so rerunning leaves the file as it is."""
  setting, accs, stats = stats_from_markdown(text)
  studies = studies_from_markdown(text)
  body = verdict(
    stats,
    accs,
    setting,
    gains_from_markdown(text),
    setting_epochs(setting, overrides_from_markdown(text)),
  )
  body += f" {studies}" if studies else ""
  start, end = section(text, "## Verdict")
  written, _, note = text[start:end].strip("\n").partition(f"\n\n{NOTE_START}")
  note = NOTE_START + note if note and written == body else derivation_note(path)
  text = f"{text[:start]}\n{body}\n\n{note}\n\n{text[end:]}"
  if "`config.data.mask_family`" not in text:
    records = {f"{acc} seed {seed}": {} for acc in accs for seed in stats[acc]["seeds"]}
    text = text.replace(
      " Data: the embedded MNI brain",
      f" {fields_sentence(records)} Data: the embedded MNI brain",
      1,
    )
  return text


def curve_runs(args) -> dict:
  """{acc: the run whose logs give the training curves} (first seed, under --curves-workdir)."""
  root = os.path.abspath(args.curves_workdir or args.workdir)
  return {acc: run_dir(root, args.setting, acc, args.seeds[0]) for acc in args.accs}


def teacher_gains(args) -> dict:
  """{acc: the teacher's validation PSNR gain over its last 3 epochs, or None without a curve}."""
  return {
    acc: brain_figures.late_gain(brain_figures.read_curve(os.path.join(w, "teacher", "log.txt")))
    for acc, w in curve_runs(args).items()
  }


def curves_sentence(runs: dict) -> str:
  """How much each model's validation PSNR still rose over its last 3 epochs, per acc."""
  parts = []
  for stage, label in brain_figures.CURVE_STAGES:
    gains = {
      acc: brain_figures.late_gain(brain_figures.read_curve(os.path.join(w, stage, "log.txt")))
      for acc, w in runs.items()
    }
    shown = [f"{g:+.2f} dB ({acc})" for acc, g in gains.items() if g is not None]
    if shown:
      parts.append(f"{label.split(' (')[0]} {', '.join(shown)}")
  if not parts:
    return ""
  return (
    "Validation PSNR gained over the last 3 epochs of each stage: "
    + "; ".join(parts)
    + ". A positive gain at the end of a stage means it stopped before converging."
  )


def figures_section(args, runs_root: str, results_dir: str) -> str:
  """Writes results_dir/brain_figures/ (each acc's qualitative figure from its first finished seed,
  and the training curves of the first seed from --curves-workdir), named by setting so settings
  never overwrite each other's figures, and returns the markdown that shows them."""
  lines, folder = [], os.path.join(results_dir, "brain_figures")
  for acc in args.accs:
    for seed in args.seeds:
      path = os.path.join(folder, f"{args.setting}_{acc}.png")
      if brain_figures.copy_qualitative(run_dir(runs_root, args.setting, acc, seed), path):
        lines.append(f"![{acc}, seed {seed}](brain_figures/{args.setting}_{acc}.png)")
        break
  curves_root = os.path.abspath(args.curves_workdir or args.workdir)
  seed = args.seeds[0]
  runs = curve_runs(args)
  title = f"validation PSNR per epoch, setting {args.setting}, seed {seed}"
  if brain_figures.plot_curves(runs, os.path.join(folder, f"{args.setting}_curves.png"), title):
    lines.append(
      f"Training curves (validation PSNR per epoch; seed {seed}, runs in "
      f"`{common.show([curves_root])}`):\n\n![training "
      f"curves](brain_figures/{args.setting}_curves.png)"
    )
    lines.append(curves_sentence(runs))
  lines = [line for line in lines if line]
  if not lines:
    return ""
  return "\n\n".join(
    [
      "## Figures",
      "Each acceleration's validation slice as the report stage draws it (ZF, "
      "target, teacher, student, KD; PSNR / SSIM of that slice above each image; error maps "
      "below):",
      *lines,
    ]
  )


def read_runs(args, runs_root: str) -> dict:
  """{(acc, seed): read_volumes of that run} over --accs × --seeds (None where unfinished)."""
  return {
    (acc, seed): read_volumes(run_dir(runs_root, args.setting, acc, seed))
    for acc in args.accs
    for seed in args.seeds
  }


def intro_text(args, runs: dict, runs_root: str) -> str:
  """The setting, the runs' masks and imitation objective, the data, how many runs finished and
  how the table's numbers are formed; then the --note lines."""
  records = {
    f"{acc} seed {seed}": run_record(run_dir(runs_root, args.setting, acc, seed))
    for (acc, seed), run in runs.items()
    if run is not None
  }
  finished = sum(r is not None for r in runs.values())
  intro = (
    f"Setting **{args.setting}**: {SETTINGS[args.setting].description}"
    f"{' with ' + ', '.join(f'`{o}`' for o in args.overrides) if args.overrides else ''}. "
    f"{fields_sentence(records) + ' ' if records else ''}"
    f"Data: the embedded MNI brain (no download). "
    f"{finished} of {len(runs)} (acc, seed) runs finished; "
    f'cells of runs that did not finish say "not run". PSNR/SSIM: for each run the mean over the '
    f"validation volumes, then mean ± sample std over "
    f"the seeds shown in the last row (± 0 for one seed)."
  )
  return "\n\n".join([intro, *args.note])


def run_commands(args, runs_root: str) -> list[str]:
  """The `python -m kdmri_jax.main` command of every (acc, seed) run."""
  return [
    common.show(
      run_command(
        args.setting, acc, seed, run_dir(runs_root, args.setting, acc, seed), args.overrides
      )
    )
    for acc in args.accs
    for seed in args.seeds
  ]


def studies_text(args, runs_root: str) -> tuple[str, str]:
  """(the ablation and methods sections, their verdict sentences) at --studies-acc ('' without)."""
  if not args.studies_acc:
    return "", ""
  acc = args.studies_acc
  run_dirs = {seed: run_dir(runs_root, args.setting, acc, seed) for seed in args.seeds}
  rows = brain_studies.study_rows(args.methods)
  commands = [
    common.show(
      brain_studies.study_command(
        key,
        spec,
        study_base(args.setting, acc),
        run_dirs[seed],
        run_overrides(args.setting, acc, seed, args.overrides),
      )
    )
    for seed in args.seeds
    for key, spec in rows.items()
  ]
  sections = brain_studies.sections(run_dirs, acc, args.methods, commands)
  return sections, " " + brain_studies.verdict(run_dirs, acc, args.methods)


def table_paragraphs(stats: dict, args) -> list[str]:
  """The main table, the parameters and the paper's table for reference."""
  return [
    f"## Table (setting: {args.setting})",
    main_table(stats, args.accs),
    params_line(stats),
    "The paper's brain table for reference (MRBrainS, 240×240, 150 epochs per stage; a different "
    "data set, so only the orderings and the gap closed are comparable, not the dB):",
    paper_table(args.accs),
  ]


def gap_paragraphs(stats: dict, accs: Sequence[str]) -> list[str]:
  """The gap table and how its gap closed and paired test are computed."""
  return [
    GAP_HEADING,
    gap_table(stats, accs),
    "Gap closed: (KD − S) / (T − S) of the seed-mean PSNRs (undefined when the teacher is no "
    "better than the student). Paired test: two-sided exact Wilcoxon signed-rank test over (seed, "
    "validation volume) pairs of KD vs student PSNR — chosen over a paired t-test because with 3–9 "
    "pairs normality cannot be checked; the paired t-test p is shown for comparison. The smallest "
    "Wilcoxon p attainable with n pairs is 2/2^n (shown as `min`), so one seed (3 pairs) can never "
    "reach 0.05. Pairs from different seeds share volumes, so they are not fully independent.",
  ]


def wall_paragraphs(args, runs_root: str) -> list[str]:
  """The runs' status and times, and what the times include."""
  shared = (
    "The runs of a GPU setting may have shared one GPU "
    "(`--parallel`), so their times are not single-run times."
    if SETTINGS[args.setting].device == "GPU"
    else "The CPU was shared with other jobs, so times are only indicative."
  )
  return [
    "## Runs and wall time",
    wall_table(runs_root, args.setting, args.accs, args.seeds),
    "Training epochs: the sum of the per-epoch times in each stage's log.txt (no compilation, "
    "validation or evaluation). Run wall: the whole `main` command as timed by this script. "
    + shared,
  ]


def command_paragraphs(args, argv: Sequence[str], commands: Sequence[str]) -> list[str]:
  """This script's command and every run's, then the machine (where the table was collected)."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  collected_where = (
    " (where the table was collected; the runs ran where the introduction says)"
    if args.collect_only
    else ""
  )
  block = [common.script_command(argv, "reproduce_brain"), *commands]
  return [
    "## Commands",
    "```\n" + "\n".join(block) + "\n```",
    f"Machine: {common.machine()}{collected_where}. Written {now}.",
  ]


def collect(args, argv: Sequence[str], runs_root: str) -> str:
  """brain.md from the finished runs under `runs_root`: tables, verdict, studies, figures, times
  and commands."""
  runs = read_runs(args, runs_root)
  stats = table_stats(runs)
  intro = intro_text(args, runs, runs_root)
  commands = run_commands(args, runs_root)
  studies, studies_verdict = studies_text(args, runs_root)
  figures = figures_section(args, runs_root, os.path.dirname(os.path.abspath(args.out)))
  epochs = setting_epochs(args.setting, args.overrides)
  verdict_text = verdict(stats, args.accs, args.setting, teacher_gains(args), epochs)
  paragraphs = [
    "# Reproducing KD-MRI on brain (embedded MNI data)",
    intro,
    *table_paragraphs(stats, args),
    *gap_paragraphs(stats, args.accs),
    "## Verdict",
    verdict_text + studies_verdict,
    *[section for section in (studies, figures) if section],
    *wall_paragraphs(args, runs_root),
    *command_paragraphs(args, argv, commands),
  ]
  return "\n\n".join(paragraphs) + "\n"


def run_all(
  jobs: Sequence[tuple[str, int]],
  run_one: Callable[[str, int], object],
  parallel: int,
  stop: datetime.datetime | None,
  stop_after: str | None,
) -> None:
  """Runs `run_one(acc, seed)` for every job in order, up to `parallel` at once; none starts after
  `stop`. With parallel > 1 each run may use 1/parallel of the accelerator's memory (unless the user
  set XLA_PYTHON_CLIENT_MEM_FRACTION), since JAX would otherwise claim 75 % of it for the first
  run."""
  if parallel > 1:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{min(0.75, 0.9 / parallel):.2f}")

  def guarded(job):
    if stop is not None and datetime.datetime.now(datetime.timezone.utc) >= stop:
      print(f"--stop-after {stop_after} reached; not starting {job[0]} seed {job[1]}.", flush=True)
      return
    run_one(*job)

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    for future in [pool.submit(guarded, job) for job in jobs]:
      future.result()  # the first failed run's one-sentence error, after the others have finished


def write_markdown(path: str, text: str) -> None:
  """Writes `path` whole or not at all (a killed run leaves the old table, never half a new one)."""
  from kdmri_jax.report import write_text_atomic  # here: kdmri_jax.report imports jax

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_text_atomic(path, text)


def rewrite_verdict(path: str) -> int:
  """--reverdict: rewrites `path` in place with `reverdict` (not at all when nothing changes)."""
  require(os.path.isfile(path), f"--reverdict {path}: no such file.")
  with open(path) as f:
    text = f.read()
  try:
    new = reverdict(text, path)
  except (KeyError, IndexError, ValueError) as error:  # a cell or row the tables should have
    raise InputError(
      f"--reverdict {path}: its tables are not as this script writes them "
      f"({type(error).__name__}: {error}); is it a brain.md of this script?"
    ) from None
  if new == text:
    print(f"the verdict of {path} is unchanged")
    return 0
  write_markdown(path, new)
  print(f"rewrote the verdict of {path}")
  return 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
  """Which runs: the setting, accelerations, seeds, their root folder and config overrides."""
  parser.add_argument(
    "--setting",
    choices=sorted(SETTINGS),
    default="cpu",
    help="paper: configs/brain_{acc}.py (GPU); gpu: the same with 30 epochs per stage; cpu: "
    "configs/brain_cpu.py at each acc (10 epochs); cpu_long: the same with 40 epochs",
  )
  parser.add_argument(
    "--accs", default=",".join(ACCS), help="comma-separated accelerations, e.g. 4x,8x"
  )
  parser.add_argument(
    "--seeds", default=",".join(map(str, SEEDS)), help="comma-separated train.seed values"
  )
  parser.add_argument(
    "--workdir",
    default=os.path.join("experiments", "runs", "reproduce_brain"),
    help="root folder; runs go to WORKDIR/<setting>/acc_<acc>/seed_<seed>",
  )
  common.add_override_arguments(
    parser, "a sentence added under the introduction, e.g. how the runs were launched"
  )


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
  """What else the file shows: the ablation and methods at one acc, and whose training curves."""
  parser.add_argument(
    "--studies-acc",
    default=None,
    metavar="ACC",
    help="also run the ablation and the method comparison at this acc (e.g. 8x) on each "
    "seed's finished run, and add their tables",
  )
  common.add_methods_argument(
    parser, "feature-distillation methods of the comparison (default: all)"
  )
  parser.add_argument(
    "--curves-workdir",
    default=None,
    help="root of the runs whose logs give the training curves (default: --workdir)",
  )


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
  """Whether, how many at once and until when the runs run."""
  parser.add_argument(
    "--collect-only", action="store_true", help="only write the table from finished runs"
  )
  parser.add_argument(
    "--parallel",
    type=int,
    default=1,
    metavar="N",
    help="run up to N (acc, seed) runs at once (e.g. 3 on one large GPU, each then limited "
    "to 1/N of its memory through XLA_PYTHON_CLIENT_MEM_FRACTION)",
  )
  parser.add_argument(
    "--stop-after",
    default=None,
    metavar="HH:MM",
    help="start no new run after this UTC time (then collect what finished)",
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  add_run_arguments(parser)
  add_study_arguments(parser)
  add_schedule_arguments(parser)
  common.add_output_arguments(parser, os.path.join(common.RESULTS, "brain.md"), "markdown output")
  parser.add_argument(
    "--reverdict",
    default=None,
    metavar="FILE",
    help="only rewrite FILE's verdict (a brain.md of this script) from its own "
    "tables, for when its run folders are gone; nothing runs, no number "
    "changes",
  )
  return parser


def check_args(args) -> None:
  """Validates the run arguments before any work, turning the lists into Python lists."""
  args.overrides = common.check_overrides(args.overrides)
  from kdmri_jax.masks import parse_acceleration

  args.accs = [a.strip() for a in args.accs.split(",") if a.strip()]
  require(bool(args.accs), "--accs is empty; give e.g. 4x,5x,8x.")
  for acc in args.accs:
    parse_acceleration(acc)  # one sentence for a bad value
  args.seeds = common.parse_seeds(args.seeds)
  require(args.parallel >= 1, f"--parallel {args.parallel} must be at least 1.")
  if args.studies_acc:
    parse_acceleration(args.studies_acc)
    require(
      args.studies_acc in args.accs,
      f"--studies-acc {args.studies_acc} is not one of --accs "
      f"{','.join(args.accs)}; the studies build on that acc's runs.",
    )
  args.methods = common.feature_methods(args.methods)
  common.refuse_existing_out(args)


def stop_time(stop_after: str | None) -> datetime.datetime | None:
  """--stop-after HH:MM as today's UTC time (None without it)."""
  if not stop_after:
    return None
  try:
    hour, minute = (int(x) for x in stop_after.split(":"))
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(hour=hour, minute=minute, second=0, microsecond=0)
  except ValueError:
    require(False, f"--stop-after {stop_after!r} is not a UTC time HH:MM, e.g. 05:50.")


def run_main_table(args, root: str, stop: datetime.datetime | None) -> None:
  """Every (acc, seed) run of the main table, the first seed at every acc first."""

  def run_one(acc: str, seed: int) -> None:
    workdir = run_dir(root, args.setting, acc, seed)
    command = run_command(args.setting, acc, seed, workdir, args.overrides)
    common.timed_run(command, workdir, f"{acc} seed {seed}", TRAINED, args.dry_run)

  # Order: the first seed at every acc, then the next seed, so partial results cover every acc
  # early.
  run_all(
    [(acc, seed) for seed in args.seeds for acc in args.accs],
    run_one,
    args.parallel,
    stop,
    args.stop_after,
  )


def run_study_rows(args, root: str, stop: datetime.datetime | None) -> None:
  """The ablation and methods rows at --studies-acc on each seed's finished run."""
  for seed in args.seeds:
    workdir = run_dir(root, args.setting, args.studies_acc, seed)
    if stop is not None and datetime.datetime.now(datetime.timezone.utc) >= stop:
      print(f"--stop-after {args.stop_after} reached; starting no more studies.", flush=True)
      break
    if args.dry_run or read_volumes(workdir) is not None:
      brain_studies.run_studies(
        workdir,
        study_base(args.setting, args.studies_acc),
        run_overrides(args.setting, args.studies_acc, seed, args.overrides),
        args.methods,
        f"{args.studies_acc} seed {seed}",
        args.dry_run,
        stop,
      )


def main(argv: Sequence[str]) -> int:
  args = build_parser().parse_args(argv)
  if args.reverdict:
    return rewrite_verdict(args.reverdict)
  check_args(args)
  stop = stop_time(args.stop_after)
  root = os.path.abspath(args.workdir)
  if not args.collect_only:
    run_main_table(args, root, stop)
    if args.studies_acc:
      run_study_rows(args, root, stop)
  if args.dry_run:
    return 0
  write_markdown(args.out, collect(args, argv, root))
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
