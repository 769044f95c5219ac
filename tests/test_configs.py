"""Tests for configs/*.py: every file loads through the CLI's flag machinery, overrides work, and
the defaults are the paper's training settings."""

from __future__ import annotations

import glob
import os

import pytest

from kdmri_jax import main, pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The training configs (configs/sr_*.py, ablation.py and methods.py take arguments and have their
# own tests in tests/test_sr.py and the methods' tests).
NAMES = ["default", "demo"] + [
  f"{d}_{a}" for d in ("brain", "cardiac", "knee") for a in ("4x", "5x", "8x")
]
CONFIGS = [os.path.join(REPO, "configs", f"{name}.py") for name in NAMES]


def load(path, *overrides):
  argv = ["kdmri_jax.main", f"--config={path}", *overrides]
  values = main._flags(argv)  # pylint: disable=protected-access
  values(argv)
  return values.config


def test_the_config_files_exist():
  names = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs", "*.py"))}
  assert {f"{name}.py" for name in NAMES} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_names_real_stages_and_models(path):
  config = load(path)
  assert pipeline.parse_stages(config.stages)
  assert config.dataset in ("brain", "cardiac", "knee") and config.acc in ("4x", "5x", "8x")
  for role in ("teacher", "student"):
    pipeline.build_model(config, role)  # a preset of the config's task
  assert config.train.batch_size >= 1 and config.train.num_epochs >= 1


@pytest.mark.parametrize("dataset", ["brain", "cardiac", "knee"])
@pytest.mark.parametrize("acc", ["4x", "5x", "8x"])
def test_variants_set_dataset_and_acceleration_and_keep_the_paper_settings(dataset, acc):
  config = load(os.path.join(REPO, "configs", f"{dataset}_{acc}.py"))
  assert (config.dataset, config.acc, config.task) == (dataset, acc, "reconstruction")
  train = config.train
  assert (train.learning_rate, train.lr_step_epochs, train.lr_gamma) == (1e-3, 40, 0.1)
  assert (train.batch_size, train.num_epochs, train.seed) == (4, 150, 42)
  assert (config.kd.alpha, config.kd.feature_loss, config.kd.init_from) == (
    0.5,
    "attention",
    "feature",
  )
  assert (config.models.teacher, config.models.student) == ("teacher", "student")
  assert config.stages == "teacher,student,feature,kd,evaluate,report"


def test_overrides_change_fields_with_their_types():
  config = load(
    os.path.join(REPO, "configs", "brain_8x.py"),
    "--config.stages=teacher,student",
    "--config.train.num_epochs=3",
    "--config.kd.alpha=0.25",
    "--config.data.root=/data/brain",
    "--config.models.num_cascades=2",
    "--config.train.compute_dtype=bfloat16",
    "--config.distributed.num_processes=2",
  )
  assert (
    config.stages == "teacher,student" and config.train.num_epochs == 3 and config.kd.alpha == 0.25
  )
  assert config.data.root == "/data/brain" and config.models.num_cascades == 2
  assert config.train.compute_dtype == "bfloat16" and config.distributed.num_processes == 2
  assert config.acc == "8x"  # untouched fields keep the file's values


def test_demo_is_small():
  config = load(os.path.join(REPO, "configs", "demo.py"))
  assert config.data.root is None and config.dataset == "brain"  # the embedded brain
  assert config.data.image_size <= 96 and config.train.num_epochs <= 20


def test_demo_distils_the_committed_teacher_of_its_own_model():
  """configs/demo.py names a committed, finished teacher whose parameters fit the demo's teacher."""
  import jax
  import numpy as np

  from kdmri_jax import checkpoints, pipeline, pretrained, train

  config = load(os.path.join(REPO, "configs", "demo.py"))
  folder = pretrained.check_source(config.pretrained_teacher)
  assert folder.startswith(os.path.join(REPO, "experiments", "pretrained"))
  _, params, _ = checkpoints.load_params(os.path.join(folder, "best"), expected_model="teacher")
  _, model = pipeline.build_model(config, "teacher")
  # shapes of a fresh init; conv weights do not depend on H, W
  expected = train._param_shapes(model)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, expected)
  assert load(os.path.join(REPO, "configs", "brain_cpu.py")).pretrained_teacher is None


def test_generated_mask_defaults_are_the_masks_modules():
  from kdmri_jax import masks
  from kdmri_jax.data import embedded

  data = load(os.path.join(REPO, "configs", "default.py")).data
  spec = embedded.BrainSpec()
  assert data.mask_seed == spec.mask_seed == masks.DEFAULT_MASK_SEED
  assert data.mask_family == spec.mask_family == masks.DEFAULT_FAMILY


def test_default_holds_the_stage_list_and_the_super_resolution_section():
  config = load(os.path.join(REPO, "configs", "default.py"))
  assert config.stages == ",".join(pipeline.STAGES) == "teacher,student,feature,kd,evaluate,report"
  assert config.sr.keep == 64 and config.data.tfds_dir is None and config.data.image_size == 240
  for name, keep, size in (("sr_vdsr", 64, 256), ("sr_demo", 16, 64)):
    sr_config = load(os.path.join(REPO, "configs", f"{name}.py"), "--config.sr.keep=8")
    assert sr_config.sr.keep == 8 and sr_config.data.image_size == size  # the flag sets the field
    assert load(os.path.join(REPO, "configs", f"{name}.py")).sr.keep == keep
