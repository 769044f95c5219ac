"""What the experiment scripts share: running `python -m kdmri_jax.main` for a row, collecting its
metrics and times, and writing a results table with its commands and machine.

Used by experiments/compare_methods.py, ablation.py, brain_studies.py and reproduce_brain.py; run
those from the repository root as `python -m experiments.NAME`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, NamedTuple, Sequence

from kdmri_jax.errors import InputError, require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "experiments", "results")


# --- running the pipeline -------------------------------------------------------------------------


def main_command(config_arg: str, workdir: str, overrides: Sequence[str] = ()) -> list[str]:
  """The `python -m kdmri_jax.main` command of one run; overrides are 'field=value' (dotted)."""
  return [
    sys.executable,
    "-m",
    "kdmri_jax.main",
    f"--config={config_arg}",
    f"--workdir={workdir}",
    *[f"--config.{o}" for o in overrides],
  ]


def show(command: Sequence[str]) -> str:
  """A command as one shell line, with this interpreter shown as `python` and the repository's paths
  relative, so the tables carry commands anyone can paste."""
  words = ["python" if w == sys.executable else w for w in command]
  return " ".join(shlex.quote(w.replace(REPO + os.sep, "")) for w in words)


def run_pipeline(
  command: Sequence[str], workdir: str, label: str, dry_run: bool = False
) -> float | None:
  """Runs one pipeline command (output to WORKDIR/run.log and the console); returns its wall
  seconds."""
  print(f"[{label}] {show(command)}", flush=True)
  if dry_run:
    return None
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "run.log")
  start = time.time()
  with open(log_path, "a") as log:
    process = subprocess.Popen(
      command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
      log.write(line)
      if not line.startswith("\r"):
        print(f"[{label}] {line}", end="", flush=True)
    status = process.wait()
  if status != 0:
    raise InputError(
      f"the {label} run failed with exit status {status}; its output is in {log_path}."
    )
  return time.time() - start


def timed_run(
  command: Sequence[str], workdir: str, label: str, stages: Sequence[str], dry_run: bool = False
) -> float | None:
  """`run_pipeline`, remembering its wall time in WORKDIR/wall_seconds.json when it trained any of
  `stages`; a rerun that only skips finished stages returns the remembered time."""
  path = os.path.join(workdir, "wall_seconds.json")
  todo = [s for s in stages if not os.path.exists(os.path.join(workdir, s, "done"))]
  wall = run_pipeline(command, workdir, label, dry_run)
  if wall is None:
    return None
  if todo:
    with open(path, "w") as f:
      json.dump({"seconds": wall, "trained": todo, "command": show(command)}, f, indent=1)
    return wall
  if os.path.exists(path):
    with open(path) as f:
      return float(json.load(f)["seconds"])
  return None


def link_stage(source_workdir: str, workdir: str, stage: str) -> None:
  """Makes WORKDIR/<stage> a link to a finished stage of another workdir (kept if it already
  exists)."""
  source = os.path.abspath(os.path.join(source_workdir, stage))
  require(
    os.path.exists(os.path.join(source, "done")),
    f"{source} is not a finished {stage} stage (no `done` "
    f"file); train it first or point at a run that has it.",
  )
  target = os.path.join(workdir, stage)
  os.makedirs(workdir, exist_ok=True)
  if not os.path.lexists(target):
    os.symlink(source, target)


# --- collecting the numbers -----------------------------------------------------------------------


def read_metrics(workdir: str, method: str) -> dict:
  """The evaluate stage's WORKDIR/results/<method>/metrics.json (summary over volumes,
  parameters)."""
  from kdmri_jax import evaluate  # here: it imports jax

  folder = os.path.join(workdir, "results", method)
  document = evaluate.read_metrics(folder)
  require(
    document is not None,
    f"{os.path.join(folder, 'metrics.json')} does not exist; the evaluate "
    f"stage of that run has not finished.",
  )
  return document


def stage_seconds(workdir: str, stages: Sequence[str]) -> float | None:
  """Training seconds of `stages` (the sum of the per-epoch `time` in each stage's log.txt)."""
  total, found = 0.0, False
  for stage in stages:
    path = os.path.join(workdir, stage, "log.txt")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      for line in f:
        match = re.search(r"\bepoch \d+/\d+ .* time ([\d.]+)s\s*$", line)
        if match:
          total, found = total + float(match.group(1)), True
  return total if found else None


def row(
  label: str,
  workdir: str,
  method: str,
  stages: Sequence[str] = (),
  run_wall: float | None = None,
  **extra,
) -> dict:
  """One table row from a run's metrics: PSNR/SSIM mean and std over validation volumes."""
  document = read_metrics(workdir, method)
  summary = document["summary"]
  return {
    "label": label,
    "psnr": summary["PSNR"],
    "ssim": summary["SSIM"],
    "n": document["n_volumes"],
    "params": document.get("params"),
    "train_s": stage_seconds(workdir, stages),
    "wall_s": run_wall,
    **extra,
  }


def _mean_std(stat: dict, digits: int) -> str:
  if stat.get("mean") is None:
    return "—"
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _number(value, fmt: str) -> str:
  return "—" if value is None else format(value, fmt)


def table_row(cells: Sequence[str]) -> str:
  """One markdown table row."""
  return "| " + " | ".join(cells) + " |"


def table_head(head: Sequence[str]) -> list[str]:
  """A markdown table's heading row and the separator under it."""
  return [table_row(head), "|" + "---|" * len(head)]


ROW_COLUMNS = ("PSNR (dB)", "SSIM", "Parameters", "Train time (s)", "Run wall (s)")


def markdown_table(rows: Sequence[dict], extra_columns: Sequence[tuple[str, str]] = ()) -> str:
  """Rows as a markdown table; `extra_columns` are (key, heading) shown after the label."""
  lines = table_head(["Model", *[h for _, h in extra_columns], *ROW_COLUMNS])
  for r in rows:
    cells = [
      r["label"],
      *[str(r.get(k, "")) for k, _ in extra_columns],
      _mean_std(r["psnr"], 2),
      _mean_std(r["ssim"], 4),
      _number(r["params"], ","),
      _number(r["train_s"], ".0f"),
      _number(r["wall_s"], ".0f"),
    ]
    lines.append(table_row(cells))
  return "\n".join(lines)


def table_notes(args, rows: Sequence[dict], student_label: str, notes: str) -> str:
  """The notes under a table: where the teacher came from, the user's --note lines, a caveat,
  `notes`."""
  parts = []
  if args.teacher_from:
    epochs = stage_seconds(args.teacher_from, ["teacher"])
    parts.append(
      f"The teacher is reused from `{show([os.path.abspath(args.teacher_from)])}`"
      f"{f' ({epochs:.0f} s of training epochs)' if epochs else ''}."
    )
  parts += list(args.note)
  parts += [teacher_caveat(rows, student_label), notes]
  return "\n\n".join(p for p in parts if p)


def teacher_caveat(rows: Sequence[dict], student_label: str) -> str:
  """A sentence when the teacher is no better than the student alone (KD then has nothing to
  transfer)."""
  by_label = {r["label"]: r for r in rows}
  teacher, student = by_label.get("Teacher"), by_label.get(student_label)
  if (
    not teacher
    or not student
    or teacher["psnr"].get("mean") is None
    or student["psnr"].get("mean") is None
  ):
    return ""
  if teacher["psnr"]["mean"] > student["psnr"]["mean"]:
    return ""
  return (
    f"**Caveat:** here the teacher ({teacher['psnr']['mean']:.2f} dB) is no better than the "
    f"student alone ({student['psnr']['mean']:.2f} dB) — the deeper teacher has not converged in "
    f"this short schedule — so imitating it cannot help and these rows only show that the pipeline "
    f"runs end to end; compare methods with a converged teacher (the paper trains 150 epochs, or "
    f"pass `--teacher-from` a longer-trained one)."
  )


def machine() -> str:
  """CPU model, core count and OS of this machine, and the JAX version."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    model = names[0] if names else model
  except OSError:
    pass
  try:
    import jax

    jax_version = jax.__version__
  except ImportError:
    jax_version = "?"
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return (
    f"{model}, {usable} usable CPU cores ({os.cpu_count()} visible), {platform.system()} "
    f"{platform.release()}, Python {platform.python_version()}, JAX {jax_version} on CPU"
  )


def write_results(
  path: str,
  title: str,
  intro: str,
  table: str,
  commands: Sequence[str],
  notes: str,
  overwrite: bool,
) -> None:
  """The markdown file with the table, the exact commands and the machine."""
  require(overwrite or not os.path.exists(path), f"{path} exists; pass --overwrite to replace it.")
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  text = [
    f"# {title}",
    "",
    intro,
    "",
    table,
    "",
    notes,
    "",
    "## Commands",
    "",
    "```",
    *commands,
    "```",
    "",
    f"Machine: {machine()}. Written {now}.",
    "",
  ]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(text))
  print(f"wrote {path}")


def add_override_arguments(parser: argparse.ArgumentParser, note_help: str) -> None:
  """`--set FIELD=VALUE` (config overrides for every run) and `--note` (sentences for the table)."""
  parser.add_argument(
    "--set",
    dest="overrides",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="config override for every run, e.g. --set train.num_epochs=2 (repeatable)",
  )
  parser.add_argument("--note", action="append", default=[], help=note_help)


def add_output_arguments(parser: argparse.ArgumentParser, out: str, out_help: str) -> None:
  """`--out` (the markdown file, default `out`), `--overwrite` and `--dry-run`."""
  parser.add_argument("--out", default=out, help=out_help)
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  parser.add_argument(
    "--dry-run", action="store_true", help="print the commands without running them"
  )


def add_methods_argument(parser: argparse.ArgumentParser, methods_help: str) -> None:
  """`--methods`: comma-separated feature-distillation methods, all of them by default."""
  parser.add_argument("--methods", default=",".join(default_methods()), help=methods_help)


def common_arguments(parser: argparse.ArgumentParser, workdir: str, out: str) -> None:
  """The arguments of a study script: base config, workdir, teacher reuse, overrides, output."""
  parser.add_argument(
    "--base", default="demo", help="base config in configs/ (demo, brain_4x, sr_demo, ...)"
  )
  parser.add_argument("--workdir", default=workdir, help="folder holding one workdir per run")
  parser.add_argument(
    "--teacher-from",
    default=None,
    help="reuse the finished teacher of this workdir (same base config) instead of training one",
  )
  add_override_arguments(
    parser, "a sentence added under the table, e.g. how the --teacher-from teacher was trained"
  )
  add_output_arguments(parser, out, "markdown file for the table")


def study_arguments(
  argv: Sequence[str], doc: str, name: str, add_own: Callable | None = None
) -> argparse.Namespace:
  """The checked arguments of study script `name` (its workdir experiments/runs/NAME and table
  results/NAME.md by default): `common_arguments`, then those `add_own(parser)` adds; `doc`'s first
  paragraph is the description."""
  parser = argparse.ArgumentParser(
    description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  common_arguments(
    parser, os.path.join("experiments", "runs", name), os.path.join(RESULTS, f"{name}.md")
  )
  if add_own is not None:
    add_own(parser)
  args = parser.parse_args(argv)
  args.overrides = check_overrides(args.overrides)
  return args


def refuse_existing_out(args) -> None:
  """Stops before any run when --out exists and neither --overwrite nor --dry-run is given."""
  require(
    args.overwrite or args.dry_run or not os.path.exists(args.out),
    f"{args.out} exists; pass --overwrite to replace it.",
  )


def check_overrides(overrides: Sequence[str]) -> list[str]:
  for o in overrides:
    require(
      re.fullmatch(r"[A-Za-z_][\w.]*=.*", o) is not None,
      f"--set {o!r} is not FIELD=VALUE with a dotted config field, e.g. train.num_epochs=2.",
    )
  return list(overrides)


def script_command(argv: Sequence[str], script: str) -> str:
  """The command line that runs experiment `script` ('ablation' or 'ablation.py') with `argv`."""
  module = os.path.basename(script).removesuffix(".py")
  return show([sys.executable, "-m", f"experiments.{module}", *argv])


def feature_methods(text: str) -> list[str]:
  """--methods 'a,b' as a list of known feature-loss names (one sentence naming them if not)."""
  from kdmri_jax.feature_losses import get_feature_loss

  methods = [m.strip() for m in text.split(",") if m.strip()]
  for method in methods:
    get_feature_loss(method)  # one sentence listing the names
  return methods


class Study(NamedTuple):
  """What a study script's results file says besides its rows."""

  script: str  # the experiments module that writes it
  title: str
  intro: str  # what the rows compare; {base}: the base config and overrides
  student_label: str  # the row the teacher caveat compares the teacher with
  notes: str  # under the table, after the teacher's origin and the --note lines
  extra_columns: tuple[tuple[str, str], ...] = ()  # (row key, heading) after the label


def write_study(
  study: Study, args, argv: Sequence[str], rows: Sequence[dict], commands: Sequence[str]
) -> None:
  """Writes --out: the introduction, the rows' table and its notes, this script's command before
  the runs'."""
  base = f"`{args.base}`{' with ' + ', '.join(args.overrides) if args.overrides else ''}"
  intro = (
    f"{study.intro.format(base=base)} PSNR/SSIM: mean ± std over the {rows[0]['n']} validation "
    f"volumes."
  )
  write_results(
    args.out,
    study.title,
    intro,
    markdown_table(rows, study.extra_columns),
    [script_command(argv, study.script), *commands],
    table_notes(args, rows, study.student_label, study.notes),
    args.overwrite,
  )


def default_methods() -> list[str]:
  """One feature-loss name per method (aliases such as pairwise = local_affinity left out)."""
  from kdmri_jax.feature_losses import FEATURE_LOSSES

  seen, names = set(), []
  for name, fn in FEATURE_LOSSES.items():  # one name per function (pairwise = local_affinity)
    if fn not in seen:
      seen.add(fn)
      names.append(name)
  return names


def parse_seeds(text: str) -> list[int]:
  """--seeds '42,43,44' as integers; one sentence for anything else."""
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise InputError(
      f"--seeds {text!r} is not a comma-separated list of integers, e.g. 42,43,44."
    ) from None
  require(bool(seeds), "--seeds is empty; give e.g. 42,43,44.")
  return seeds
