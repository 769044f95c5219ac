"""One training stage of KD-MRI: state, objectives, the pure jitted step, and the resumable epoch loop.

The four trained stages of the paper's Algorithm 1 differ only in their objective:
  teacher / student  L1(x, target)                                     (reconstruction baselines)
  feature            w · mean over layer pairs of AT(F_T, F_S)         (teacher frozen; attention transfer)
  kd                 config.kd.imitation: the paper's α·L1(x_S, target) + (1 − α)·L1(x_S, x_T), or
                     what the authors' code computes (`losses.IMITATION_OBJECTIVES`; teacher frozen)
Validation loss (which picks the best checkpoint): MSE to the target; for `feature`,
config.kd.feature_best: the attention-map MSE of the authors' code (`losses.attention_mse`) or the
stage's own feature loss.
A feature loss with its own parameters (FitNet's 1×1 regressor when student and teacher channels differ)
trains them with the student as `{'student': ..., 'feature': ...}`; checkpoints in `best/` hold the
student's parameters only.

`train_step(state, batch) -> (state, metrics)` is one `jax.jit` over a `data` mesh: batch sharded,
parameters replicated, state donated. `fit` runs the epochs with Adam and step decay (×γ every
`lr_step_epochs` epochs), writes orbax checkpoints of the full state (params, optimizer, RNG, step — the
step fixes epoch and position, the data order follows from (seed, epoch)), keeps the best parameters as an
inference checkpoint in `<stage>/best`, and stops cleanly on SIGTERM/SIGINT or a NaN loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from kdmri_jax import checkpoints, feature_losses, losses, models, sharding
from kdmri_jax.errors import InputError
from kdmri_jax.metrics import batch_psnr
from kdmri_jax.train_input import Batches

DONE = "done"  # marker file written after a stage's last epoch is saved


class TrainingStopped(Exception):
  """The run cannot go on (NaN loss); the message names stage and step and where the last good state is."""


@flax.struct.dataclass
class TrainState:
  """Everything needed to continue training exactly: the step also fixes the epoch and the position."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def learning_rate_schedule(train: Any, steps_per_epoch: int) -> optax.Schedule:
  """StepLR: lr · γ^⌊epoch / lr_step_epochs⌋, counted in steps."""
  return optax.exponential_decay(train.learning_rate, transition_steps=train.lr_step_epochs * steps_per_epoch,
                                 decay_rate=train.lr_gamma, staircase=True)


def make_optimizer(train: Any, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam (no weight decay) with the step-decay schedule, as the reference code."""
  return optax.adam(learning_rate_schedule(train, steps_per_epoch))


def create_train_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed))


# --- objectives ----------------------------------------------------------------------------------------

LossFn = Callable[[Any, Any, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Any, Any, Mapping[str, jax.Array]], jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a stage optimises: `loss(params, teacher_params, batch) -> (loss, aux metrics)` and
  `eval_loss(params, teacher_params, batch) -> per-example validation loss (B,)`.

  `params` is the trained tree (`trainable`): the model's parameters, or `{'student': model params,
  'feature': the feature loss's params}` when `init_loss_params` is set (FitNet between differing widths).
  """

  stage: str
  model: nn.Module  # the model being trained
  loss: LossFn
  eval_loss: EvalFn
  teacher: nn.Module | None = None  # frozen teacher (feature and kd stages)
  init_loss_params: Callable[[jax.Array], Any] | None = None  # rng -> the feature loss's trainable params

  def trainable(self, model_params: Any, rng: jax.Array) -> Any:
    """The tree the optimiser trains, starting from `model_params` (unchanged when the loss has none)."""
    if self.init_loss_params is None:
      return model_params
    return {"student": model_params, "feature": self.init_loss_params(rng)}

  def model_params(self, params: Any) -> Any:
    """The model's parameters in a trained tree (what `best/` and later stages see)."""
    return _split(params, self.init_loss_params is not None)[0]


def _split(params: Any, with_loss_params: bool) -> tuple[Any, Any]:
  """(model params, feature-loss params or None) of a trained tree; see `Objective.trainable`."""
  return (params["student"], params["feature"]) if with_loss_params else (params, None)


def parse_layer_pairs(spec: str, model: nn.Module) -> tuple:
  """'paper' -> PAPER_LAYER_PAIRS (cut to the model's cascades), or '0.2:0.1,1.2:1.1' (0-based paths)."""
  if spec == "paper":
    if models.is_reconstruction(model):
      return tuple(p for p in feature_losses.PAPER_LAYER_PAIRS["dccnn"] if p[0][0] < model.num_cascades)
    return feature_losses.PAPER_LAYER_PAIRS["vdsr"]
  try:
    pairs = tuple(tuple(tuple(int(i) for i in side.split(".")) for side in pair.split(":"))
                  for pair in spec.split(","))
  except ValueError:
    pairs = ()
  if not pairs or any(len(p) != 2 for p in pairs):
    raise InputError(f"config.kd.layer_pairs={spec!r} is not 'paper' or 'teacher:student,...' with "
                     f"0-based paths such as '0.2:0.1,1.2:1.1'.")
  return pairs


def _mse_per_example(prediction: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target), axis=tuple(range(1, target.ndim)))


