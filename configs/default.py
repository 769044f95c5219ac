"""Default KD-MRI experiment: the paper's settings (Murugesan et al. 2020, reference code) on brain
4x.

Every other config imports this one and changes a few fields. Override any field from the command
line, e.g. `--config.train.num_epochs=10 --config.stages=teacher,student`. Each field's accepted
range (type, bounds, choices) is declared in kdmri_jax/config_ranges.py and checked when
`kdmri_jax.main` starts; a new field here needs an entry there (tests/test_config_ranges.py).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from kdmri_jax import masks, stages
from kdmri_jax.data import sr


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = "brain"  # 'brain' | 'cardiac' | 'knee'
  config.acc = "4x"  # '4x' | '5x' | '8x' (undersampling; unused for super-resolution)
  config.task = "reconstruction"  # 'reconstruction' (DC-CNN) | 'super_resolution' (VDSR)
  # Comma-separated stages to run, in this order; a stage whose `done` marker exists is skipped.
  config.stages = ",".join(stages.STAGES)  # every stage (kdmri_jax/stages.py)
  # None -> experiments/{dataset}/acc_{acc}; `--workdir` on the command line wins over both.
  config.workdir = placeholder(str)
  # None -> the teacher stage trains its own teacher. A finished teacher stage folder (`done` +
  # `best/`) -> copied into WORKDIR/teacher when that is absent, so the teacher stage finds it
  # finished (kdmri_jax.pretrained; configs/demo.py uses the committed experiments/pretrained/ one).
  config.pretrained_teacher = placeholder(str)
  config.data = data_config()
  config.sr = sr_config()
  config.models = models_config()
  config.kd = kd_config()
  config.sft = sft_config()
  config.train = train_config()
  config.evaluate = evaluate_config()
  config.distributed = distributed_config()
  return config


def data_config() -> ml_collections.ConfigDict:
  """Where the data and masks come from and how they are read."""
  data = ml_collections.ConfigDict()
  data.root = placeholder(str)  # None -> embedded MNI brain data, built into cache_dir
  data.cache_dir = placeholder(str)  # None -> the data package's default cache folder
  data.mask_path = placeholder(str)  # None -> {root}/masks/mask_{acc}.npy
  data.source = "h5"  # 'h5' (reference layout) | 'tfds'
  data.image_size = 240  # embedded brain / super-resolution target size
  data.num_workers = 2  # reader threads that prefetch batches; 0 reads synchronously (debugging)
  data.seed = 0  # seed of the embedded data (its augmented copies); masks have mask_seed
  # Generated masks (embedded brain): seeded draws of the family; 172 gives the authors' statistics.
  data.mask_seed = masks.DEFAULT_MASK_SEED  # 172
  # generated masks: "dccnn" (the authors' kind) | "gaussian" (before)
  data.mask_family = masks.DEFAULT_FAMILY  # "dccnn"
  # None -> every slice; an int keeps that many per split (demos, tests)
  data.max_slices = placeholder(int)
  data.tfds_dir = placeholder(str)  # source 'tfds': None -> its datasets are built in {root}/tfds
  return data


def sr_config() -> ml_collections.ConfigDict:
  """Super-resolution (config.task = 'super_resolution', `kdmri_jax.data.sr`)."""
  sr_section = ml_collections.ConfigDict()
  # The low-resolution input keeps the central keep×keep of the centred k-space: 64 (the paper's,
  # with 256×256 targets: 4× lower resolution per axis).
  sr_section.keep = sr.DEFAULT_KEEP
  return sr_section


def models_config() -> ml_collections.ConfigDict:
  """Teacher and student presets and their sizes."""
  models = ml_collections.ConfigDict()
  models.teacher = "teacher"  # kdmri_jax.models.PRESETS name: DC-CNN D5C5
  models.student = "student"  # DC-CNN D5C3
  models.num_cascades = placeholder(int)  # None -> the preset's (5); smaller for quick runs
  models.features = placeholder(int)  # None -> the preset's (32 DC-CNN, 64 VDSR)
  # None -> models.features; a different width gives the student fewer channels than the teacher
  # (FitNet then trains a 1×1 regressor alongside it in the feature stage).
  models.student_features = placeholder(int)
  return models


def kd_config() -> ml_collections.ConfigDict:
  """The feature (attention transfer) and imitation (KD) stages."""
  kd = ml_collections.ConfigDict()
  # KD loss (kdmri_jax.losses.IMITATION_OBJECTIVES): 'paper' α·L1(x_S, y) + (1 − α)·L1(x_S, x_T);
  # the authors' code: 'authors_code' L1(x_S, y) + L1(x_S, x_T)/numel (reconstruction train_kd.py),
  # 'authors_script' L1(x_S, y) from the feature stage (their train_kd.sh, imitation off),
  # 'authors_sr' L1(x_S, y) + L1(x_S, x_T) (super-resolution train_sr_kd.py).
  kd.imitation = "paper"
  kd.alpha = 0.5  # α of 'paper' (the other objectives have none)
  kd.feature_loss = "attention"  # kdmri_jax.feature_losses.FEATURE_LOSSES name
  # 'paper' -> feature_losses.PAPER_LAYER_PAIRS (teacher conv 3 : student conv 2 in every cascade),
  # or explicit 0-based paths 'teacher:student,...', e.g. '0.2:0.1,4.2:4.1' (DC-CNN) or '5:3'
  # (VDSR).
  kd.layer_pairs = "paper"
  kd.feature_weight = 1.0  # weight of the feature loss in the `feature` stage
  # The feature stage's best checkpoint: 'attention_mse' (the authors' code: lowest validation MSE
  # of the teacher/student attention maps on the layer pairs) | 'objective' (lowest validation
  # feature loss).
  kd.feature_best = "attention_mse"
  kd.kd_feature_weight = 0.0  # feature loss added to the `kd` stage's loss (0 in the paper)
  # student init for `kd`: 'feature' | 'student' (imitation-only ablation) | 'scratch'
  kd.init_from = "feature"
  return kd


def sft_config() -> ml_collections.ConfigDict:
  """Student-friendly teacher training (SFT-KD-Recon, Matcha et al.; kdmri_jax.sft)."""
  sft = ml_collections.ConfigDict()
  # True -> the teacher stage trains the teacher together with student branches (teacher cascades
  # 1..k, then the student's cascades k+1..N, for every k), so that later stages distil from it.
  sft.enabled = False
  sft.branch_weight = 1.0  # weight of the mean reconstruction loss of the student branches
  sft.agreement_weight = 1.0  # weight of the mean L1 between each branch and the teacher
  # 'mean' -> the agreement is a mean L1 (the follow-up's description); 'per_numel' -> divided
  # again by the number of elements of the output, as the follow-up's train_base_modelSFTN.py does.
  sft.agreement = "mean"
  return sft


def train_config() -> ml_collections.ConfigDict:
  """Optimisation, precision, logging and checkpointing of every training stage."""
  train = ml_collections.ConfigDict()
  train.batch_size = 4  # global batch (split over all devices of all hosts)
  train.num_epochs = 150
  train.learning_rate = 1e-3  # Adam, no weight decay
  train.lr_step_epochs = 40  # StepLR: ×lr_gamma every lr_step_epochs epochs
  train.lr_gamma = 0.1
  train.seed = 42  # parameter init and data order
  # reconstruction loss of teacher/student (kdmri_jax.losses.RECONSTRUCTION_LOSSES)
  train.loss = "l1"
  # 'bfloat16' on GPU/TPU halves activation memory; params stay float32
  train.compute_dtype = "float32"
  train.log_every_steps = 50  # progress-bar loss refresh and NaN check
  train.checkpoint_every_steps = 500  # mid-epoch checkpoints (0: only at epoch end)
  train.keep_checkpoints = 3  # latest training-state checkpoints kept
  train.num_image_examples = 4  # validation examples in the TensorBoard image grid
  train.progress_bar = True
  return train


def evaluate_config() -> ml_collections.ConfigDict:
  """The `evaluate` stage."""
  evaluate = ml_collections.ConfigDict()
  evaluate.batch_size = 4
  # trained stages compared with ZF in the table, in this order
  evaluate.stages = "teacher,student,kd"
  evaluate.save_reconstructions = True  # results/<model>/*.h5 as `kdmri_jax.valid` writes
  return evaluate


def distributed_config() -> ml_collections.ConfigDict:
  """Multi-host: None everywhere -> single process, or automatic detection on TPU/SLURM when
  `distributed.auto` is true."""
  dist = ml_collections.ConfigDict()
  dist.auto = False
  dist.coordinator_address = placeholder(str)  # 'host:port' of process 0
  dist.num_processes = placeholder(int)
  dist.process_id = placeholder(int)
  return dist


def for_dataset(dataset: str, acc: str) -> ml_collections.ConfigDict:
  """The paper's settings for one dataset and acceleration (what configs/{dataset}_{acc}.py
  return)."""
  config = get_config()
  config.dataset = dataset
  config.acc = acc
  return config


def placeholder(kind):
  """A None default that the command line can still set (ml_collections needs the type)."""
  return config_dict.placeholder(kind)
