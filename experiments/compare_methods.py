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


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  common.common_arguments(
    parser,
    os.path.join("experiments", "runs", "methods"),
    os.path.join(common.RESULTS, "methods.md"),
  )
  parser.add_argument(
    "--methods",
    default=",".join(common.default_methods()),
    help="comma-separated kdmri_jax.feature_losses names (default: all)",
  )
  args = parser.parse_args(argv)
  args.overrides = common.check_overrides(args.overrides)
  from kdmri_jax.feature_losses import get_feature_loss

  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  require(bool(methods), "--methods is empty; give comma-separated names such as attention,fitnet.")
  for method in methods:
    get_feature_loss(method)  # one sentence listing the names
  require(
    args.overwrite or args.dry_run or not os.path.exists(args.out),
    f"{args.out} exists; pass --overwrite to replace it.",
  )

  commands: list[str] = []
  base_dir, base_wall = run_base(args, commands)
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
  if args.dry_run:
    return 0

  rows = [
    common.row("ZF", base_dir, "zf"),
    common.row("Teacher", base_dir, "teacher", ["teacher"]),
    common.row("Student (no KD)", base_dir, "student", ["student"], base_wall),
  ]
  for method in methods:
    workdir = os.path.join(os.path.abspath(args.workdir), method)
    label = f"KD: {method}" + (" (paper)" if method == "attention" else "")
    rows.append(common.row(label, workdir, "kd", ["feature", "kd"], walls[method]))
  intro = (
    f"Feature-distillation methods in KD-MRI's pipeline on "
    f"`{args.base}`{' with ' + ', '.join(args.overrides) if args.overrides else ''}: "
    f"each method trains the student's feature stage against the same teacher on the "
    f"paper's layer pairs, then the KD stage (α = 0.5) from it. PSNR/SSIM: mean ± "
    f"std over the {rows[0]['n']} validation volumes."
  )
  notes = (
    "Train time: the sum of the training epochs of the stages behind the row (feature + kd for a "
    "method; without validation, compilation or evaluation). Run wall: the whole command of that "
    "row (startup, compilation, training, validation and evaluation; the base run also trains the "
    "teacher unless it was reused). Times depend on the "
    "machine's load: on a CPU shared with other jobs they are only indicative."
  )
  notes = common.table_notes(args, rows, "Student (no KD)", notes)
  commands.insert(0, common.script_command(argv, "compare_methods"))
  common.write_results(
    args.out,
    "Feature-distillation methods",
    intro,
    common.markdown_table(rows),
    commands,
    notes,
    args.overwrite,
  )
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
