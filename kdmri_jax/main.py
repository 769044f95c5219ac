"""Runs the KD-MRI experiment from a config file: `python -m kdmri_jax.main --config configs/brain_8x.py`.

Intentionally kept short (as flax's examples): flags in, `pipeline.run(config, workdir)` out. Any config
field can be overridden, e.g. `--config.stages=teacher,student --config.train.num_epochs=10`; `--workdir`
defaults to experiments/{dataset}/acc_{acc}/. Multi-host: `--config.distributed.coordinator_address=
host0:1234 --config.distributed.num_processes=2 --config.distributed.process_id=$RANK` (or
`--config.distributed.auto=true` on TPU pods and SLURM).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from kdmri_jax.errors import InputError, run_cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(argv: list[str]) -> flags.FlagValues:
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", os.path.join(_REPO, "configs", "default.py"),
                                  "Experiment config file (a Python file with get_config()).",
                                  flag_values=values, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir or "
                      "experiments/{dataset}/acc_{acc}).", flag_values=values)
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
  # Configs import their defaults as `configs.default`: make the repository (and the config file's
  # parent folder) importable wherever the command runs from.
  for path in (_REPO, os.getcwd()):
    if path not in sys.path:
      sys.path.insert(0, path)
  argv = ["kdmri_jax.main", *argv]
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path.split(":")[0]):
    raise InputError(f"config file {path} does not exist; pass e.g. --config configs/brain_4x.py.")
  try:
    values = _flags(argv)
    values(argv)
    config = values.config
    config.stages  # the config file loads lazily: fail here, not inside the pipeline
  except (AttributeError, KeyError) as error:
    field = _one_line(error).strip("'\"")
    flag = next((a.split("=")[0] for a in argv if a.startswith("--config.") and field in a), "--config.*")
    raise InputError(f"{flag}: the config has no field {field!r}; see configs/default.py for the "
                     f"field names.") from None
  except (flags.Error, TypeError, ValueError) as error:
    raise InputError(f"bad flag or config value: {_one_line(error)}.") from None
  except (FileNotFoundError, OSError) as error:
    raise InputError(f"cannot read the config file ({_one_line(error)}).") from None

  from kdmri_jax import pipeline, train  # after flag parsing: JAX starts only for a valid command
  command = "python -m kdmri_jax.main " + " ".join(shlex.quote(a) for a in argv[1:])
  try:
    return pipeline.run(config, values.workdir, command=command)
  except train.TrainingStopped as error:
    print(f"error: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(run_cli(main))
