"""Compares feature-distillation methods in KD-MRI's pipeline and writes the table (PSNR, SSIM,
parameters, wall time) to experiments/results/methods.md.

  python -m experiments.compare_methods --base demo --workdir experiments/runs/methods_demo \
      --methods attention,fitnet,fsp,sp,cc,local_affinity --set train.num_epochs=2

One teacher serves every method: it is trained once in WORKDIR/base (with the student baseline, both
evaluated), or taken from `--teacher-from DIR` (a finished run with the same base config), and
linked into each method's workdir WORKDIR/<method>, which then runs `configs/methods.py:BASE,METHOD`
(feature stage with the method, KD stage from it, evaluation) through `python -m kdmri_jax.main`.
Rerunning resumes: finished stages are skipped. The run/collect/table helpers are in
experiments/common.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from experiments import common
from kdmri_jax.errors import require, run_cli

STUDY = common.Study(
  script="compare_methods",
  title="Feature-distillation methods",
  intro="Feature-distillation methods in KD-MRI's pipeline on {base}: each method trains the "
  "student's feature stage against the same teacher on the paper's layer pairs, then the KD stage "
  "(α = 0.5) from it.",
  student_label="Student (no KD)",
  notes="Train time: the sum of the training epochs of the stages behind the row (feature + kd "
  "for a method; without validation, compilation or evaluation). Run wall: the whole command of "
  "that row (startup, compilation, training, validation and evaluation; the base run also trains "
  "the teacher unless it was reused). Times depend on the machine's load: on a CPU shared with "
  "other jobs they are only indicative.",
)


def run_base(args, commands: list[str]) -> tuple[str, float | None]:
  """WORKDIR/base: the teacher (trained or linked) and the student baseline, both evaluated."""
  base_dir = os.path.join(os.path.abspath(args.workdir), "base")
  if args.teacher_from and not args.dry_run:
    common.link_stage(args.teacher_from, base_dir, "teacher")
  command = common.main_command(
    f"configs/ablation.py:{args.base},student", base_dir, args.overrides
  )
  commands.append(common.show(command))
  return base_dir, common.timed_run(command, base_dir, "base", ["teacher", "student"], args.dry_run)


def run_methods(args, methods: Sequence[str], base_dir: str, commands: list[str]) -> dict:
  """Each method in WORKDIR/<method> with the base run's teacher linked in; {method: run wall}."""
  walls = {}
  for method in methods:
    workdir = os.path.join(os.path.abspath(args.workdir), method)
    if not args.dry_run:
      common.link_stage(base_dir, workdir, "teacher")
    command = common.main_command(
      f"configs/methods.py:{args.base},{method}", workdir, args.overrides
    )
    commands.append(common.show(command))
    walls[method] = common.timed_run(command, workdir, method, ["feature", "kd"], args.dry_run)
  return walls


def table_rows(
  args, methods: Sequence[str], base_dir: str, base_wall: float | None, walls: dict
) -> list[dict]:
  """ZF, the teacher and the student baseline from the base run, then one KD row per method."""
  rows = [
    common.row("ZF", base_dir, "zf"),
    common.row("Teacher", base_dir, "teacher", ["teacher"]),
    common.row(STUDY.student_label, base_dir, "student", ["student"], base_wall),
  ]
  for method in methods:
    workdir = os.path.join(os.path.abspath(args.workdir), method)
    label = f"KD: {method}" + (" (paper)" if method == "attention" else "")
    rows.append(common.row(label, workdir, "kd", ["feature", "kd"], walls[method]))
  return rows


def add_methods(parser: argparse.ArgumentParser) -> None:
  common.add_methods_argument(
    parser, "comma-separated kdmri_jax.feature_losses names (default: all)"
  )


def main(argv: Sequence[str]) -> int:
  args = common.study_arguments(argv, __doc__, "methods", add_methods)
  methods = common.feature_methods(args.methods)
  require(bool(methods), "--methods is empty; give comma-separated names such as attention,fitnet.")
  common.refuse_existing_out(args)
  commands: list[str] = []
  base_dir, base_wall = run_base(args, commands)
  walls = run_methods(args, methods, base_dir, commands)
  if args.dry_run:
    return 0
  rows = table_rows(args, methods, base_dir, base_wall, walls)
  common.write_study(STUDY, args, argv, rows, commands)
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
