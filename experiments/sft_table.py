"""Standard teacher vs student-friendly teacher (SFT-KD-Recon), each distilled into the student by
KD-MRI's attention transfer + imitation, on the embedded brain; writes experiments/results/sft.md.

  python -m experiments.sft_table --standard-runs experiments/runs/brain_cpu --acc 4x \\
    --seeds 42,43,44

Per seed, the standard run is the brain reproduction's (`python -m experiments.reproduce_brain`,
ROOT/<setting>/acc_<acc>/seed_<seed>; trained here with its command when missing). The SFT run
(--workdir/acc_<acc>/seed_<seed>) uses the same config and seed with `config.sft.enabled=true`: it
trains the SFT teacher, then the feature (AT) and KD stages from it; its student stage is a link to
the standard run's, so both runs report the same student. PSNR/SSIM: mean ± std over the seeds of
each run's mean over the validation volumes. SFT-KD vs standard KD (and SFT teacher vs teacher):
the brain reproduction's paired Wilcoxon test over (seed, volume) pairs, judged by its rule
(`brain_studies.resolve`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from experiments import common, reproduce_brain
from experiments.brain_studies import p_text, paired_p, read_method, resolve
from experiments.seed_stats import mean_std, paired_test
from kdmri_jax.errors import require, run_cli

OUT = os.path.join(common.RESULTS, "sft.md")
SFT_STAGES = ("teacher", "feature", "kd")
ROWS = (  # (label, run, evaluated method)
  ("ZF", "standard", "zf"),
  ("Student (no KD)", "standard", "student"),
  ("Teacher", "standard", "teacher"),
  ("KD from the teacher (AT + imitation)", "standard", "kd"),
  ("SFT teacher", "sft", "teacher"),
  ("KD from the SFT teacher (AT + imitation)", "sft", "kd"),
)
COMPARED = (  # (what, lower row, upper row)
  ("SFT teacher vs teacher", "Teacher", "SFT teacher"),
  (
    "KD from SFT vs KD from the teacher",
    "KD from the teacher (AT + imitation)",
    "KD from the SFT teacher (AT + imitation)",
  ),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--setting", default="cpu", choices=sorted(reproduce_brain.SETTINGS))
  parser.add_argument("--acc", default="4x")
  parser.add_argument("--seeds", default="42,43,44", help="comma-separated train.seed values")
  parser.add_argument(
    "--standard-runs",
    default=os.path.join("experiments", "runs", "brain_cpu"),
    help="reproduce_brain's --workdir: ROOT/<setting>/acc_<acc>/seed_<seed> (trained if missing)",
  )
  parser.add_argument(
    "--workdir", default=os.path.join("experiments", "runs", "sft"), help="root of the SFT runs"
  )
  common.add_override_arguments(parser, "a sentence added under the table")
  parser.add_argument("--out", default=OUT, help="markdown output")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  return parser


def run_dirs(args, seed: int) -> dict[str, str]:
  return {
    "standard": reproduce_brain.run_dir(args.standard_runs, args.setting, args.acc, seed),
    "sft": os.path.join(args.workdir, f"acc_{args.acc}", f"seed_{seed}"),
  }


def commands(args, seed: int) -> dict[str, list[str]]:
  """The standard and SFT runs' `python -m kdmri_jax.main` commands of one seed."""
  dirs, overrides = run_dirs(args, seed), args.overrides
  standard = reproduce_brain.run_command(args.setting, args.acc, seed, dirs["standard"], overrides)
  sft = reproduce_brain.run_command(
    args.setting,
    args.acc,
    seed,
    dirs["sft"],
    [*overrides, "sft.enabled=true", "stages=teacher,feature,kd,evaluate"],
  )
  return {"standard": standard, "sft": sft}


def run_seed(args, seed: int) -> list[str]:
  """Trains what one seed still lacks; returns the commands (as shown in the table's file)."""
  dirs, cmds = run_dirs(args, seed), commands(args, seed)
  common.run_pipeline(cmds["standard"], dirs["standard"], f"standard {seed}", args.dry_run)
  if not args.dry_run:
    common.link_stage(dirs["standard"], dirs["sft"], "student")
  common.timed_run(cmds["sft"], dirs["sft"], f"sft {seed}", SFT_STAGES, args.dry_run)
  return [common.show(cmds["standard"]), common.show(cmds["sft"])]


def collect(args, seeds: Sequence[int]) -> dict[str, dict[int, dict]]:
  """{row label: {seed: {volume: {'PSNR': x, 'SSIM': y}}}} of every finished run."""
  found = {label: {} for label, _, _ in ROWS}
  for seed in seeds:
    dirs = run_dirs(args, seed)
    for label, run, method in ROWS:
      document = read_method(dirs[run], method)
      require(
        document is not None,
        f"{dirs[run]} has no evaluated {method!r} model; rerun without --dry-run to train it.",
      )
      found[label][seed] = document["volumes"]
  return found


