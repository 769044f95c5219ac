"""Ablation, method-comparison and super-resolution configs: variants, overrides and bad
arguments."""

from __future__ import annotations

import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import ablation, methods, sr_demo, sr_vdsr
from kdmri_jax import feature_losses
from kdmri_jax.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(spec, *overrides):
  """Parses `--config=spec` (and overrides) as kdmri_jax.main does."""
  argv = ["test", f"--config={os.path.join(REPO, spec)}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
  )
  values(argv)
  return values.config


@pytest.mark.parametrize(
  "variant,stages,evaluated,init_from,alpha",
  [
    ("student", "teacher,student,evaluate", "teacher,student", "student", 0.5),
    ("imitation_only", "teacher,student,kd,evaluate", "kd", "student", 0.5),
    ("feature_only", "teacher,feature,kd,evaluate", "kd", "feature", 1.0),
    ("attention_imitation", "teacher,feature,kd,evaluate", "kd", "feature", 0.5),
  ],
)
def test_ablation_variants(variant, stages, evaluated, init_from, alpha):
  config = _load(f"configs/ablation.py:brain_8x,{variant}")
  assert (config.dataset, config.acc) == ("brain", "8x")
  assert config.stages == stages and config.evaluate.stages == evaluated
  assert config.kd.init_from == init_from and config.kd.alpha == alpha
  assert config.kd.feature_loss == "attention" and config.kd.layer_pairs == "paper"
  assert config.kd.imitation == "paper" and config.kd.feature_best == "attention_mse"
  assert config.train.num_epochs == 150  # the base config's settings are kept


def test_ablation_imitation_rows_keep_the_base_objective_and_feature_only_has_none(monkeypatch):
  from configs import default

  def authors_base(name):
    config = default.get_config()
    config.kd.imitation = "authors_code"
    return config

  monkeypatch.setattr(ablation, "base_config", authors_base)
  for variant in ("imitation_only", "attention_imitation"):
    assert ablation.get_config(f"brain_4x,{variant}").kd.imitation == "authors_code"
  config = ablation.get_config("brain_4x,feature_only")
  assert (config.kd.imitation, config.kd.alpha) == ("paper", 1.0)  # L1(x_S, y) alone


def test_ablation_on_other_bases_and_overrides():
  config = _load("configs/ablation.py:knee_4x,imitation_only", "--config.train.num_epochs=3")
  assert (config.dataset, config.acc, config.train.num_epochs) == ("knee", "4x", 3)
  assert ablation.get_config("imitation_only").dataset == "brain"  # BASE defaults to brain_4x
  sr = ablation.get_config("sr_vdsr,attention_imitation")
  assert sr.task == "super_resolution" and sr.models.student == "vdsr_student"


@pytest.mark.parametrize("method", sorted(feature_losses.FEATURE_LOSSES))
def test_methods_config(method):
  config = methods.get_config(f"demo,{method}")
  assert config.kd.feature_loss == method and config.kd.init_from == "feature"
  assert config.stages == "teacher,feature,kd,evaluate" and config.evaluate.stages == "kd"
  from configs import demo

  # the base config's settings stay
  assert config.data.image_size == demo.get_config().data.image_size


def test_methods_through_flags_and_plain_override():
  assert _load("configs/methods.py:cardiac_5x,fitnet").kd.feature_loss == "fitnet"
  # The override scheme on any config: --config.kd.feature_loss=NAME.
  assert _load("configs/brain_4x.py", "--config.kd.feature_loss=sp").kd.feature_loss == "sp"


def test_bad_arguments_get_one_sentence_listing_the_choices():
  with pytest.raises(
    InputError,
    match=r"unknown ablation variant 'at_only'; choose one of \['student', "
    r"'imitation_only', 'feature_only', 'attention_imitation'\]\.",
  ):
    ablation.get_config("brain_4x,at_only")
  with pytest.raises(
    InputError,
    match=r"unknown feature-distillation method 'hint'; choose one of \[.*"
    r"'fitnet'.*\]\.",
  ):
    methods.get_config("brain_4x,hint")
  with pytest.raises(
    InputError, match=r"unknown base config 'brain_3x'; choose one of \[.*'brain_4x'"
  ):
    methods.get_config("brain_3x,sp")
  with pytest.raises(InputError, match="is not 'BASE,VARIANT'"):
    ablation.get_config("brain_4x,student,extra")


def test_sr_configs():
  paper = sr_vdsr.get_config()
  assert paper.task == "super_resolution" and paper.data.image_size == 256 and paper.sr.keep == 64
  assert (paper.models.teacher, paper.models.student) == ("vdsr_teacher", "vdsr_student")
  assert paper.kd.layer_pairs == "paper" and feature_losses.PAPER_LAYER_PAIRS["vdsr"] == (
    ((5,), (3,)),
  )
  assert paper.kd.feature_loss == "attention" and paper.kd.alpha == 0.5
  demo = _load("configs/sr_demo.py", "--config.sr.keep=8")
  assert demo.data.image_size // demo.sr.keep == 8 and sr_demo.get_config().sr.keep == 16
  assert sr_demo.get_config().data.image_size // sr_demo.get_config().sr.keep == 256 // 64
