"""One training stage of KD-MRI: state, objectives, the pure jitted step, and the resumable epoch
loop.

The four trained stages of the paper's Algorithm 1 differ only in their objective:
  teacher / student  L1(x, target)                              (reconstruction baselines)
  feature            w · mean over layer pairs of AT(F_T, F_S)  (teacher frozen; attention transfer)
  kd                 config.kd.imitation: the paper's α·L1(x_S, target) + (1 − α)·L1(x_S, x_T), or
                     what the authors' code computes (`losses.IMITATION_OBJECTIVES`; teacher frozen)
Validation loss (which picks the best checkpoint): MSE to the target; for `feature`,
config.kd.feature_best: the attention-map MSE of the authors' code (`losses.attention_mse`) or the
stage's own feature loss.
A feature loss with its own parameters (FitNet's 1×1 regressor when student and teacher channels
differ) trains them with the student as `{'student': ..., 'feature': ...}`; checkpoints in `best/`
hold the student's parameters only.

`train_step(state, batch) -> (state, metrics)` is one `jax.jit` over a `data` mesh: batch sharded,
parameters replicated, state donated. `fit` runs the epochs with Adam and step decay (×γ every
`lr_step_epochs` epochs), writes orbax checkpoints of the full state (params, optimizer, RNG, step —
the step fixes epoch and position, the data order follows from (seed, epoch)), keeps the best
parameters as an inference checkpoint in `<stage>/best`, and stops cleanly on SIGTERM/SIGINT or a
NaN loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from kdmri_jax import checkpoints, feature_losses, losses, models, sft, sharding
from kdmri_jax.atomic import write_text_atomic
from kdmri_jax.errors import InputError
from kdmri_jax.metrics import batch_psnr
from kdmri_jax.train_input import Batches

DONE = "done"  # marker file written after a stage's last epoch is saved


class TrainingStopped(Exception):
  """The run cannot go on (NaN loss); the message names stage and step and where the last good state
  is."""


@flax.struct.dataclass
class TrainState:
  """Everything needed to continue training exactly: the step also fixes the epoch and the
  position."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def learning_rate_schedule(train: Any, steps_per_epoch: int) -> optax.Schedule:
  """StepLR: lr · γ^⌊epoch / lr_step_epochs⌋, counted in steps."""
  return optax.exponential_decay(
    train.learning_rate,
    transition_steps=train.lr_step_epochs * steps_per_epoch,
    decay_rate=train.lr_gamma,
    staircase=True,
  )


