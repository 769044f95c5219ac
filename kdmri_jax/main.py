"""Runs the KD-MRI experiment from a config file: `python -m kdmri_jax.main --config
configs/brain_8x.py`.

Intentionally kept short (as flax's examples): flags in, `pipeline.run(config, workdir)` out. Any
config field can be overridden, e.g. `--config.stages=teacher,student --config.train.num_epochs=10`;
`--workdir` defaults to experiments/{dataset}/acc_{acc}/. Multi-host:
`--config.distributed.coordinator_address= host0:1234 --config.distributed.num_processes=2
--config.distributed.process_id=$RANK` (or `--config.distributed.auto=true` on TPU pods and SLURM).

Before any stage runs, every config field is checked against its declared range
(`kdmri_jax.config_ranges`) and the workdir is locked (`kdmri_jax.workdir_lock`): a second run on
a busy workdir is refused in one sentence naming the first. SIGTERM outside the training loops
(which save and stop on it themselves) ends the command with one sentence saying what was left
(from where `pipeline.run` records it was: `pipeline.Progress`), and status 143.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from kdmri_jax.errors import (
  InputError,
  Terminated,
  require_writable_dir,
  run_cli,
  terminate_as_exception,
)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(argv: list[str]) -> flags.FlagValues:
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config",
    os.path.join(_REPO, "configs", "default.py"),
    "Experiment config file (a Python file with get_config()).",
    flag_values=values,
    lock_config=True,
    sys_argv=argv,
  )
  flags.DEFINE_string(
    "workdir",
    None,
    "Output folder (default: config.workdir or experiments/{dataset}/acc_{acc}).",
    flag_values=values,
  )
  return values


def _config_path(argv: Sequence[str]) -> str | None:
  """The --config value (the last one wins, as for any absl flag)."""
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def _one_line(error: Exception) -> str:
  text = " ".join(str(error).split())
  return text if len(text) < 300 else text[:297] + "..."


def main(argv: Sequence[str]) -> int:
  """The command; SIGTERM outside the training loops (which handle it themselves) ends it with one
  sentence and status 143."""
  with terminate_as_exception():
    try:
      return _main(argv)
    except Terminated as stop:
      print(f"error: {stopped_sentence(stop)}", file=sys.stderr)
      return stop.exit_status


def _main(argv: Sequence[str]) -> int:
  argv = ["kdmri_jax.main", *argv]
  config, workdir = _parse(argv)
  from kdmri_jax import config_ranges  # after flag parsing: JAX starts only for a valid command

  config_ranges.check(config)
  from kdmri_jax import pipeline, train, workdir_lock

  command = "python -m kdmri_jax.main " + " ".join(shlex.quote(a) for a in argv[1:])
  workdir = require_writable_dir(workdir or pipeline.default_workdir(config), "--workdir")
  with workdir_lock.hold(workdir, command, workdir_lock.process_key(config.distributed)):
    try:
      return pipeline.run(config, workdir, command=command)
    except train.TrainingStopped as error:
      print(f"error: {error}", file=sys.stderr)
      return 1


def _parse(argv: list[str]):
  """(config, --workdir or None) of the command line; one sentence for a bad flag or config file."""
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path.split(":")[0]):
    raise InputError(f"config file {path} does not exist; pass e.g. --config configs/brain_4x.py.")
  try:
    values = _flags(argv)
    values(argv)
    config = values.config
    config.stages  # the config file loads lazily: fail here, not inside the pipeline
  except ModuleNotFoundError as error:
    if error.name != "configs" and not str(error.name).startswith("configs."):
      raise
    raise InputError(
      f"the config file imports {error.name!r}, which is not importable from "
      f"{os.getcwd()}; run the command from the repository root (where configs/ is) "
      f"or install the package (pip install .)."
    ) from None
  except (AttributeError, KeyError) as error:
    field = _one_line(error).strip("'\"")
    flag = next(
      (a.split("=")[0] for a in argv if a.startswith("--config.") and field in a), "--config.*"
    )
    raise InputError(
      f"{flag}: the config has no field {field!r}; see configs/default.py for the field names."
    ) from None
  except (flags.Error, TypeError, ValueError) as error:
    raise InputError(f"bad flag or config value: {_one_line(error)}.") from None
  except (FileNotFoundError, OSError) as error:
    raise InputError(f"cannot read the config file ({_one_line(error)}).") from None
  return config, values.workdir


def stopped_sentence(stop: Terminated) -> str:
  """What a termination signal outside the training loops left behind, and what to do; where the
  pipeline was comes from the `pipeline.Progress` that `pipeline.run` put on `stop`."""
  progress = stop.progress
  running = getattr(progress, "running", None)
  finished = list(getattr(progress, "finished", ()))
  signal_name = stop.signal
  if running in ("evaluate", "report"):
    return (
      f"stopped by {signal_name} during the {running} stage: it has no `done` marker, so rerun "
      f"the same command to redo it (finished stages are kept)."
    )
  if running is not None:
    return (
      f"stopped by {signal_name} in the {running} stage outside its training loop: the "
      f"checkpoints it saved are kept; rerun the same command to resume it."
    )
  if not finished:
    return (
      f"stopped by {signal_name} during start-up, before any stage began: no checkpoint or "
      f"result was written; rerun the same command to start the run."
    )
  after = f"after the {_stage_names(finished)} finished"
  following = progress.next_stage()
  if following is None:
    return f"stopped by {signal_name} {after}, the last of this run: every stage is done."
  return (
    f"stopped by {signal_name} {after}, before the {following} stage began: finished stages are "
    f"kept (marked done); rerun the same command to go on with the {following} stage."
  )


def _stage_names(stages: Sequence[str]) -> str:
  """'teacher stage', 'teacher and student stages', 'teacher, student and kd stages'."""
  if len(stages) == 1:
    return f"{stages[0]} stage"
  return f"{', '.join(stages[:-1])} and {stages[-1]} stages"


if __name__ == "__main__":
  sys.exit(run_cli(main))
