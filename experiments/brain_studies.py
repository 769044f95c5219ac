"""The ablation and the feature-method comparison of KD-MRI at one acceleration of the brain
reproduction, with the same seeds, built on experiments/reproduce_brain.py's runs (run by it with
`--studies-acc`).

Each finished reproduce run WORKDIR/<setting>/acc_<acc>/seed_<seed> already holds the teacher, the
student alone and the paper's AT + imitation student (its kd stage). Every other row trains only
what it adds, in that run's `studies/<row>` folder, with the shared stages linked in (so every row
of a seed distils the same teacher):

| row              | config                                  | linked from the run | trains        |
|------------------|-----------------------------------------|---------------------|---------------|
| imitation_only   | configs/ablation.py:BASE,imitation_only | teacher, student    | kd (α = 0.5)  |
| feature_only     | configs/ablation.py:BASE,feature_only   | teacher, feature    | kd (α = 1)    |
| method M ≠ paper | configs/methods.py:BASE,M               | teacher             | feature, kd   |

The tables give PSNR/SSIM as mean ± std over seeds (of each run's mean over validation volumes), the
difference to the student alone and the same paired Wilcoxon test over (seed, volume) pairs as the
main table.
"""

from __future__ import annotations

import datetime
import os
from typing import Sequence

import numpy as np

from experiments import common
from experiments.seed_stats import mean_std, paired_test

ABLATION = (  # (row key, label, AT, imitation)
  ("student", "Student alone", "", ""),
  ("imitation_only", "Imitation only", "", "✓"),
  ("feature_only", "AT only (then α = 1)", "✓", ""),
  ("attention_imitation", "AT + imitation (paper)", "✓", "✓"),
)
# row key -> (configs file, variant, stages linked from the seed's run, stages it trains)
STUDY_ROWS = {
  "imitation_only": ("ablation", "imitation_only", ("teacher", "student"), ("kd",)),
  "feature_only": ("ablation", "feature_only", ("teacher", "feature"), ("kd",)),
}
# rows read straight from the seed's run: row key -> (evaluated method, its training stages)
RUN_ROWS = {
  "student": ("student", ("student",)),
  "attention_imitation": ("kd", ("feature", "kd")),
  "teacher": ("teacher", ("teacher",)),
}
PAPER_METHOD = "attention"
ALPHA = 0.05  # the paired test's level wherever a verdict uses one


def study_rows(methods: Sequence[str]) -> dict:
  """STUDY_ROWS plus one `method:<M>` row per feature-distillation method other than the paper's."""
  rows = dict(STUDY_ROWS)
  for method in methods:
    if method != PAPER_METHOD:
      rows[f"method:{method}"] = ("methods", method, ("teacher",), ("feature", "kd"))
  return rows


def study_dir(run_workdir: str, key: str) -> str:
  return os.path.join(run_workdir, "studies", key.replace("method:", "method_"))


def study_command(
  key: str, spec: tuple, base: str, run_workdir: str, overrides: Sequence[str]
) -> list[str]:
  config_file, variant, _, _ = spec
  return common.main_command(
    f"configs/{config_file}.py:{base},{variant}", study_dir(run_workdir, key), overrides
  )


def run_studies(
  run_workdir: str,
  base: str,
  overrides: Sequence[str],
  methods: Sequence[str],
  label: str,
  dry_run: bool = False,
  stop: datetime.datetime | None = None,
) -> list[list[str]]:
  """Trains and evaluates every study row of one finished reproduce run (starting none after the UTC
  time `stop`); returns the commands."""
  commands = []
  for key, spec in study_rows(methods).items():
    if stop is not None and datetime.datetime.now(datetime.timezone.utc) >= stop:
      print(f"stop time {stop:%H:%M} UTC reached; starting no more studies.", flush=True)
      break
    workdir = study_dir(run_workdir, key)
    if not dry_run:
      for stage in spec[2]:
        common.link_stage(run_workdir, workdir, stage)
    command = study_command(key, spec, base, run_workdir, overrides)
    commands.append(command)
    common.timed_run(command, workdir, f"{label} {key}", spec[3], dry_run)
  return commands


# --- collecting -----------------------------------------------------------------------------------


def read_method(workdir: str, method: str) -> dict | None:
  """{'params': n, 'volumes': {name: {'PSNR': x, 'SSIM': y}}} of one evaluated model, else None."""
  from kdmri_jax import evaluate  # here: it imports jax

  document = evaluate.read_metrics(os.path.join(workdir, "results", method))
  if document is None:
    return None
  return {
    "params": document.get("params"),
    "volumes": {v["name"]: {"PSNR": v["PSNR"], "SSIM": v["SSIM"]} for v in document["volumes"]},
  }


