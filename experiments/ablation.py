"""The paper's ablation of attention transfer (AT) and imitation, written to
experiments/results/ablation.md.

  python -m experiments.ablation --base demo --workdir experiments/runs/ablation \
    --set train.num_epochs=2

Runs the four variants of configs/ablation.py (student, imitation_only, feature_only,
attention_imitation) through `python -m kdmri_jax.main`, each in WORKDIR/<variant>, sharing what
they have in common: one teacher (trained in WORKDIR/student, or `--teacher-from DIR`), the student
baseline (imitation_only starts from it) and the AT stage (feature_only fine-tunes the one
attention_imitation trained). Rerunning resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from experiments import common
from kdmri_jax.errors import require, run_cli

# variant -> (label, AT, imitation, stages linked in from other variants: {stage: variant}, trained
# stages)
VARIANTS = {
  "student": ("Student alone", "", "", {}, ["student"]),
  "attention_imitation": (
    "AT + imitation (paper)",
    "✓",
    "✓",
    {"teacher": "student"},
    ["feature", "kd"],
  ),
  "imitation_only": (
    "Imitation only",
    "",
    "✓",
    {"teacher": "student", "student": "student"},
    ["kd"],
  ),
  "feature_only": (
    "AT only (then α = 1)",
    "✓",
    "",
    {"teacher": "student", "feature": "attention_imitation"},
    ["feature", "kd"],
  ),
}


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  common.common_arguments(
    parser,
    os.path.join("experiments", "runs", "ablation"),
    os.path.join(common.RESULTS, "ablation.md"),
  )
  args = parser.parse_args(argv)
  args.overrides = common.check_overrides(args.overrides)
  require(
    args.overwrite or args.dry_run or not os.path.exists(args.out),
    f"{args.out} exists; pass --overwrite to replace it.",
  )
  root = os.path.abspath(args.workdir)
  commands, walls = [], {}
  for variant, (_, _, _, links, _) in VARIANTS.items():  # in an order where every link exists
    workdir = os.path.join(root, variant)
    if variant == "student" and args.teacher_from and not args.dry_run:
      common.link_stage(args.teacher_from, workdir, "teacher")
    if not args.dry_run:
      for stage, source in links.items():
        common.link_stage(os.path.join(root, source), workdir, stage)
    command = common.main_command(
      f"configs/ablation.py:{args.base},{variant}", workdir, args.overrides
    )
    commands.append(common.show(command))
    trained = VARIANTS[variant][4] + (["teacher"] if variant == "student" else [])
    walls[variant] = common.timed_run(command, workdir, variant, trained, args.dry_run)
  if args.dry_run:
    return 0

  base = os.path.join(root, "student")
  rows = [
    common.row("ZF", base, "zf", at="", imitation=""),
    common.row("Teacher", base, "teacher", ["teacher"], at="", imitation=""),
  ]
  for variant in ("student", "imitation_only", "feature_only", "attention_imitation"):
    label, at, imitation, _, trained = VARIANTS[variant]
    method = "student" if variant == "student" else "kd"
    rows.append(
      common.row(
        label,
        os.path.join(root, variant),
        method,
        trained,
        walls[variant],
        at=at,
        imitation=imitation,
      )
    )
  intro = (
    f"KD-MRI's ablation on "
    f"`{args.base}`{' with ' + ', '.join(args.overrides) if args.overrides else ''}: the student "
    f"alone, with imitation of the teacher's output only (KD stage from the student baseline, α = "
    f"0.5), with attention transfer only (AT stage, then fine-tuned with α = 1: reconstruction "
    f"loss, no imitation) and with both (the paper). All variants share one teacher. PSNR/SSIM: "
    f"mean ± std over the {rows[0]['n']} validation volumes."
  )
  notes = (
    "Train time: the sum of the training epochs of the row's own stages (the shared AT stage "
    "counts for both AT rows). Run wall: that variant's whole command (the student variant's also "
    "trains the teacher unless it was reused). Times depend on the machine's load: on a CPU shared "
    "with other jobs they are only indicative."
  )
  notes = common.table_notes(args, rows, "Student alone", notes)
  commands.insert(0, common.script_command(argv, "ablation"))
  table = common.markdown_table(rows, [("at", "AT"), ("imitation", "Imitation")])
  common.write_results(
    args.out,
    "Ablation: attention transfer and imitation",
    intro,
    table,
    commands,
    notes,
    args.overwrite,
  )
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
