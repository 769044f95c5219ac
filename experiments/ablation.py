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

import os
import sys
from typing import Sequence

from experiments import common
from kdmri_jax.errors import run_cli

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


STUDY = common.Study(
  script="ablation",
  title="Ablation: attention transfer and imitation",
  intro="KD-MRI's ablation on {base}: the student alone, with imitation of the teacher's output "
  "only (KD stage from the student baseline, α = 0.5), with attention transfer only (AT stage, "
  "then fine-tuned with α = 1: reconstruction loss, no imitation) and with both (the paper). All "
  "variants share one teacher.",
  student_label="Student alone",
  notes="Train time: the sum of the training epochs of the row's own stages (the shared AT stage "
  "counts for both AT rows). Run wall: that variant's whole command (the student variant's also "
  "trains the teacher unless it was reused). Times depend on the machine's load: on a CPU shared "
  "with other jobs they are only indicative.",
  extra_columns=(("at", "AT"), ("imitation", "Imitation")),
)


def link_shared_stages(args, root: str, variant: str) -> None:
  """Links into WORKDIR/<variant> the stages it shares (and --teacher-from's teacher into the
  student variant's)."""
  workdir = os.path.join(root, variant)
  if variant == "student" and args.teacher_from:
    common.link_stage(args.teacher_from, workdir, "teacher")
  for stage, source in VARIANTS[variant][3].items():
    common.link_stage(os.path.join(root, source), workdir, stage)


def run_variants(args, root: str) -> tuple[list[str], dict]:
  """Runs every variant in WORKDIR/<variant>; returns their commands and {variant: run wall}."""
  commands, walls = [], {}
  for variant, (_, _, _, _, trained) in VARIANTS.items():  # in an order where every link exists
    workdir = os.path.join(root, variant)
    if not args.dry_run:
      link_shared_stages(args, root, variant)
    command = common.main_command(
      f"configs/ablation.py:{args.base},{variant}", workdir, args.overrides
    )
    commands.append(common.show(command))
    stages = trained + (["teacher"] if variant == "student" else [])
    walls[variant] = common.timed_run(command, workdir, variant, stages, args.dry_run)
  return commands, walls


def table_rows(root: str, walls: dict) -> list[dict]:
  """ZF and the teacher (from the student variant's run), then one row per variant."""
  base = os.path.join(root, "student")
  rows = [
    common.row("ZF", base, "zf", at="", imitation=""),
    common.row("Teacher", base, "teacher", ["teacher"], at="", imitation=""),
  ]
  for variant in ("student", "imitation_only", "feature_only", "attention_imitation"):
    label, at, imitation, _, trained = VARIANTS[variant]
    method = "student" if variant == "student" else "kd"
    workdir = os.path.join(root, variant)
    rows.append(
      common.row(label, workdir, method, trained, walls[variant], at=at, imitation=imitation)
    )
  return rows


def main(argv: Sequence[str]) -> int:
  args = common.study_arguments(argv, __doc__, "ablation")
  common.refuse_existing_out(args)
  root = os.path.abspath(args.workdir)
  commands, walls = run_variants(args, root)
  if args.dry_run:
    return 0
  common.write_study(STUDY, args, argv, table_rows(root, walls), commands)
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