def make_objective(stage: str, config: Any, model: nn.Module, teacher: nn.Module | None = None) -> Objective:
  """The objective of `stage` ('teacher', 'student', 'feature', 'kd') for `model` (and frozen `teacher`)."""
  recon = losses.RECONSTRUCTION_LOSSES.get(config.train.loss)
  if recon is None:
    raise InputError(f"config.train.loss={config.train.loss!r} is not one of "
                     f"{sorted(losses.RECONSTRUCTION_LOSSES)}.")

  def mse_eval(params, teacher_params, batch):
    del teacher_params
    return _mse_per_example(models.apply(model, params, batch)[0], batch["target"])

  if stage in ("teacher", "student"):
    def loss(params, teacher_params, batch):
      del teacher_params
      image = models.apply(model, params, batch)[0]
      value = recon(image.astype(jnp.float32), batch["target"])
      return value, {"loss": value}
    return Objective(stage, model, loss, mse_eval)

  if teacher is None:
    raise InputError(f"stage {stage!r} needs a teacher model.")
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

  if stage == "feature":
    weight = config.kd.feature_weight
    best_by = feature_best(config)
    normalize = attention_normalization(name)

    def loss(params, teacher_params, batch):
      _, t_feats, _, s_feats, loss_params = features(params, teacher_params, batch)
      value = weight * feature_losses.feature_distillation(name, t_feats, s_feats, pairs, loss_params)
      return value, {"loss": value}

    def eval_loss(params, teacher_params, batch):
      if best_by == "attention_mse":
        _, t_feats, _, s_feats, _ = features(params, teacher_params, batch)
        return losses.attention_mse(t_feats, s_feats, pairs, normalize)
      value = loss(params, teacher_params, batch)[0]  # a batch-level loss, spread over the examples
      return jnp.full(batch["target"].shape[:1], value)

    return Objective(stage, model, loss, eval_loss, teacher, init_loss_params)

  if stage == "kd":
    alpha, feature_weight = config.kd.alpha, config.kd.kd_feature_weight
    objective = config.kd.imitation
    losses.get_imitation(objective)  # one sentence for an unknown name, before any compilation

    def loss(params, teacher_params, batch):
      t_image, t_feats, s_image, s_feats, loss_params = features(params, teacher_params, batch)
      s_image = s_image.astype(jnp.float32)
      imitation = losses.imitation(s_image, t_image.astype(jnp.float32), batch["target"], alpha,
                                   config.train.loss, objective)
      value = imitation
      if feature_weight:
        value = value + feature_weight * feature_losses.feature_distillation(name, t_feats, s_feats, pairs,
                                                                             loss_params)
      return value, {"loss": value, "imitation": imitation,
                     "reconstruction": recon(s_image, batch["target"])}

    def eval_loss(params, teacher_params, batch):
      return mse_eval(_split(params, with_loss_params)[0], teacher_params, batch)

    return Objective(stage, model, loss, eval_loss, teacher, init_loss_params)

  raise InputError(f"unknown training stage {stage!r}; choose teacher, student, feature or kd.")


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
  """What a stage optimises and how its best checkpoint is chosen (kept in its checkpoint meta)."""
  if stage in ("teacher", "student"):
    return {"loss": config.train.loss, "best": "val_mse"}
  if stage == "feature":
    return {"feature_loss": config.kd.feature_loss, "layer_pairs": config.kd.layer_pairs,
            "feature_weight": config.kd.feature_weight, "best": feature_best(config)}
  name = config.kd.imitation
  return {"imitation": name, "formula": losses.imitation_formula(name), "alpha": config.kd.alpha,
          "uses_alpha": name in losses.IMITATION_USES_ALPHA, "loss": config.train.loss,
          "kd_feature_weight": config.kd.kd_feature_weight, "init_from": config.kd.init_from,
          "best": "val_mse"}


