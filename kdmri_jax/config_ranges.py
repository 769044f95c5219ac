"""The declared range of every config field, in one table, checked when `kdmri_jax.main` starts.

`RANGES` maps each dotted field of configs/default.py to a `Range`: its type, bounds or choices, and
whether None is allowed (tests/test_config_ranges.py fails for a field without one). Choices come
from the project's own registries (model presets, losses, feature losses, mask families, stages),
so a new entry there is accepted here without an edit. `check(config)` refuses the first field
outside its range in one sentence that names the field, before anything is built, written or
trained.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Iterator

from kdmri_jax.errors import InputError

TASKS = ("reconstruction", "super_resolution")
DATA_SOURCES = ("h5", "tfds")
COMPUTE_DTYPES = ("float32", "bfloat16")
KD_INIT_FROM = ("feature", "student", "scratch")


@dataclasses.dataclass(frozen=True)
class Range:
  """What one field accepts: a value of `kind` within [low, high] (open ends when `*_open`), one
  of `choices()`, or what `parse(field, value)` accepts (raising `InputError` naming the field)."""

  kind: type
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  choices: Callable[[], Iterable[str]] | None = None
  parse: Callable[[str, Any], Any] | None = None
  optional: bool = False

  def describe(self) -> str:
    """'an integer ≥ 1', 'a number in (0, 1]', 'true or false', ..."""
    noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
    if self.low is not None and self.high is not None:
      left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
      noun += f" in {left}{_show(self.low)}, {_show(self.high)}{right}"
    elif self.low is not None:
      noun += f" {'>' if self.low_open else '≥'} {_show(self.low)}"
    return noun + (" (or None)" if self.optional else "")

  def problem(self, field: str, value: Any) -> str | None:
    """Why `value` is outside the range (None: inside); `parse` raises its own sentence."""
    if value is None:
      return None if self.optional else f"is not set; it must be {self.describe()}"
    if not _is_kind(value, self.kind):
      return f"is not {self.describe()}"
    if self.kind in (int, float) and not self._within(value):
      return f"is out of range: it must be {self.describe()}"
    if self.choices is not None and value not in set(self.choices()):
      return f"is not one of {sorted(self.choices())}"
    if self.parse is not None:
      self.parse(field, value)
    return None

  def _within(self, value: float) -> bool:
    if not math.isfinite(value):
      return False
    above = self.low is None or (value > self.low if self.low_open else value >= self.low)
    below = self.high is None or (value < self.high if self.high_open else value <= self.high)
    return above and below


def _show(bound: float) -> str:
  return str(int(bound)) if float(bound).is_integer() else str(bound)


def _is_kind(value: Any, kind: type) -> bool:
  if isinstance(value, bool):
    return kind is bool
  if kind is float:
    return isinstance(value, (int, float))
  return isinstance(value, kind)


# --- kinds of field -------------------------------------------------------------------------------


def integer(low: int, optional: bool = False) -> Range:
  return Range(int, low=low, optional=optional)


def number(low: float, high: float | None = None, low_open: bool = False) -> Range:
  return Range(float, low=low, high=high, low_open=low_open)


def one_of(choices: Callable[[], Iterable[str]]) -> Range:
  return Range(str, choices=choices)


def text(optional: bool = True) -> Range:
  """A free string (a path, an address); None when `optional`."""
  return Range(str, optional=optional)


def flag() -> Range:
  return Range(bool)


def parsed(parse: Callable[[str, Any], Any]) -> Range:
  return Range(str, parse=parse)


# --- the project's registries and parsers ---------------------------------------------------------


def _datasets():
  from kdmri_jax import data

  return data.DATASETS


def _model_presets():
  from kdmri_jax import models

  return models.PRESETS


def _reconstruction_losses():
  from kdmri_jax import losses

  return losses.RECONSTRUCTION_LOSSES


def _sft_agreements():
  from kdmri_jax import sft

  return tuple(sft.AGREEMENTS)


def _imitation_objectives():
  from kdmri_jax import losses

  return losses.IMITATION_OBJECTIVES


def _feature_losses():
  from kdmri_jax import feature_losses

  return feature_losses.FEATURE_LOSSES


def _feature_best():
  from kdmri_jax import train

  return train.FEATURE_BEST


def _mask_families():
  from kdmri_jax import masks

  return masks.MASK_FAMILIES


def _acceleration(field: str, value: str) -> None:
  from kdmri_jax import masks

  try:
    masks.parse_acceleration(value)
  except InputError:
    raise InputError(f"config.{field}={value!r} is not an acceleration ≥ 1 such as '4x'.") from None


def _stages(field: str, value: str) -> None:
  from kdmri_jax import pipeline

  pipeline.parse_stages(value)  # its sentence names config.stages


def _trained_stages(field: str, value: str) -> None:
  from kdmri_jax import pipeline

  unknown = [s for s in pipeline.split_names(value) if s not in pipeline.TRAINED_STAGES]
  if unknown:
    raise InputError(
      f"config.{field}={value!r} names unknown stage(s) {unknown}; choose from "
      f"{','.join(pipeline.TRAINED_STAGES)}."
    )


def _layer_pairs(field: str, value: str) -> None:
  from kdmri_jax import train

  if value != "paper":
    train.parse_layer_pairs(value, model=None)  # its sentence names config.kd.layer_pairs


# --- the table ------------------------------------------------------------------------------------

RANGES: dict[str, Range] = {
  "dataset": one_of(_datasets),
  "acc": parsed(_acceleration),
  "task": one_of(lambda: TASKS),
  "stages": parsed(_stages),
  "workdir": text(),
  "pretrained_teacher": text(),
  "data.root": text(),
  "data.cache_dir": text(),
  "data.mask_path": text(),
  "data.source": one_of(lambda: DATA_SOURCES),
  "data.image_size": integer(7),  # SSIM's 7×7 window (kdmri_jax.metrics)
  "data.num_workers": integer(0),
  "data.seed": integer(0),
  "data.mask_seed": integer(0),
  "data.mask_family": one_of(_mask_families),
  "data.max_slices": integer(1, optional=True),
  "data.tfds_dir": text(),
  "models.teacher": one_of(_model_presets),
  "models.student": one_of(_model_presets),
  "models.num_cascades": integer(1, optional=True),
  "models.features": integer(1, optional=True),
  "models.student_features": integer(1, optional=True),
  "kd.imitation": one_of(_imitation_objectives),
  "kd.alpha": number(0, 1),
  "kd.feature_loss": one_of(_feature_losses),
  "kd.layer_pairs": parsed(_layer_pairs),
  "kd.feature_weight": number(0, low_open=True),
  "kd.feature_best": one_of(_feature_best),
  "kd.kd_feature_weight": number(0),
  "kd.init_from": one_of(lambda: KD_INIT_FROM),
  "sft.enabled": flag(),
  "sft.branch_weight": number(0),
  "sft.agreement_weight": number(0),
  "sft.agreement": one_of(_sft_agreements),
  "train.batch_size": integer(1),
  "train.num_epochs": integer(1),
  "train.learning_rate": number(0, low_open=True),
  "train.lr_step_epochs": integer(1),
  "train.lr_gamma": number(0, 1, low_open=True),
  "train.seed": integer(0),
  "train.loss": one_of(_reconstruction_losses),
  "train.compute_dtype": one_of(lambda: COMPUTE_DTYPES),
  "train.log_every_steps": integer(1),
  "train.checkpoint_every_steps": integer(0),
  "train.keep_checkpoints": integer(1),
  "train.num_image_examples": integer(0),
  "train.progress_bar": flag(),
  "evaluate.batch_size": integer(1),
  "evaluate.stages": parsed(_trained_stages),
  "evaluate.save_reconstructions": flag(),
  "distributed.auto": flag(),
  "distributed.coordinator_address": text(),
  "distributed.num_processes": integer(1, optional=True),
  "distributed.process_id": integer(0, optional=True),
  "sr.keep": integer(1),  # at most data.image_size: checked with the data (kdmri_jax.data.sr)
}


def fields(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(dotted name, value) of every leaf field of a ConfigDict (or dict), depth first."""
  for key, value in config.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from fields(value, name + ".")
    else:
      yield name, value


def check(config: Any) -> None:
  """Refuses, in one sentence naming the field, the first field outside its declared range."""
  for field, value in fields(config):
    declared = RANGES.get(field)
    if declared is None:
      continue  # a field only a config file of the user's adds: nothing reads it
    problem = declared.problem(field, value)
    if problem is not None:
      raise InputError(
        f"config.{field}={value!r} {problem}; change it in "
        f"the config file or pass --config.{field}=VALUE."
      )