def seed_means(volumes: dict[int, dict], metric: str) -> list[float]:
  return [sum(v[metric] for v in vols.values()) / len(vols) for vols in volumes.values()]


def pairs(lower: dict[int, dict], upper: dict[int, dict], metric: str) -> tuple[list, list]:
  """(upper, lower) values over the (seed, volume) pairs both have."""
  keys = [(s, v) for s in upper if s in lower for v in upper[s] if v in lower[s]]
  return [upper[s][v][metric] for s, v in keys], [lower[s][v][metric] for s, v in keys]


def results_table(found: dict) -> str:
  lines = ["| Model | PSNR (dB) | SSIM |", "|---|---|---|"]
  for label, _, _ in ROWS:
    psnr, ssim = (mean_std(seed_means(found[label], m)) for m in ("PSNR", "SSIM"))
    lines.append(f"| {label} | {psnr[0]:.2f} ± {psnr[1]:.2f} | {ssim[0]:.4f} ± {ssim[1]:.4f} |")
  return "\n".join(lines)


def comparison(found: dict, lower: str, upper: str) -> dict:
  """Δ PSNR of `upper` over `lower` (means over seeds), the paired test and the rule's outcome."""
  test = paired_test(*pairs(found[lower], found[upper], "PSNR"))
  low, up = (mean_std(seed_means(found[row], "PSNR")) for row in (lower, upper))
  return {
    "diff": up[0] - low[0],
    "test": test,
    "outcome": resolve(low, up, len(found[upper]), paired_p(test)),
  }


OUTCOME_TEXT = {
  "above": "higher, resolved (beyond both seed spreads, paired p < 0.05)",
  "below": "lower, resolved (beyond both seed spreads, paired p < 0.05)",
  "spread": "not resolved: the difference is inside the seed spread",
  "p": "not resolved: the paired test is not significant",
  "one seed": "not resolved: one seed has no spread",
}


def comparison_table(found: dict) -> str:
  lines = [
    "| Comparison | Δ PSNR (dB) | wins / pairs | Wilcoxon p | paired t p | verdict |",
    "|---|---|---|---|---|---|",
  ]
  for what, lower, upper in COMPARED:
    c = comparison(found, lower, upper)
    test = c["test"]
    lines.append(
      f"| {what} | {c['diff']:+.2f} | {test['wins']} / {test['n']} | "
      f"{p_text(test['wilcoxon_p'])} (min {test['min_p']:.2g}) | {p_text(test['t_p'])} | "
      f"{OUTCOME_TEXT[c['outcome']]} |"
    )
  return "\n".join(lines)


def intro(args, seeds: Sequence[int]) -> str:
  setting = reproduce_brain.SETTINGS[args.setting]
  return (
    f"The embedded MNI brain at {args.acc}, {setting.description}, seeds "
    f"{', '.join(map(str, seeds))}. Standard: KD-MRI's pipeline (teacher with L1; student by "
    f"attention transfer, then imitation with α = 0.5). SFT: the same, but the teacher stage "
    f"trains the teacher with student branches (`config.sft.enabled=true`, kdmri_jax/sft.py: "
    f"L1 of the teacher + mean L1 of the branches + mean L1 of each branch to the teacher, "
    f"weights 1, 1). "
    f"Both KD students start from their own feature stage; the student baseline is shared."
  )


def main(argv: Sequence[str]) -> int:
  args = build_parser().parse_args(argv)
  seeds = common.parse_seeds(args.seeds)
  args.overrides = common.check_overrides(args.overrides)
  from kdmri_jax.masks import parse_acceleration  # here: it imports jax

  parse_acceleration(args.acc)  # one sentence for a bad value, before any run
  require(
    args.overwrite or args.dry_run or not os.path.exists(args.out),
    f"{args.out} exists; pass --overwrite to replace it.",
  )
  shown = [common.script_command(argv, "sft_table")]
  for seed in seeds:
    shown += run_seed(args, seed)
  if args.dry_run:
    return 0
  found = collect(args, seeds)
  tables = results_table(found) + "\n\n" + comparison_table(found)
  notes = "".join(f"{note} " for note in args.note)
  common.write_results(
    args.out,
    "Student-friendly teacher (SFT-KD-Recon) vs the standard teacher",
    intro(args, seeds),
    tables,
    shown,
    notes + "Verdict rule: a row is above or below another only when the difference of the seed "
    "means exceeds both seed spreads and the paired test gives p < 0.05.",
    args.overwrite,
  )
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