def row_source(run_workdir: str, key: str) -> tuple[str, str, tuple]:
  """(workdir, evaluated method, training stages) of a row in one seed's run."""
  if key in RUN_ROWS:
    method, stages = RUN_ROWS[key]
    return run_workdir, method, stages
  spec = STUDY_ROWS.get(key) or ("methods", key, (), ("feature", "kd"))
  return study_dir(run_workdir, key), "kd", spec[3]


def row_stats(run_dirs: dict, key: str) -> dict:
  """One row over seeds: PSNR/SSIM mean ± std, parameters, mean training seconds, and the paired
  test against the student alone over the (seed, volume) pairs both have."""
  found, seconds = {}, []
  for seed, run_workdir in run_dirs.items():
    workdir, method, stages = row_source(run_workdir, key)
    result = read_method(workdir, method)
    if result is not None:
      found[seed] = result
      seconds.append(common.stage_seconds(workdir, stages))
  out = {
    "seeds": sorted(found),
    "params": next(iter(found.values()))["params"] if found else None,
    "train_s": float(np.mean(seconds)) if seconds and None not in seconds else None,
  }
  for metric in ("PSNR", "SSIM"):
    out[metric] = mean_std(
      [float(np.mean([v[metric] for v in r["volumes"].values()])) for r in found.values()]
    )
  pairs = []
  for seed, result in found.items():
    student = read_method(run_dirs[seed], "student")
    if student is not None:
      pairs += [
        (result["volumes"][v]["PSNR"], student["volumes"][v]["PSNR"])
        for v in sorted(result["volumes"])
      ]
  out["test"] = paired_test([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
  return out


def stats_table(
  rows: Sequence[tuple[str, str, Sequence[str]]], run_dirs: dict, extra_heads: Sequence[str] = ()
) -> str:
  """Rows (key, label, extra cells) as markdown: PSNR, SSIM, Δ to the student alone and its paired
  test."""
  head = [
    "Model",
    *extra_heads,
    "PSNR (dB)",
    "SSIM",
    "Δ PSNR vs student (dB)",
    "better pairs",
    "Wilcoxon p",
    "Parameters",
    "Train time (s)",
    "Seeds",
  ]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  student = row_stats(run_dirs, "student")["PSNR"]
  for key, label, extra in rows:
    r = row_stats(run_dirs, key)
    psnr, ssim, test = r["PSNR"], r["SSIM"], r["test"]
    compared = (
      key not in ("student", "teacher") and test is not None and psnr is not None and student
    )
    cells = [
      label,
      *extra,
      "not run" if psnr is None else f"{psnr[0]:.2f} ± {psnr[1]:.2f}",
      "not run" if ssim is None else f"{ssim[0]:.4f} ± {ssim[1]:.4f}",
      f"{psnr[0] - student[0]:+.2f}" if compared else "—",
      f"{test['wins']}/{test['n']}" if compared else "—",
      p_text(test["wilcoxon_p"]) if compared else "—",
      "—" if r["params"] is None else f"{r['params']:,}",
      "—" if r["train_s"] is None else f"{r['train_s']:.0f}",
      ", ".join(map(str, r["seeds"])) or "none",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def ablation_rows() -> list[tuple[str, str, list[str]]]:
  return [(key, label, [at, imitation]) for key, label, at, imitation in ABLATION]


def method_rows(methods: Sequence[str]) -> list[tuple[str, str, list[str]]]:
  rows = [
    ("teacher", "Teacher", []),
    ("student", "Student (no KD)", []),
    ("attention_imitation", f"KD: {PAPER_METHOD} (paper)", []),
  ]
  return rows + [(f"method:{m}", f"KD: {m}", []) for m in methods if m != PAPER_METHOD]


def sections(run_dirs: dict, acc: str, methods: Sequence[str], commands: Sequence[str]) -> str:
  """The markdown sections (ablation, methods) for brain.md."""
  text = [
    f"## Ablation at {acc}: attention transfer (AT) and imitation",
    "",
    "Every row of a seed distils that seed's teacher from the table above. Imitation only: "
    "the KD stage from the student alone (α = 0.5, no AT). AT only: the AT stage, then "
    "fine-tuned with α = 1 (reconstruction loss, no imitation: the AT stage trains only "
    "the layers up to the distilled conv). Δ PSNR and the paired test are against the "
    "student alone over (seed, validation volume) pairs. Train time: mean over seeds of "
    "the row's training epochs (the AT rows include the shared AT stage). Budgets differ "
    "as in the paper: imitation only continues the trained student for another stage and "
    "the AT rows train two stages, while the student alone trains one, so a gain over the "
    "student alone can come from the longer training as well as from the teacher.",
    "",
    stats_table(ablation_rows(), run_dirs, ["AT", "Imitation"]),
    "",
    f"## Feature-distillation methods at {acc}",
    "",
    "Each method replaces attention transfer in the feature stage (same layer "
    "pairs: teacher conv 3 → student conv 2 of every cascade; FitNet adds a 1×1 "
    "regressor only when widths differ, here they do not), then the same KD "
    "stage (α = 0.5). Columns as in the ablation; train time is feature + kd.",
    "",
    stats_table(method_rows(methods), run_dirs),
    "",
    "Commands of these rows (after the runs of the main table; `python "
    "experiments/reproduce_brain.py --studies-acc ACC` runs them):",
    "",
    "```",
    *commands,
    "```",
  ]
  return "\n".join(text)


def resolve(
  lower: tuple[float, float], upper: tuple[float, float], seeds: int, p: float | None = None
) -> str:
  """How `upper` (mean, std over seeds) stands to `lower`: 'above' when its mean exceeds lower's by
  more than the larger of their two seed stds (and p < ALPHA when a paired test is given), 'below'
  for the mirror image, else why neither: 'one seed' (under 2 seeds: no spread), 'spread' (the
  difference is inside it) or 'p' (the test is not significant). The one rule of every verdict of
  brain.md (reproduce_brain's ordering too)."""
  diff, spread = upper[0] - lower[0], max(lower[1], upper[1])
  if seeds < 2:
    return "one seed"
  if abs(diff) <= spread:
    return "spread"
  if p is not None and not p < ALPHA:
    return "p"
  return "above" if diff > 0 else "below"


def step(
  lower: tuple[float, float], upper: tuple[float, float], seeds: int, p: float | None = None
) -> str:
  """`resolve` as 'above', 'below' or 'inside' (neither, for whatever reason)."""
  outcome = resolve(lower, upper, seeds, p)
  return outcome if outcome in ("above", "below") else "inside"


def paired_p(test: dict) -> float:
  """A paired test's Wilcoxon p, 1 for a test without any nonzero difference (nothing resolved)."""
  return 1.0 if test["wilcoxon_p"] is None else test["wilcoxon_p"]


def verdict(run_dirs: dict, acc: str, methods: Sequence[str]) -> str:
  """Sentences on the ablation and the methods from the runs: which rows beat the student alone."""
  ablation, comparison = (
    [(label, row_stats(run_dirs, key)) for key, label, _ in rows]
    for rows in (ablation_rows(), method_rows(methods))
  )
  return tables_verdict(acc, ablation, comparison)


def tables_verdict(acc: str, ablation: list, comparison: list) -> str:
  """rows_verdict from the rows [(label, row)] of the ablation and methods tables in their order:
  the ablation's first row is the student alone, the methods' first two the teacher and student."""
  groups = {"ablation": ablation[1:], "method comparison": comparison[2:]}
  return rows_verdict(acc, groups, ablation[0][1], comparison[0][1])


def rows_verdict(acc: str, groups: dict, student: dict, teacher: dict) -> str:
  """verdict from row statistics ({title: [(label, row)]}; a row has 'PSNR' (mean, std), 'seeds'
  and 'test' with 'wilcoxon_p'): a row beats the student alone when `step` resolves it above."""
  said = []
  for title, rows in groups.items():
    results = [(label, r) for label, r in rows if r["PSNR"] is not None and r["test"] is not None]
    if not results or student["PSNR"] is None:
      said.append(f"The {title} at {acc} has not been run.")
      continue
    seeds = {label: min(len(r["seeds"]), len(student["seeds"])) for label, r in results}
    beat = [
      label
      for label, r in results
      if step(student["PSNR"], r["PSNR"], seeds[label], paired_p(r["test"])) == "above"
    ]
    higher = [
      (label, r) for label, r in results if r["PSNR"][0] > student["PSNR"][0] and label not in beat
    ]
    best_label, best = max(results, key=lambda x: x[1]["PSNR"][0])
    text = (
      f"In the {title} at {acc}, {len(beat)} of {len(results)} distilled "
      f"students beat the student alone in PSNR by more than the larger "
      f"seed std with paired p < {ALPHA} ({', '.join(beat) or 'none'})"
    )
    if higher:
      text += "; above it on mean PSNR but not resolved: " + ", ".join(
        f"{label} ({r['PSNR'][0] - student['PSNR'][0]:+.2f} dB, p = "
        f"{p_text(r['test']['wilcoxon_p'])})"
        for label, r in higher
      )
    best_gain = best["PSNR"][0] - student["PSNR"][0]
    said.append(f"{text}; the best is {best_label} at {best_gain:+.2f} dB.")
    teacher_worse = teacher["PSNR"] is not None and teacher["PSNR"][0] <= student["PSNR"][0]
    if (beat or higher) and teacher_worse:
      said.append(
        "As the teacher is no better than the student alone, such a gain more likely comes from "
        "the extra stage of training those rows get than from anything the teacher transfers."
      )
  return " ".join(said)


def p_text(value: float | None) -> str:
  """A p-value as the tables show it ('—' for a test without any nonzero difference)."""
  return "—" if value is None else f"{value:.3g}"