def _param_shapes(model: nn.Module, height: int = 8, width: int = 8) -> Any:
  return jax.eval_shape(lambda key: models.init_params(model, key, height, width), jax.random.PRNGKey(0))


def _batch_shapes(model: nn.Module, height: int = 8, width: int = 8) -> dict[str, jax.ShapeDtypeStruct]:
  batch = {"input": jax.ShapeDtypeStruct((2, height, width), jnp.float32),
           "target": jax.ShapeDtypeStruct((2, height, width), jnp.float32)}
  if models.is_reconstruction(model):
    batch["kspace"] = jax.ShapeDtypeStruct((2, height, width), jnp.complex64)
    batch["mask"] = jax.ShapeDtypeStruct((2, height, width), jnp.float32)
  return batch


def _loss_params_init(name: str, pairs: tuple, model: nn.Module, teacher: nn.Module
                      ) -> Callable[[jax.Array], Any] | None:
  """rng -> the trainable parameters of feature loss `name` between `teacher` and `model`, or None when it
  has none (every method but FitNet between differing channel counts); decided from abstract shapes."""
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
  params = jax.eval_shape(objective.trainable, _param_shapes(objective.model, height, width),
                          jax.random.PRNGKey(0))
  jax.eval_shape(objective.loss, params, teacher, _batch_shapes(objective.model, height, width))


# --- jitted steps ---------------------------------------------------------------------------------------

def train_step(state: TrainState, batch: Mapping[str, jax.Array], teacher_params: Any, *,
               objective: Objective, tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One optimiser step on `batch` (pure; jit it with `make_train_step`)."""
  (_, metrics), grads = jax.value_and_grad(objective.loss, has_aux=True)(state.params, teacher_params, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  rng, _ = jax.random.split(state.rng)  # carried so stochastic additions (augmentation) stay resumable
  metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def make_train_step(objective: Objective, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                    teacher_params: Any = None) -> Callable[[TrainState, Mapping], tuple[TrainState, dict]]:
  """`train_step(state, batch) -> (state, metrics)` jitted on `mesh` (batch sharded, the rest replicated,
  state donated); the frozen teacher's parameters are passed as a replicated argument, not baked in."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step = jax.jit(lambda s, b, t: train_step(s, b, t, objective=objective, tx=tx),
                 in_shardings=(repl, data, repl), out_shardings=(repl, repl), donate_argnums=0)
  return lambda state, batch: step(state, batch, teacher_params)


def make_eval_step(objective: Objective, mesh: jax.sharding.Mesh, teacher_params: Any = None):
  """`eval_step(params, batch, weight) -> (Σ weight·loss, Σ weight·PSNR, Σ weight)` jitted on `mesh`; the
  PSNR is the trained model's reconstruction against the target, per slice (`metrics.batch_psnr`: range =
  the slice's max), so training curves show image quality next to the stage's own loss."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)

  def step(params, teacher, batch, weight):
    per_example = objective.eval_loss(params, teacher, batch)
    image = models.apply(objective.model, objective.model_params(params), batch)[0].astype(jnp.float32)
    psnr = jnp.where(weight > 0, batch_psnr(batch["target"].astype(jnp.float32), image), 0.0)
    return jnp.sum(per_example * weight), jnp.sum(psnr * weight), jnp.sum(weight)

  jitted = jax.jit(step, in_shardings=(repl, repl, data, data), out_shardings=(repl, repl, repl))
  return lambda params, batch, weight: jitted(params, teacher_params, batch, weight)


def make_predict(model: nn.Module, mesh: jax.sharding.Mesh):
  """`predict(params, batch) -> image (B, H, W)` jitted on `mesh`, output replicated for host reads."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(lambda p, b: models.apply(model, p, b)[0].astype(jnp.float32),
                 in_shardings=(repl, data), out_shardings=repl)


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# --- the loop -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StageResult:
  status: str  # 'done' | 'interrupted'
  step: int
  best_val_loss: float
  best_step: int


