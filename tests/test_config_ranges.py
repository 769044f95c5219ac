"""The declared config ranges (kdmri_jax/config_ranges.py): every field of configs/default.py has
one, every shipped config is inside them, and each refuses a value outside it in one sentence."""

from __future__ import annotations

import copy
import importlib
import math
import os
import re

import pytest

from configs import default
from kdmri_jax import config_ranges
from kdmri_jax.config_ranges import RANGES, Range
from kdmri_jax.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Config files that take an argument (`file.py:BASE,NAME`): one valid argument each.
CONFIG_ARGS = {"methods": ("demo,fitnet",), "ablation": ("demo,imitation_only",)}
# A value of the right type that each parsed (free-form) field refuses.
BAD_PARSED = {
  "acc": "fast",
  "stages": "teacher,distill",
  "evaluate.stages": "teacher,zf2",
  "kd.layer_pairs": "0.2-0.1",
}


def default_fields() -> dict[str, object]:
  return dict(config_ranges.fields(default.get_config()))


def test_every_default_field_has_a_declared_range():
  undeclared = sorted(set(default_fields()) - set(RANGES))
  assert not undeclared, (
    f"fields of configs/default.py without a range in config_ranges.RANGES: {undeclared}"
  )


def test_every_declared_range_is_a_field_of_the_default_config():
  stale = sorted(set(RANGES) - set(default_fields()))
  assert not stale, f"config_ranges.RANGES declares fields configs/default.py lacks: {stale}"


def shipped_configs():
  names = sorted(
    n[:-3]
    for n in os.listdir(os.path.join(REPO, "configs"))
    if n.endswith(".py") and n != "__init__.py"
  )
  return [(name, arg) for name in names for arg in CONFIG_ARGS.get(name, (None,))]


@pytest.mark.parametrize("name,arg", shipped_configs())
def test_every_shipped_config_is_within_the_ranges(name, arg):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config() if arg is None else module.get_config(arg)
  config_ranges.check(config)


def outside(field: str, declared: Range):
  """Values of `field` outside its declared range (or of the wrong type)."""
  if declared.parse is not None:
    return [BAD_PARSED[field], 4]
  if declared.choices is not None:
    return ["no_such_name", 1]
  if declared.kind is bool:
    return ["true", 1]
  if declared.kind is str:
    return [3, ["a"]]
  values = [True, "1", math.nan, math.inf]
  if declared.low is not None:
    values.append(declared.low if declared.low_open else declared.low - 1)
  if declared.high is not None:
    values.append(declared.high + 0.5)
  if declared.kind is int:
    values.append(float(declared.low) + 1)  # not an integer, though whole
  return values


CASES = [(field, value) for field, declared in RANGES.items() for value in outside(field, declared)]


def set_field(config, field: str, value) -> dict:
  """A plain-dict copy of `config` with `field` set (a ConfigDict refuses a wrong type itself)."""
  tree = copy.deepcopy(config.to_dict())
  *parents, leaf = field.split(".")
  node = tree
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  return tree


@pytest.mark.parametrize("field,value", CASES, ids=[f"{f}={v!r}" for f, v in CASES])
def test_a_value_outside_the_range_is_one_sentence_naming_the_field(field, value):
  with pytest.raises(InputError) as raised:
    config_ranges.check(set_field(default.get_config(), field, value))
  message = str(raised.value)
  assert f"config.{field}" in message, message
  assert "\n" not in message and message.endswith("."), message


def on_the_bounds(declared: Range):
  values = [] if declared.low is None or declared.low_open else [declared.low]
  if declared.high is not None:
    values.append(declared.high)
  if declared.optional:
    values.append(None)
  return [declared.kind(v) if v is not None else None for v in values]


BOUNDS = [(field, value) for field, declared in RANGES.items() for value in on_the_bounds(declared)]


@pytest.mark.parametrize("field,value", BOUNDS, ids=[f"{f}={v!r}" for f, v in BOUNDS])
def test_values_on_the_bounds_and_none_where_optional_are_accepted(field, value):
  config_ranges.check(set_field(default.get_config(), field, value))


def test_the_issue_cases_are_refused():
  """Issue 15, class 1: these broke resume or crashed after an epoch of training."""
  for field, value in [
    ("train.num_epochs", 0),
    ("train.num_epochs", -2),
    ("train.keep_checkpoints", 0),
    ("train.batch_size", 0),
    ("train.lr_step_epochs", 0),
    ("data.image_size", 0),
    ("evaluate.batch_size", 0),
    ("train.learning_rate", 0.0),
  ]:
    expected = rf"^config\.{re.escape(field)}={value!r} is out of range: it must be "
    with pytest.raises(InputError, match=expected):
      config_ranges.check(set_field(default.get_config(), field, value))


def test_the_sentence_says_the_range_and_how_to_change_it():
  with pytest.raises(InputError) as raised:
    config_ranges.check(set_field(default.get_config(), "kd.alpha", 1.5))
  assert str(raised.value) == (
    "config.kd.alpha=1.5 is out of range: it must be a number in "
    "[0, 1]; change it in the config file or pass "
    "--config.kd.alpha=VALUE."
  )


def test_choices_come_from_the_registries():
  from kdmri_jax import feature_losses, models

  with pytest.raises(InputError) as raised:
    config_ranges.check(set_field(default.get_config(), "models.teacher", "unet"))
  assert str(sorted(models.PRESETS)) in str(raised.value)
  for name in feature_losses.FEATURE_LOSSES:
    config_ranges.check(set_field(default.get_config(), "kd.feature_loss", name))
