"""The paper's comparison of feature-distillation methods: one method in the feature stage, then KD.

Usage (big_vision style, `config.py:arg`): `--config configs/methods.py:BASE,METHOD`, e.g.
`configs/methods.py:brain_4x,fitnet` or `configs/methods.py:demo,sp`. BASE is any config in configs/
with a plain `get_config()` (brain_4x, knee_8x, demo, sr_vdsr, ...); METHOD is a
`kdmri_jax.feature_losses.FEATURE_LOSSES` name. The run trains the teacher (skipped when its `done`
marker exists in the workdir), the feature stage with METHOD on the paper's layer pairs
(`config.kd.layer_pairs='paper'`; `fsp` reads each pair as the section from the cascade's first
conv), then the KD stage from it (`config.kd.imitation`: the paper's α·L1(x_S, y) + (1 − α)·L1(x_S,
x_T) by default) and evaluates ZF and the KD student. The feature stage keeps its best checkpoint by
`config.kd.feature_best` (default: the attention-map MSE on the same layers, whatever the method).

The same thing as an override of any config: `--config configs/brain_4x.py
--config.kd.feature_loss=fitnet`.
"""

from __future__ import annotations

import importlib
import os

from kdmri_jax.errors import InputError

_HERE = os.path.dirname(os.path.abspath(__file__))
# Config files that take an argument themselves, so cannot be a BASE.
_NOT_BASES = {"__init__", "ablation", "methods"}


def base_names() -> list[str]:
  """Config files usable as BASE: configs/*.py with a plain get_config()."""
  return sorted(
    name[:-3] for name in os.listdir(_HERE) if name.endswith(".py") and name[:-3] not in _NOT_BASES
  )


def base_config(name: str):
  """`configs/{name}.py`'s get_config(); one sentence listing the choices for an unknown name."""
  if name not in base_names():
    raise InputError(f"unknown base config {name!r}; choose one of {base_names()}.")
  return importlib.import_module(f"configs.{name}").get_config()


def split_arg(arg: str | None, default: str, what: str, usage: str) -> tuple[str, str]:
  """'BASE,NAME' -> (BASE, NAME); NAME alone uses `default` as BASE."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  if len(parts) == 1:
    parts = [default] + parts
  if len(parts) != 2:
    raise InputError(f"config argument {arg!r} is not 'BASE,{what}' (e.g. {usage}).")
  return parts[0], parts[1]


def get_config(arg: str | None = None):
  from kdmri_jax.feature_losses import FEATURE_LOSSES  # jax is imported, not started

  base, method = split_arg(arg, "brain_4x", "METHOD", "configs/methods.py:brain_4x,fitnet")
  if method not in FEATURE_LOSSES:
    raise InputError(
      f"unknown feature-distillation method {method!r}; choose one of {sorted(FEATURE_LOSSES)}."
    )
  config = base_config(base)
  config.kd.feature_loss = method
  config.kd.layer_pairs = "paper"
  config.kd.init_from = "feature"
  config.stages = "teacher,feature,kd,evaluate"
  config.evaluate.stages = "kd"
  return config