class _StopRequest:
  """SIGTERM/SIGINT set a flag; the loop finishes its step, saves and returns. A second signal aborts.

  With several processes the flag is combined over all of them at `boundary` steps only (the same steps
  everywhere), so every host stops after the same step even if only one received the signal.
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
  return {name: os.path.join(stage_dir, name) for name in ("checkpoints", "best", "tensorboard")} | {
      "log": os.path.join(stage_dir, "log.txt"), "done": os.path.join(stage_dir, DONE)}


def is_done(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, DONE))


def _state_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tiles equally shaped (H, W) images in [0, 1] into one (H', W') image with white gaps."""
  h, w = rows[0][0].shape
  grid = np.ones((len(rows) * (h + pad) - pad, len(rows[0]) * (w + pad) - pad), np.float32)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
  return grid


def summary_images(batch: Mapping[str, np.ndarray], prediction: np.ndarray) -> np.ndarray:
  """Rows of (input, target, reconstruction, |error|) on the target's scale, as the reference summaries."""
  rows = []
  for i in range(prediction.shape[0]):
    scale = max(float(np.max(batch["target"][i])), 1e-8)
    images = [batch["input"][i], batch["target"][i], prediction[i], np.abs(batch["target"][i] - prediction[i])]
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


def _first_bad(losses_seen: list[jax.Array], first_step: int) -> int | None:
  """Index (as a global step) of the first non-finite loss among the pending per-step losses."""
  bad = np.flatnonzero(~np.isfinite(_fetch(losses_seen)))
  return None if bad.size == 0 else first_step + int(bad[0])