def make_optimizer(train: Any, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam (no weight decay) with the step-decay schedule, as the reference code."""
  return optax.adam(learning_rate_schedule(train, steps_per_epoch))


def create_train_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    rng=jax.random.PRNGKey(seed),
  )


# --- objectives -----------------------------------------------------------------------------------

LossFn = Callable[[Any, Any, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Any, Any, Mapping[str, jax.Array]], jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a stage optimises: `loss(params, teacher_params, batch) -> (loss, aux metrics)` and
  `eval_loss(params, teacher_params, batch) -> per-example validation loss (B,)`.

  `params` is the trained tree (`trainable`): the model's parameters, or `{'student': model params,
  'feature': the feature loss's params}` when `init_loss_params` is set (FitNet between differing
  widths).
  """

  stage: str
  model: nn.Module  # the model being trained
  loss: LossFn
  eval_loss: EvalFn
  teacher: nn.Module | None = None  # frozen teacher (feature and kd stages)
  # rng -> the loss's own trainable params (a feature loss's; SFT's student branches)
  init_loss_params: Callable[[jax.Array], Any] | None = None
  # the trained tree's keys when the loss has params: (model's, loss's)
  tree_keys: tuple[str, str] = ("student", "feature")

  def trainable(self, model_params: Any, rng: jax.Array) -> Any:
    """The tree the optimiser trains, starting from `model_params` (unchanged when the loss has
    none)."""
    if self.init_loss_params is None:
      return model_params
    model_key, loss_key = self.tree_keys
    return {model_key: model_params, loss_key: self.init_loss_params(rng)}

  def model_params(self, params: Any) -> Any:
    """The model's parameters in a trained tree (what `best/` and later stages see)."""
    return _split(params, self.init_loss_params is not None, self.tree_keys)[0]


def _split(
  params: Any, with_loss_params: bool, keys: tuple[str, str] = ("student", "feature")
) -> tuple[Any, Any]:
  """(model params, the loss's params or None) of a trained tree; see `Objective.trainable`."""
  return (params[keys[0]], params[keys[1]]) if with_loss_params else (params, None)


def parse_layer_pairs(spec: str, model: nn.Module) -> tuple:
  """'paper' -> PAPER_LAYER_PAIRS (cut to the model's cascades), or '0.2:0.1,1.2:1.1' (0-based
  paths)."""
  if spec == "paper":
    if models.is_reconstruction(model):
      return tuple(
        p for p in feature_losses.PAPER_LAYER_PAIRS["dccnn"] if p[0][0] < model.num_cascades
      )
    return feature_losses.PAPER_LAYER_PAIRS["vdsr"]
  try:
    pairs = tuple(
      tuple(tuple(int(i) for i in side.split(".")) for side in pair.split(":"))
      for pair in spec.split(",")
    )
  except ValueError:
    pairs = ()
  if not pairs or any(len(p) != 2 for p in pairs):
    raise InputError(
      f"config.kd.layer_pairs={spec!r} is not 'paper' or 'teacher:student,...' with "
      f"0-based paths such as '0.2:0.1,1.2:1.1'."
    )
  return pairs


def _mse_per_example(prediction: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(
    jnp.square(prediction.astype(jnp.float32) - target), axis=tuple(range(1, target.ndim))
  )


def role_of(stage: str) -> str:
  """The model a stage trains: 'teacher' for the teacher stage, 'student' for the student, feature
  and kd stages."""
  return "teacher" if stage == "teacher" else "student"


def _unknown_stage(stage: str) -> InputError:
  return InputError(f"unknown training stage {stage!r}; choose teacher, student, feature or kd.")


def make_objective(
  stage: str,
  config: Any,
  model: nn.Module,
  teacher: nn.Module | None = None,
  student: nn.Module | None = None,
) -> Objective:
  """The objective of `stage` ('teacher', 'student', 'feature', 'kd') for `model` (and frozen
  `teacher`; `student`: the branches' model of an SFT teacher stage)."""
  recon = losses.RECONSTRUCTION_LOSSES.get(config.train.loss)
  if recon is None:
    raise InputError(
      f"config.train.loss={config.train.loss!r} is not one of "
      f"{sorted(losses.RECONSTRUCTION_LOSSES)}."
    )
  if uses_student_branches(stage, config):
    if student is None:
      raise InputError("the SFT teacher stage needs the student model (config.models.student).")
    return _sft_objective(config, model, student, recon)
  if stage in ("teacher", "student"):
    return _baseline_objective(stage, model, recon)
  if stage not in ("feature", "kd"):
    raise _unknown_stage(stage)
  if teacher is None:
    raise InputError(f"stage {stage!r} needs a teacher model.")
  distill = _distillation(stage, config, model, teacher)
  if stage == "feature":
    return _feature_objective(config, model, teacher, distill)
  return _kd_objective(config, model, teacher, distill, recon)


def _mse_eval(model: nn.Module) -> EvalFn:
  """Per-example MSE of `model`'s image to the target (the baselines' and KD's validation loss)."""

  def eval_loss(params, teacher_params, batch):
    del teacher_params
    return _mse_per_example(models.apply(model, params, batch)[0], batch["target"])

  return eval_loss


def _baseline_objective(stage: str, model: nn.Module, recon: losses.Distance) -> Objective:
  """teacher / student: `recon`(x, target), validated on the MSE to the target."""

  def loss(params, teacher_params, batch):
    del teacher_params
    image = models.apply(model, params, batch)[0]
    value = recon(image.astype(jnp.float32), batch["target"])
    return value, {"loss": value}

  return Objective(stage, model, loss, _mse_eval(model))


def uses_student_branches(stage: str, config: Any) -> bool:
  """True for a teacher stage trained student-friendly (config.sft.enabled; kdmri_jax.sft)."""
  return stage == "teacher" and bool(config.sft.enabled)


def _sft_objective(
  config: Any, model: nn.Module, student: nn.Module, recon: losses.Distance
) -> Objective:
  """teacher, student-friendly: kdmri_jax.sft's three-term loss over the teacher and the student
  branches (trained as the loss's own params); validated on the teacher's MSE to the target."""
  sft_config = config.sft
  sft.check_models(model, student)
  keys = ("teacher", "branches")
  value = sft.loss(
    model,
    student,
    recon,
    sft_config.branch_weight,
    sft_config.agreement_weight,
    sft_config.agreement,
  )
  mse_eval = _mse_eval(model)

  def loss(params, teacher_params, batch):
    del teacher_params
    return value(params["teacher"], params["branches"], batch)

  def eval_loss(params, teacher_params, batch):
    return mse_eval(params["teacher"], teacher_params, batch)

  init = sft.init_branches(student, 8, 8)  # parameter shapes do not depend on the image size
  return Objective("teacher", model, loss, eval_loss, None, init, keys)


@dataclasses.dataclass(frozen=True)
class _Distillation:
  """What the feature and KD stages share: the feature loss, its layer pairs and own parameters, and
  `features(params, teacher_params, batch)` -> (t_image, t_feats, s_image, s_feats, loss_params)."""

  name: str
  pairs: tuple
  init_loss_params: Callable[[jax.Array], Any] | None
  features: Callable[..., tuple]


def _distillation(stage: str, config: Any, model: nn.Module, teacher: nn.Module) -> _Distillation:
  name = config.kd.feature_loss
  feature_losses.get_feature_loss(name)  # one sentence for an unknown name, before any compilation
  pairs = parse_layer_pairs(config.kd.layer_pairs, model)
  uses_features = stage == "feature" or (stage == "kd" and config.kd.kd_feature_weight)
  init_loss_params = _loss_params_init(name, pairs, model, teacher) if uses_features else None
  with_loss_params = init_loss_params is not None

  def features(params, teacher_params, batch):
    """Teacher and student outputs, and the feature loss's own parameters (or None)."""
    params, loss_params = _split(params, with_loss_params)
    t_image, t_feats = models.apply(teacher, teacher_params, batch)
    t_image, t_feats = jax.lax.stop_gradient((t_image, t_feats))  # the teacher only gives targets
    s_image, s_feats = models.apply(model, params, batch)
    return t_image, t_feats, s_image, s_feats, loss_params

  return _Distillation(name, pairs, init_loss_params, features)


def _feature_objective(
  config: Any, model: nn.Module, teacher: nn.Module, distill: _Distillation
) -> Objective:
  """feature: w · the feature loss; validated by config.kd.feature_best."""
  weight, name, pairs, features = (
    config.kd.feature_weight,
    distill.name,
    distill.pairs,
    distill.features,
  )

  def loss(params, teacher_params, batch):
    _, t_feats, _, s_feats, loss_params = features(params, teacher_params, batch)
    value = weight * feature_losses.feature_distillation(name, t_feats, s_feats, pairs, loss_params)
    return value, {"loss": value}

  if feature_best(config) == "attention_mse":
    normalize = attention_normalization(name)

    def eval_loss(params, teacher_params, batch):
      _, t_feats, _, s_feats, _ = features(params, teacher_params, batch)
      return losses.attention_mse(t_feats, s_feats, pairs, normalize)
  else:

    def eval_loss(params, teacher_params, batch):
      value = loss(params, teacher_params, batch)[0]  # a batch-level loss, spread over the examples
      return jnp.full(batch["target"].shape[:1], value)

  return Objective("feature", model, loss, eval_loss, teacher, distill.init_loss_params)


def _kd_objective(
  config: Any, model: nn.Module, teacher: nn.Module, distill: _Distillation, recon: losses.Distance
) -> Objective:
  """kd: the imitation objective config.kd.imitation (+ kd_feature_weight · the feature loss);
  validated on the MSE to the target."""
  alpha, feature_weight = config.kd.alpha, config.kd.kd_feature_weight
  objective = config.kd.imitation
  losses.get_imitation(objective)  # one sentence for an unknown name, before any compilation
  name, pairs, features = distill.name, distill.pairs, distill.features
  with_loss_params = distill.init_loss_params is not None
  mse_eval = _mse_eval(model)

  def loss(params, teacher_params, batch):
    t_image, t_feats, s_image, s_feats, loss_params = features(params, teacher_params, batch)
    s_image = s_image.astype(jnp.float32)
    imitation = losses.imitation(
      s_image, t_image.astype(jnp.float32), batch["target"], alpha, config.train.loss, objective
    )
    value = imitation
    if feature_weight:
      value = value + feature_weight * feature_losses.feature_distillation(
        name, t_feats, s_feats, pairs, loss_params
      )
    return value, {
      "loss": value,
      "imitation": imitation,
      "reconstruction": recon(s_image, batch["target"]),
    }

  def eval_loss(params, teacher_params, batch):
    return mse_eval(_split(params, with_loss_params)[0], teacher_params, batch)

  return Objective("kd", model, loss, eval_loss, teacher, distill.init_loss_params)


FEATURE_BEST = ("attention_mse", "objective")


def feature_best(config: Any) -> str:
  """config.kd.feature_best, the feature stage's best criterion (one sentence if unknown)."""
  name = config.kd.feature_best
  if name not in FEATURE_BEST:
    raise InputError(f"config.kd.feature_best={name!r} is not one of {list(FEATURE_BEST)}.")
  return name


def attention_normalization(feature_loss: str) -> str:
  """How `attention_mse` normalises the maps: over the batch for `attention_code` (the authors'
  maps, in training and in their criterion alike), per sample for every other method (the paper's
  AT maps, which do not depend on what else is in the validation batch)."""
  return "batch" if feature_loss == "attention_code" else "sample"


def describe_objective(stage: str, config: Any) -> dict[str, Any]:
  """What a stage optimises and how its best checkpoint is chosen (kept in its checkpoint meta);
  α is recorded only for an objective that uses it."""
  if uses_student_branches(stage, config):
    return {
      "loss": config.train.loss,
      "sft": {k: config.sft[k] for k in ("branch_weight", "agreement_weight", "agreement")},
      "best": "val_mse",
    }
  if stage in ("teacher", "student"):
    return {"loss": config.train.loss, "best": "val_mse"}
  if stage == "feature":
    return {
      "feature_loss": config.kd.feature_loss,
      "layer_pairs": config.kd.layer_pairs,
      "feature_weight": config.kd.feature_weight,
      "best": feature_best(config),
    }
  if stage != "kd":
    raise _unknown_stage(stage)
  name = config.kd.imitation
  alpha = config.kd.alpha if name in losses.IMITATION_USES_ALPHA else None
  return {
    "imitation": name,
    "formula": losses.imitation_formula(name),
    "alpha": alpha,
    "loss": config.train.loss,
    "kd_feature_weight": config.kd.kd_feature_weight,
    "init_from": config.kd.init_from,
    "best": "val_mse",
  }


def _param_shapes(model: nn.Module, height: int = 8, width: int = 8) -> Any:
  return jax.eval_shape(
    lambda key: models.init_params(model, key, height, width), jax.random.PRNGKey(0)
  )


def _batch_shapes(
  model: nn.Module, height: int = 8, width: int = 8
) -> dict[str, jax.ShapeDtypeStruct]:
  batch = {
    "input": jax.ShapeDtypeStruct((2, height, width), jnp.float32),
    "target": jax.ShapeDtypeStruct((2, height, width), jnp.float32),
  }
  if models.is_reconstruction(model):
    batch["kspace"] = jax.ShapeDtypeStruct((2, height, width), jnp.complex64)
    batch["mask"] = jax.ShapeDtypeStruct((2, height, width), jnp.float32)
  return batch


def _loss_params_init(
  name: str, pairs: tuple, model: nn.Module, teacher: nn.Module
) -> Callable[[jax.Array], Any] | None:
  """rng -> the trainable parameters of feature loss `name` between `teacher` and `model`, or None
  when it has none (every method but FitNet between differing channel counts); decided from abstract
  shapes."""
  if name not in feature_losses.FEATURE_PARAM_INITS:
    return None
  batch = _batch_shapes(model)

  def feature_shapes(m):
    return jax.eval_shape(lambda p, b: models.apply(m, p, b)[1], _param_shapes(m), batch)

  t_feats, s_feats = feature_shapes(teacher), feature_shapes(model)

  def init(rng):
    return feature_losses.init_feature_params(name, t_feats, s_feats, pairs, rng)

  return init if jax.eval_shape(init, jax.random.PRNGKey(0)) else None


def check_objective(objective: Objective, height: int = 8, width: int = 8) -> None:
  """Traces the objective on abstract (height, width) inputs without computing anything, so a bad
  feature-loss name, layer pair or loss fails in one sentence before any training starts."""
  teacher = None if objective.teacher is None else _param_shapes(objective.teacher, height, width)
  params = jax.eval_shape(
    objective.trainable, _param_shapes(objective.model, height, width), jax.random.PRNGKey(0)
  )
  jax.eval_shape(objective.loss, params, teacher, _batch_shapes(objective.model, height, width))


# --- jitted steps ---------------------------------------------------------------------------------


def train_step(
  state: TrainState,
  batch: Mapping[str, jax.Array],
  teacher_params: Any,
  *,
  objective: Objective,
  tx: optax.GradientTransformation,
) -> tuple[TrainState, dict]:
  """One optimiser step on `batch` (pure; jit it with `make_train_step`)."""
  (_, metrics), grads = jax.value_and_grad(objective.loss, has_aux=True)(
    state.params, teacher_params, batch
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # carried so stochastic additions (augmentation) stay resumable
  rng, _ = jax.random.split(state.rng)
  metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def make_train_step(
  objective: Objective,
  tx: optax.GradientTransformation,
  mesh: jax.sharding.Mesh,
  teacher_params: Any = None,
) -> Callable[[TrainState, Mapping], tuple[TrainState, dict]]:
  """`train_step(state, batch) -> (state, metrics)` jitted on `mesh` (batch sharded, the rest
  replicated, state donated); the frozen teacher's parameters are passed as a replicated argument,
  not baked in."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step = jax.jit(
    lambda s, b, t: train_step(s, b, t, objective=objective, tx=tx),
    in_shardings=(repl, data, repl),
    out_shardings=(repl, repl),
    donate_argnums=0,
  )
  return lambda state, batch: step(state, batch, teacher_params)


def make_eval_step(objective: Objective, mesh: jax.sharding.Mesh, teacher_params: Any = None):
  """`eval_step(params, batch, weight) -> (Σ weight·loss, Σ weight·PSNR, Σ weight)` jitted on
  `mesh`; the PSNR is the trained model's reconstruction against the target, per slice
  (`metrics.batch_psnr`: range = the slice's max), so training curves show image quality next to the
  stage's own loss."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)

  def step(params, teacher, batch, weight):
    per_example = objective.eval_loss(params, teacher, batch)
    image = models.apply(objective.model, objective.model_params(params), batch)[0].astype(
      jnp.float32
    )
    psnr = jnp.where(weight > 0, batch_psnr(batch["target"].astype(jnp.float32), image), 0.0)
    return jnp.sum(per_example * weight), jnp.sum(psnr * weight), jnp.sum(weight)

  jitted = jax.jit(step, in_shardings=(repl, repl, data, data), out_shardings=(repl, repl, repl))
  return lambda params, batch, weight: jitted(params, teacher_params, batch, weight)


def make_predict(model: nn.Module, mesh: jax.sharding.Mesh):
  """`predict(params, batch) -> image (B, H, W)` jitted on `mesh`, output replicated for host reads
  (`inference.make_predict`, the one inference path)."""
  from kdmri_jax import inference  # here: this function is train.py's only use of it

  return inference.make_predict(model, mesh)


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# --- the loop -------------------------------------------------------------------------------------


@dataclasses.dataclass
class StageResult:
  status: str  # 'done' | 'interrupted'
  step: int
  best_val_loss: float
  best_step: int


class _StopRequest:
  """SIGTERM/SIGINT set a flag; the loop finishes its step, saves and returns. A second signal
  aborts.

  With several processes the flag is combined over all of them at `boundary` steps only (the same
  steps everywhere), so every host stops after the same step even if only one received the signal.
  """

  def __init__(self):
    self.signal: str | None = None
    self._previous = {}

  def requested(self, boundary: bool) -> bool:
    if jax.process_count() == 1:
      return self.signal is not None
    if not boundary:
      return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(self.signal is not None))
    if np.any(flags) and self.signal is None:
      self.signal = "a signal to another process"
    return bool(np.any(flags))

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:
      raise KeyboardInterrupt  # second Ctrl-C: stop now, without a final checkpoint
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def stage_paths(stage_dir: str) -> dict[str, str]:
  return {
    name: os.path.join(stage_dir, name) for name in ("checkpoints", "best", "tensorboard")
  } | {"log": os.path.join(stage_dir, "log.txt"), "done": os.path.join(stage_dir, DONE)}


def is_done(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, DONE))


def _state_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=True, enable_async_checkpointing=True
  )
  # Handlers named up front, so a fresh manager can read a step's array metadata before restoring
  # it.
  handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tiles equally shaped (H, W) images in [0, 1] into one (H', W') image with white gaps."""
  h, w = rows[0][0].shape
  grid = np.ones((len(rows) * (h + pad) - pad, len(rows[0]) * (w + pad) - pad), np.float32)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
  return grid


def summary_images(batch: Mapping[str, np.ndarray], prediction: np.ndarray) -> np.ndarray:
  """Rows of (input, target, reconstruction, |error|) on the target's scale, as the reference
  summaries."""
  rows = []
  for i in range(prediction.shape[0]):
    scale = max(float(np.max(batch["target"][i])), 1e-8)
    images = [
      batch["input"][i],
      batch["target"][i],
      prediction[i],
      np.abs(batch["target"][i] - prediction[i]),
    ]
    rows.append([np.clip(np.asarray(x, np.float32) / scale, 0, 1) for x in images])
  return image_grid(rows)


class _Log:
  """log.txt lines, stdout and TensorBoard, on the primary process only."""

  def __init__(self, paths: Mapping[str, str], enabled: bool):
    self.enabled = enabled
    self.path = paths["log"]
    self.writer = None
    if enabled:
      from tensorboardX import SummaryWriter

      self.writer = SummaryWriter(paths["tensorboard"])

  def say(self, text: str) -> None:
    """A line on stdout only."""
    if self.enabled:
      print(text, flush=True)

  def line(self, text: str, bar: Any = None) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(text + "\n")
    if bar is not None:
      bar.write(text)
    else:
      print(text, flush=True)

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    if self.writer is not None:
      for key, value in values.items():
        self.writer.add_scalar(key, value, step)

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    if self.writer is not None:
      self.writer.add_image(tag, image, step, dataformats="HW")

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


def _fetch(values: list[jax.Array]) -> np.ndarray:
  """Host copy of per-step scalars (one transfer each, no compiled stack of varying length)."""
  return np.asarray(jax.device_get(values), np.float64)


def _first_bad(values: np.ndarray, first_step: int) -> int | None:
  """The global step index of the first non-finite loss among per-step losses from `first_step`."""
  bad = np.flatnonzero(~np.isfinite(values))
  return None if bad.size == 0 else first_step + int(bad[0])


def fit(
  stage_dir: str,
  objective: Objective,
  init_params: Any,
  train_data: Batches,
  val_data: Batches,
  config: Any,
  mesh: jax.sharding.Mesh | None = None,
  teacher_params: Any = None,
  meta: Mapping[str, Any] | None = None,
  stop_at_step: int | None = None,
) -> StageResult:
  """Trains `objective.model` from `init_params` (or the latest checkpoint in `stage_dir`) to
  `config.train.num_epochs` epochs; returns how it ended. Raises `TrainingStopped` on a NaN loss.

  `stop_at_step` ends the run there as SIGTERM would (save, return 'interrupted'): for tests and for
  splitting a long run into jobs of bounded length.
  """
  train = config.train
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check_loop_settings(train, train_data, mesh)
  paths, steps_per_epoch = stage_paths(stage_dir), train_data.steps_per_epoch
  tx = make_optimizer(train, steps_per_epoch)
  with _checkpoint_managers(paths, train.keep_checkpoints) as (state_mngr, best_mngr):
    host_state, progress, moved, rebuilt = _restore_stage(
      state_mngr, best_mngr, paths, objective, init_params, tx, train, steps_per_epoch, meta
    )
    step = int(host_state.step)
    with contextlib.closing(_Log(paths, sharding.is_primary())) as log:
      line = start_line(
        objective.stage, stage_dir, step, steps_per_epoch, train.num_epochs, moved, rebuilt
      )
      _log_start(log, line, resumed=step > 0)
      state = sharding.replicate(host_state, mesh)
      loop = _EpochLoop(
        objective,
        train,
        train_data,
        val_data,
        mesh,
        tx,
        teacher_params,
        paths,
        state_mngr,
        best_mngr,
        log,
        progress,
        dict(meta or {}),
      )
      with _StopRequest() as stop:
        return loop.run(state, step, stop, stop_at_step)


@contextlib.contextmanager
def _checkpoint_managers(
  paths: Mapping[str, str], keep: int
) -> Iterator[tuple[ocp.CheckpointManager, ocp.CheckpointManager]]:
  """The stage's (training-state, best-model) checkpoint managers; on exit, however it comes, their
  pending writes are finished and both are closed."""
  state_mngr = _state_manager(paths["checkpoints"], keep)
  best_mngr = checkpoints.manager(paths["best"])
  try:
    yield state_mngr, best_mngr
  finally:
    state_mngr.wait_until_finished()
    best_mngr.wait_until_finished()
    state_mngr.close()
    best_mngr.close()


def _restore_stage(
  state_mngr: ocp.CheckpointManager,
  best_mngr: ocp.CheckpointManager,
  paths: Mapping[str, str],
  objective: Objective,
  init_params: Any,
  tx: optax.GradientTransformation,
  train: Any,
  steps_per_epoch: int,
  meta: Mapping[str, Any] | None,
) -> tuple[TrainState, dict[str, Any], list[int], int | None]:
  """(host state, progress, steps of damaged checkpoints moved aside, best step rebuilt or None):
  `restore_or_init`, then `rebuild_best` when best/ lost the model the state names."""
  moved: list[int] = []
  host_state, progress = restore_or_init(
    state_mngr, paths["checkpoints"], objective, init_params, tx, train, steps_per_epoch, moved
  )
  model_meta = dict(meta or {})
  rebuilt = rebuild_best(best_mngr, state_mngr, paths, objective, host_state, progress, model_meta)
  return host_state, progress, moved, rebuilt


def _log_start(log: _Log, line: str, resumed: bool) -> None:
  """The start line on stdout; in log.txt too when a resumed run takes over (where it did)."""
  if resumed:
    log.line(line)
  else:
    log.say(line)


def _check_loop_settings(train: Any, train_data: Batches, mesh: jax.sharding.Mesh) -> None:
  """One sentence for settings the loop cannot run with, before anything is written."""
  sharding.check_batch_size(train.batch_size, mesh)
  if train.log_every_steps < 1:
    raise InputError(f"config.train.log_every_steps={train.log_every_steps} must be at least 1.")
  if train_data.steps_per_epoch < 1:
    raise InputError(
      f"the training set has {len(train_data.source)} slices, fewer than one batch of "
      f"config.train.batch_size={train.batch_size}; lower the batch size or add data."
    )


def restore_or_init(
  state_mngr: ocp.CheckpointManager,
  where: str,
  objective: Objective,
  init_params: Any,
  tx: optax.GradientTransformation,
  train: Any,
  steps_per_epoch: int,
  moved: list[int] | None = None,
) -> tuple[TrainState, dict[str, Any]]:
  """(host training state, progress) from the newest readable checkpoint, or a fresh state from
  `init_params` when there is none; a damaged checkpoint is named, moved aside (its step appended to
  `moved`) and the previous one used. progress: 'best_val_loss', 'best_step', and 'epoch_loss_sum',
  'epoch_loss_count' (the training losses of the restored epoch's steps before the restart). `where`
  names the checkpoints' folder in messages."""
  # The feature loss's own parameters (FitNet's regressor), if any, start from a key of their own.
  loss_params_key = jax.random.fold_in(jax.random.PRNGKey(train.seed), 1)
  trainable = objective.trainable(init_params, loss_params_key)
  host_state = sharding.to_host(create_train_state(trainable, tx, train.seed))
  progress = {
    "best_val_loss": math.inf,
    "best_step": -1,
    "epoch_loss_sum": 0.0,
    "epoch_loss_count": 0,
  }
  latest, restored = checkpoints.restore_newest_good(
    state_mngr,
    lambda step: _restore_state(state_mngr, host_state, step, where),
    say=_say,
    moved=moved,
  )
  if latest is None:
    return host_state, progress
  saved = restored.meta
  if saved.get("steps_per_epoch") != steps_per_epoch:
    raise InputError(
      f"{where} was written with {saved.get('steps_per_epoch')} steps "
      f"per epoch but the data now gives {steps_per_epoch}; use the same data and "
      f"batch size or a new --workdir."
    )
  best = saved["best_val_loss"]
  progress.update(
    best_val_loss=math.inf if best is None else best,
    best_step=saved["best_step"],
    epoch_loss_sum=float(saved.get("epoch_loss_sum", 0.0)),
    epoch_loss_count=int(saved.get("epoch_loss_count", 0)),
  )
  return restored.state, progress


def _restore_state(
  state_mngr: ocp.CheckpointManager, target: TrainState, step: int, where: str
) -> Any:
  """Training checkpoint `step` (state and meta) restored into the layout of `target`; one sentence
  when it holds arrays of other shapes (a model or objective other than the config's)."""
  saved = state_mngr.item_metadata(step)["state"]  # raises for a damaged folder: moved aside
  if saved is not None:  # None: a manager that cannot tell; the restore itself still checks
    _check_state_shapes(saved, target, f"{where}/{step}")
  return state_mngr.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
  )


def _check_state_shapes(saved: Any, target: TrainState, where: str) -> None:
  """InputError unless the checkpoint's arrays (`saved`: orbax metadata) have `target`'s paths and
  shapes."""

  def shapes(tree):
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {_path_text(path): tuple(leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}

  got, want = shapes(saved), shapes(target)
  if got == want:
    return
  differing = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
  first = min(differing, key=lambda k: (not k.startswith("params/"), k))  # a parameter if one
  raise InputError(
    f"{where} holds a training state of another model or objective than this "
    f"config ({len(got)} arrays saved, {len(want)} expected; e.g. {first} saved as "
    f"{got.get(first)}, expected {want.get(first)}); rerun with the config it was "
    f"trained with, use another --workdir, or delete the stage folder to retrain."
  )


def _path_text(path: tuple) -> str:
  """'params/cascade_0/conv_0/kernel' for a pytree path (dataclass fields, keys or indices)."""
  names = [getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path]
  return "/".join(str(n) for n in names)


def rebuild_best(
  best_mngr: ocp.CheckpointManager,
  state_mngr: ocp.CheckpointManager,
  paths: Mapping[str, str],
  objective: Objective,
  host_state: TrainState,
  progress: Mapping[str, Any],
  model_meta: Mapping[str, Any],
) -> int | None:
  """When `best/` holds nothing but the restored training state names a best step (best/ was
  damaged and moved aside, or deleted), writes that step's model again from its training checkpoint
  (the same bits); returns the step rebuilt, or None. One sentence when that checkpoint is gone."""
  step = progress["best_step"]
  if step < 0 or best_mngr.all_steps():
    return None
  where, kept = paths["checkpoints"], sorted(state_mngr.all_steps())
  retrain = (
    f"delete {os.path.dirname(paths['best'])} to train the stage again, or use another --workdir"
  )
  if step not in kept:
    raise InputError(
      f"{paths['best']} holds no best model and the training checkpoint of its best "
      f"step {step} is no longer kept in {where} (steps {kept}); {retrain}."
    )
  try:
    state = _restore_state(state_mngr, host_state, step, where).state
  except InputError:
    raise
  except Exception as error:  # orbax raises many types for a damaged folder
    raise InputError(
      f"{paths['best']} holds no best model and the training checkpoint of its best "
      f"step {step} in {where} is unreadable ({type(error).__name__}); "
      f"{retrain}."
    ) from None
  save_best(
    best_mngr,
    objective.model_params(state.params),
    best_meta(model_meta, objective.stage, step, progress["best_val_loss"]),
  )
  return step


def best_meta(
  model_meta: Mapping[str, Any], stage: str, step: int, val_loss: float
) -> dict[str, Any]:
  """The `meta` item of a best-model checkpoint."""
  return {**model_meta, "stage": stage, "step": step, "val_loss": val_loss}


def save_best(best_mngr: ocp.CheckpointManager, host_params: Any, meta: Mapping[str, Any]) -> None:
  """Writes best-model checkpoint `meta['step']` and waits until it is on disk."""
  best_mngr.save(
    meta["step"],
    args=checkpoints.save_args(host_params, meta),
    metrics={"val_loss": meta["val_loss"]},
    force=True,
  )
  # The training state saved next records this step as the best: the best model must be on disk
  # first, or a kill between the two writes would leave a resumed run with no best/.
  best_mngr.wait_until_finished()


def start_line(
  stage: str,
  stage_dir: str,
  step: int,
  steps_per_epoch: int,
  num_epochs: int,
  moved: list[int],
  rebuilt: int | None,
) -> str:
  """What a stage found when it started: fresh or resumed (from which step, where in which epoch),
  damaged checkpoints moved aside, a best model rebuilt."""
  if step == 0:
    text = f"{stage}: starting in {stage_dir}"
  else:
    epoch, offset = divmod(step, steps_per_epoch)
    at = (
      f"the end of epoch {epoch}/{num_epochs}"
      if offset == 0
      else f"step {offset}/{steps_per_epoch} of epoch {epoch + 1}/{num_epochs}"
    )
    text = f"{stage}: resuming in {stage_dir} from step {step} ({at})"
  notes = []
  if moved:
    notes.append(f"moved aside the damaged checkpoint(s) of step {', '.join(map(str, moved))}")
  if rebuilt is not None:
    notes.append(f"rebuilt best/ from the training checkpoint of step {rebuilt}")
  return "; ".join([text, *notes])


def _say(text: str) -> None:
  if sharding.is_primary():
    print(text, flush=True)


@dataclasses.dataclass(frozen=True)
class _EpochTrained:
  """What one epoch's steps leave for the end-of-epoch actions."""

  loss: float  # mean training loss over all the epoch's steps, before and after a restart
  seconds: float


class _EpochLoop:
  """The epochs of one `fit` call: `run_epoch`, then `end_of_epoch` (validate, keep the best, log,
  checkpoint), until the last epoch or a stop."""

  def __init__(
    self,
    objective: Objective,
    train: Any,
    train_data: Batches,
    val_data: Batches,
    mesh: jax.sharding.Mesh,
    tx: optax.GradientTransformation,
    teacher_params: Any,
    paths: Mapping[str, str],
    state_mngr: ocp.CheckpointManager,
    best_mngr: ocp.CheckpointManager,
    log: _Log,
    progress: dict[str, Any],
    model_meta: dict[str, Any],
  ):
    self.objective, self.stage, self.train, self.mesh = objective, objective.stage, train, mesh
    self.train_data, self.val_data, self.paths, self.log = train_data, val_data, paths, log
    self.state_mngr, self.best_mngr = state_mngr, best_mngr
    self.progress, self.model_meta = progress, model_meta
    self.primary = sharding.is_primary()
    self.steps_per_epoch = train_data.steps_per_epoch
    self.total_steps = self.steps_per_epoch * train.num_epochs
    self.schedule = learning_rate_schedule(train, self.steps_per_epoch)  # what `tx` follows
    self.step_fn = make_train_step(objective, tx, mesh, teacher_params)
    self.eval_fn = make_eval_step(objective, mesh, teacher_params)
    self.predict = make_predict(objective.model, mesh)
    # One global batch of validation examples for the image summaries; each process feeds its rows.
    self.image_batch = val_data.examples(
      [i % len(val_data.source) for i in range(train.batch_size)]
    )
    self.shown = min(train.num_image_examples, len(val_data.source), train.batch_size)

  def run(
    self, state: TrainState, step: int, stop: _StopRequest, stop_at_step: int | None
  ) -> StageResult:
    """Epochs from `step` (of replicated `state`) to the last, or to a stop."""
    if step >= self.total_steps:
      self.log.line(f"{self.stage}: already trained to step {step}.")
    epoch = step // self.steps_per_epoch
    while step < self.total_steps:
      state, step, trained = self.run_epoch(state, step, epoch, stop, stop_at_step)
      if trained is None:
        return self.interrupted(state, step, epoch, stop)
      self.end_of_epoch(state, step, epoch, trained)
      epoch += 1
      if step < self.total_steps and stop.requested(True):
        return self.interrupted(None, step, epoch - 1, stop)
    return self.finish(step)

  def learning_rate(self, step: int) -> float:
    """The rate `tx` used at `step`, read from its schedule."""
    return float(self.schedule(step))

  def run_epoch(
    self, state: TrainState, step: int, epoch: int, stop: _StopRequest, stop_at_step: int | None
  ) -> tuple[TrainState, int, _EpochTrained | None]:
    """Trains from `step` to the end of `epoch`, checking losses and logging at boundaries, saving
    mid-epoch checkpoints; the epoch's loss and time, or None when a stop came before its end."""
    train, steps_per_epoch = self.train, self.steps_per_epoch
    offset = step - epoch * steps_per_epoch  # steps of the epoch already run (a resumed run)
    bar = self._progress_bar(epoch, offset)
    if offset == 0:  # a resumed epoch keeps the running sum of its steps before the restart
      self.progress.update(epoch_loss_sum=0.0, epoch_loss_count=0)
    start_time = time.time()
    pending, pending_from = [], step
    for local in self.train_data.epoch(epoch, offset):
      state, metrics = self.step_fn(state, sharding.global_batch(local, self.mesh))
      pending.append(metrics["loss"])
      step += 1
      if bar is not None:
        bar.update()
      if stop_at_step is not None and step >= stop_at_step and not stop.signal:
        stop.signal = f"stop_at_step={stop_at_step}"
      every = train.checkpoint_every_steps
      mid_checkpoint = bool(every) and step % every == 0
      boundary = step % train.log_every_steps == 0 or mid_checkpoint
      # A stop at an epoch's last step waits for its validation and checkpoint below.
      stopping = step % steps_per_epoch != 0 and stop.requested(boundary)
      if boundary or stopping:
        values = self._checked_losses(pending, pending_from)
        self._add_losses(values)
        pending, pending_from = [], step
        if bar is not None:
          bar.set_postfix(loss=f"{values[-1]:.4g}", lr=f"{self.learning_rate(step):.1e}")
        self.log.scalars({"train/loss": float(values[-1])}, step)
      if stopping:
        if bar is not None:
          bar.close()
        return state, step, None
      if mid_checkpoint and step % steps_per_epoch:
        self.save(state, step)
    if pending:
      self._add_losses(self._checked_losses(pending, pending_from))
    if bar is not None:
      bar.close()
    mean = self.progress["epoch_loss_sum"] / max(self.progress["epoch_loss_count"], 1)
    return state, step, _EpochTrained(mean, time.time() - start_time)

  def _add_losses(self, values: np.ndarray) -> None:
    """Adds per-step losses to the epoch's running sum one by one, so the sum does not depend on
    how the steps were grouped (or split by a restart)."""
    total = self.progress["epoch_loss_sum"]
    for value in values:
      total += float(value)
    self.progress.update(
      epoch_loss_sum=total, epoch_loss_count=self.progress["epoch_loss_count"] + values.size
    )

  def _progress_bar(self, epoch: int, offset: int) -> Any:
    if not (self.primary and self.train.progress_bar):
      return None
    from tqdm import tqdm

    return tqdm(
      total=self.steps_per_epoch,
      initial=offset,
      desc=f"{self.stage} {epoch + 1}/{self.train.num_epochs}",
      unit="step",
      leave=False,
      dynamic_ncols=True,
    )

  def _checked_losses(self, pending: list[jax.Array], first_step: int) -> np.ndarray:
    """The pending per-step losses on the host; `TrainingStopped` at the first non-finite one."""
    values = _fetch(pending)  # one transfer, then the check on the host
    bad = _first_bad(values, first_step)
    if bad is not None:
      last = self.state_mngr.latest_step()
      kept = (
        "no checkpoint saved yet"
        if last is None
        else f"kept the last good checkpoint (step {last})"
      )
      raise TrainingStopped(
        f"stage {self.stage}: the loss is NaN/Inf at step {bad + 1} (epoch "
        f"{bad // self.steps_per_epoch + 1}); {kept} in "
        f"{self.paths['checkpoints']}; lower config.train.learning_rate or "
        f"check the data."
      )
    return values

  def end_of_epoch(self, state: TrainState, step: int, epoch: int, trained: _EpochTrained) -> None:
    """After `epoch` (0-based) ends at `step`: validate, keep the best, log, checkpoint."""
    val_loss, val_psnr = self.validate(state.params)
    if not math.isfinite(val_loss):
      raise TrainingStopped(
        f"stage {self.stage}: the validation loss is NaN/Inf after step {step} "
        f"(epoch {epoch + 1}); kept the last good checkpoint in "
        f"{self.paths['checkpoints']}."
      )
    self.keep_best(state.params, step, val_loss)
    # Logged before the checkpoint that ends the epoch: a kill between the two repeats the epoch's
    # line (same values) after the resume instead of losing it.
    self.log_epoch(state.params, step, epoch, trained, val_loss, val_psnr)
    self.save(state, step)

  def validate(self, params: Any) -> tuple[float, float]:
    """(validation loss, mean validation PSNR in dB) over the validation slices."""
    total, psnr, count = 0.0, 0.0, 0.0
    for local, weight in self.val_data.evaluation():
      s, p, c = self.eval_fn(
        params,
        sharding.global_batch(local, self.mesh),
        sharding.global_batch({"w": weight}, self.mesh)["w"],
      )
      total, psnr, count = total + float(s), psnr + float(p), count + float(c)
    return total / max(count, 1.0), psnr / max(count, 1.0)

  def keep_best(self, params: Any, step: int, val_loss: float) -> None:
    """Saves the model's parameters to `best/` when `val_loss` is the lowest so far."""
    if not val_loss < self.progress["best_val_loss"]:
      return
    self.progress.update(best_val_loss=val_loss, best_step=step)
    if step in self.best_mngr.all_steps():  # saved by a run killed after it (same params)
      return
    host_params = sharding.to_host(self.objective.model_params(params))
    save_best(self.best_mngr, host_params, best_meta(self.model_meta, self.stage, step, val_loss))

  def save(self, state: TrainState, step: int) -> None:
    """The full training state and the loop's progress, as checkpoint `step` (asynchronously)."""
    if not bool(_all_finite(state.params)):
      raise TrainingStopped(
        f"stage {self.stage}: parameters became NaN/Inf by step {step}; kept "
        f"the last good checkpoint in {self.paths['checkpoints']} (lower "
        f"config.train.learning_rate)."
      )
    best = self.progress["best_val_loss"]
    mid_epoch = step % self.steps_per_epoch != 0  # an epoch's end starts the next one at zero
    meta_item = {
      "stage": self.stage,
      "step": step,
      "epoch": step // self.steps_per_epoch,
      "steps_per_epoch": self.steps_per_epoch,
      "best_step": self.progress["best_step"],
      "best_val_loss": best if math.isfinite(best) else None,
      "epoch_loss_sum": self.progress["epoch_loss_sum"] if mid_epoch else 0.0,
      "epoch_loss_count": self.progress["epoch_loss_count"] if mid_epoch else 0,
    }
    self.state_mngr.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(sharding.to_host(state)), meta=ocp.args.JsonSave(meta_item)
      ),
      force=True,
    )

  def log_epoch(
    self,
    params: Any,
    step: int,
    epoch: int,
    trained: _EpochTrained,
    val_loss: float,
    val_psnr: float,
  ) -> None:
    """TensorBoard scalars and validation images, and the epoch's line in log.txt."""
    lr = self.learning_rate(step - 1)  # the rate of the epoch's last step
    self.log.scalars(
      {
        "train/epoch_loss": trained.loss,
        "val/loss": val_loss,
        "val/psnr": val_psnr,
        "train/learning_rate": lr,
        "train/epoch_seconds": trained.seconds,
      },
      step,
    )
    rows = {k: v[self.val_data.rows] for k, v in self.image_batch.items()}
    prediction = np.asarray(
      sharding.to_host(
        self.predict(self.objective.model_params(params), sharding.global_batch(rows, self.mesh))
      )
    )
    if self.shown:
      shown = {k: v[: self.shown] for k, v in self.image_batch.items()}
      self.log.image(
        "validation/input_target_reconstruction_error",
        summary_images(shown, prediction[: self.shown]),
        step,
      )
    self.log.line(
      f"{self.stage} epoch {epoch + 1}/{self.train.num_epochs} step {step} "
      f"train_loss {trained.loss:.6g} val_loss {val_loss:.6g} val_psnr {val_psnr:.2f} "
      f"best {self.progress['best_val_loss']:.6g}@{self.progress['best_step']} "
      f"lr {lr:.1e} time {trained.seconds:.1f}s"
    )

  def interrupted(
    self, state: TrainState | None, step: int, epoch: int, stop: _StopRequest
  ) -> StageResult:
    """Saves `state` (None: already saved), waits for the write and says how to resume."""
    if state is not None:
      self.save(state, step)
    self.state_mngr.wait_until_finished()
    self.log.line(
      f"{self.stage}: stopped by {stop.signal} at step {step} (epoch {epoch + 1}); "
      f"saved {self.paths['checkpoints']}; rerun the same command to resume."
    )
    return self._result("interrupted", step)

  def _result(self, status: str, step: int) -> StageResult:
    return StageResult(status, step, self.progress["best_val_loss"], self.progress["best_step"])

  def finish(self, step: int) -> StageResult:
    """Waits for every write, then the stage's `done` marker."""
    self.state_mngr.wait_until_finished()
    self.best_mngr.wait_until_finished()
    if self.primary:
      write_text_atomic(
        self.paths["done"],
        json.dumps(
          {
            "stage": self.stage,
            "step": step,
            "best_val_loss": self.progress["best_val_loss"],
            "best_step": self.progress["best_step"],
          }
        ),
      )
    return self._result("done", step)