def fit(stage_dir: str, objective: Objective, init_params: Any, train_data: Batches, val_data: Batches,
        config: Any, mesh: jax.sharding.Mesh | None = None, teacher_params: Any = None,
        meta: Mapping[str, Any] | None = None, stop_at_step: int | None = None) -> StageResult:
  """Trains `objective.model` from `init_params` (or the latest checkpoint in `stage_dir`) to
  `config.train.num_epochs` epochs; returns how it ended. Raises `TrainingStopped` on a NaN loss.

  `stop_at_step` ends the run there as SIGTERM would (save, return 'interrupted'): for tests and for
  splitting a long run into jobs of bounded length.
  """
  train = config.train
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_batch_size(train.batch_size, mesh)
  if train.log_every_steps < 1:
    raise InputError(f"config.train.log_every_steps={train.log_every_steps} must be at least 1.")
  steps_per_epoch = train_data.steps_per_epoch
  if steps_per_epoch < 1:
    raise InputError(f"the training set has {len(train_data.source)} slices, fewer than one batch of "
                     f"config.train.batch_size={train.batch_size}; lower the batch size or add data.")
  total_steps = steps_per_epoch * train.num_epochs
  paths = stage_paths(stage_dir)
  primary = sharding.is_primary()
  stage = objective.stage
  tx = make_optimizer(train, steps_per_epoch)

  def learning_rate(step: int) -> float:  # the schedule's value, on the host (no device dispatch)
    return train.learning_rate * train.lr_gamma ** (step // (train.lr_step_epochs * steps_per_epoch))

  # The feature loss's own parameters (FitNet's regressor), if any, start from a key of their own.
  trainable = objective.trainable(init_params, jax.random.fold_in(jax.random.PRNGKey(train.seed), 1))
  host_state = sharding.to_host(create_train_state(trainable, tx, train.seed))
  state_mngr = _state_manager(paths["checkpoints"], train.keep_checkpoints)
  best_mngr = checkpoints.manager(paths["best"])
  progress = {"best_val_loss": math.inf, "best_step": -1}

  # The newest readable checkpoint; a damaged one is named, moved aside and the previous one used.
  latest, restored = checkpoints.restore_newest_good(
      state_mngr, lambda step: state_mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(host_state), meta=ocp.args.JsonRestore())),
      say=lambda text: print(text, flush=True) if primary else None)
  if latest is not None:
    saved = restored.meta
    if saved.get("steps_per_epoch") != steps_per_epoch:
      raise InputError(f"{paths['checkpoints']} was written with {saved.get('steps_per_epoch')} steps per "
                       f"epoch but the data now gives {steps_per_epoch}; use the same data and batch size "
                       f"or a new --workdir.")
    host_state = restored.state
    best = saved["best_val_loss"]
    progress.update(best_val_loss=math.inf if best is None else best, best_step=saved["best_step"])
  state = sharding.replicate(host_state, mesh)
  step = int(host_state.step)
  model_meta = dict(meta or {})

  step_fn = make_train_step(objective, tx, mesh, teacher_params)
  eval_fn = make_eval_step(objective, mesh, teacher_params)
  predict = make_predict(objective.model, mesh)
  log = _Log(paths, primary)
  # One global batch of validation examples for the image summaries; each process feeds its rows.
  image_batch = val_data.examples([i % len(val_data.source) for i in range(train.batch_size)])
  shown = min(train.num_image_examples, len(val_data.source), train.batch_size)

  def save(state: TrainState, step: int) -> None:
    if not bool(_all_finite(state.params)):
      raise TrainingStopped(f"stage {stage}: parameters became NaN/Inf by step {step}; kept the last good "
                            f"checkpoint in {paths['checkpoints']} (lower config.train.learning_rate).")
    best = progress["best_val_loss"]
    meta_item = {"stage": stage, "step": step, "epoch": step // steps_per_epoch,
                 "steps_per_epoch": steps_per_epoch, "best_step": progress["best_step"],
                 "best_val_loss": best if math.isfinite(best) else None}
    state_mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(sharding.to_host(state)),
                                                  meta=ocp.args.JsonSave(meta_item)), force=True)

  def check(pending: list, first_step: int) -> None:
    if pending:
      bad = _first_bad(pending, first_step)
      if bad is not None:
        last = state_mngr.latest_step()
        kept = f"kept the last good checkpoint (step {last})" if last is not None else "no checkpoint saved yet"
        raise TrainingStopped(f"stage {stage}: the loss is NaN/Inf at step {bad + 1} (epoch "
                              f"{bad // steps_per_epoch + 1}); {kept} in {paths['checkpoints']}; lower "
                              f"config.train.learning_rate or check the data.")

  def interrupted(state: TrainState | None, step: int, epoch: int) -> StageResult:
    if state is not None:
      save(state, step)
    state_mngr.wait_until_finished()
    log.line(f"{stage}: stopped by {stop.signal} at step {step} (epoch {epoch + 1}); saved "
             f"{paths['checkpoints']}; rerun the same command to resume.")
    return StageResult("interrupted", step, progress["best_val_loss"], progress["best_step"])

  def validate(params) -> tuple[float, float]:
    """(validation loss, mean validation PSNR in dB) over the validation slices."""
    total, psnr, count = 0.0, 0.0, 0.0
    for local, weight in val_data.evaluation():
      s, p, c = eval_fn(params, sharding.global_batch(local, mesh),
                        sharding.global_batch({"w": weight}, mesh)["w"])
      total, psnr, count = total + float(s), psnr + float(p), count + float(c)
    return total / max(count, 1.0), psnr / max(count, 1.0)

  try:
    with _StopRequest() as stop:
      if step >= total_steps:
        log.line(f"{stage}: already trained to step {step}.")
      epoch = step // steps_per_epoch
      while step < total_steps:
        offset = step - epoch * steps_per_epoch
        bar = None
        if primary and train.progress_bar:
          from tqdm import tqdm
          bar = tqdm(total=steps_per_epoch, initial=offset, desc=f"{stage} {epoch + 1}/{train.num_epochs}",
                     unit="step", leave=False, dynamic_ncols=True)
        start_time, epoch_loss, epoch_count = time.time(), 0.0, 0
        pending, pending_from = [], step
        for local in train_data.epoch(epoch, offset):
          state, metrics = step_fn(state, sharding.global_batch(local, mesh))
          pending.append(metrics["loss"])
          step += 1
          if bar is not None:
            bar.update()
          if stop_at_step is not None and step >= stop_at_step and not stop.signal:
            stop.signal = f"stop_at_step={stop_at_step}"
          mid_checkpoint = bool(train.checkpoint_every_steps) and step % train.checkpoint_every_steps == 0
          boundary = step % train.log_every_steps == 0 or mid_checkpoint
          # A stop at an epoch's last step waits for its validation and checkpoint below.
          stopping = step % steps_per_epoch != 0 and stop.requested(boundary)
          if boundary or stopping:
            check(pending, pending_from)
            values = _fetch(pending)
            epoch_loss, epoch_count = epoch_loss + float(values.sum()), epoch_count + values.size
            pending, pending_from = [], step
            if bar is not None:
              bar.set_postfix(loss=f"{values[-1]:.4g}", lr=f"{learning_rate(step):.1e}")
            log.scalars({"train/loss": float(values[-1])}, step)
          if stopping:
            if bar is not None:
              bar.close()
            return interrupted(state, step, epoch)
          if mid_checkpoint and step % steps_per_epoch:
            save(state, step)
        check(pending, pending_from)
        if pending:
          values = _fetch(pending)
          epoch_loss, epoch_count = epoch_loss + float(values.sum()), epoch_count + values.size
        if bar is not None:
          bar.close()
        train_time = time.time() - start_time
        val_loss, val_psnr = validate(state.params)
        if not math.isfinite(val_loss):
          raise TrainingStopped(f"stage {stage}: the validation loss is NaN/Inf after step {step} (epoch "
                                f"{epoch + 1}); kept the last good checkpoint in {paths['checkpoints']}.")
        if val_loss < progress["best_val_loss"]:
          progress.update(best_val_loss=val_loss, best_step=step)
          params = sharding.to_host(objective.model_params(state.params))
          if step not in best_mngr.all_steps():  # else saved by a run killed after it (same params)
            best_mngr.save(step, args=checkpoints.save_args(params, {**model_meta, "stage": stage, "step": step,
                                                                      "val_loss": val_loss}),
                           metrics={"val_loss": val_loss}, force=True)
            # The training state saved next records this step as the best: the best model must be on
            # disk first, or a kill between the two writes would leave a resumed run with no best/.
            best_mngr.wait_until_finished()
        save(state, step)
        epoch += 1
        train_loss = epoch_loss / max(epoch_count, 1)
        lr = learning_rate(step - 1)
        log.scalars({"train/epoch_loss": train_loss, "val/loss": val_loss, "val/psnr": val_psnr,
                     "train/learning_rate": lr,
                     "train/epoch_seconds": train_time}, step)
        shown_batch = sharding.global_batch({k: v[val_data.rows] for k, v in image_batch.items()}, mesh)
        prediction = np.asarray(sharding.to_host(predict(objective.model_params(state.params), shown_batch)))
        if shown:
          log.image("validation/input_target_reconstruction_error",
                    summary_images({k: v[:shown] for k, v in image_batch.items()}, prediction[:shown]), step)
        log.line(f"{stage} epoch {epoch}/{train.num_epochs} step {step} train_loss {train_loss:.6g} "
                 f"val_loss {val_loss:.6g} val_psnr {val_psnr:.2f} "
                 f"best {progress['best_val_loss']:.6g}@{progress['best_step']} "
                 f"lr {lr:.1e} time {train_time:.1f}s")
        if step < total_steps and stop.requested(True):
          return interrupted(None, step, epoch - 1)
      state_mngr.wait_until_finished()
      best_mngr.wait_until_finished()
      if primary:
        with open(paths["done"], "w") as f:
          json.dump({"stage": stage, "step": step, **progress}, f)
      return StageResult("done", step, progress["best_val_loss"], progress["best_step"])
  finally:
    state_mngr.wait_until_finished()
    best_mngr.wait_until_finished()
    state_mngr.close()
    best_mngr.close()
    log.close()
