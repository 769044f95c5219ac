"""Reconstruction and imitation losses (pure functions of arrays; means over every element), and the
feature stage's attention-map validation criterion.

The imitation objectives of the KD stage are a registry (`IMITATION_OBJECTIVES`, chosen by
`config.kd.imitation`): the paper's α-weighted sum and what the authors' code and scripts compute.
The feature-distillation losses (attention transfer and the methods the paper compares) are in
`kdmri_jax.feature_losses`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from kdmri_jax import feature_losses
from kdmri_jax.errors import InputError


def l1(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """L1 = mean |prediction − target| (the paper's reconstruction loss)."""
  return jnp.mean(jnp.abs(prediction - target))


def l2(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """L2 = mean (prediction − target)² (the MSE used to pick the best checkpoint)."""
  return jnp.mean(jnp.square(prediction - target))


RECONSTRUCTION_LOSSES = {"l1": l1, "l2": l2}


# --- imitation: the KD stage's objective (config.kd.imitation) ------------------------------------
#
# Each objective is `fn(student, teacher, target, alpha, distance) -> scalar`, with `distance` the
# reconstruction loss (L1 unless config.train.loss says otherwise) and the teacher already constant.
# The paper and the authors' code (github.com/Bala93/KD-MRI) disagree; each variant has a name.

Distance = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def imitation_paper(student, teacher, target, alpha: float, distance: Distance = l1) -> jnp.ndarray:
  """α·L1(x_S, y) + (1 − α)·L1(x_S, x_T): the paper's KD loss (Murugesan et al. 2020)."""
  return alpha * distance(student, target) + (1.0 - alpha) * distance(student, teacher)


def imitation_authors_code(
  student, teacher, target, alpha: float, distance: Distance = l1
) -> jnp.ndarray:
  """L1(x_S, y) + L1(x_S, x_T) / N, N = elements of the batch's output: the authors' train_kd.py.

  reconstruction/train_kd.py with `--imitation_required` divides the teacher term, a mean already,
  by the output's `numel()` (B·1·H·W) again, so it is Σ|x_S − x_T| / N²: weight 1/N ≈ 4.3e-6 at
  batch 4, 240 × 240, next to the ground-truth term's 1. α is not used (their `alpha = 0.5` is never
  read).
  """
  del alpha
  return distance(student, target) + distance(student, teacher) / student.size


def imitation_authors_script(
  student, teacher, target, alpha: float, distance: Distance = l1
) -> jnp.ndarray:
  """L1(x_S, y) alone, from the feature stage's weights: the authors' reconstruction/train_kd.sh.

  The shipped script does not pass `--imitation_required`, so train_kd.py fine-tunes the AT student
  (loaded from `..._feature/best_model.pt`) on the ground-truth term only; the teacher is unused.
  The same as 'paper' with α = 1 (and the `feature_only` ablation). α is not used.
  """
  del teacher, alpha
  return distance(student, target)


def imitation_authors_sr(
  student, teacher, target, alpha: float, distance: Distance = l1
) -> jnp.ndarray:
  """L1(x_S, y) + L1(x_S, x_T): the authors' super-resolution/train_sr_kd.py.

  Their super-resolution train_kd.sh passes `--imitation_required`, and this script does not divide
  the teacher term: an unweighted sum, i.e. twice the paper's loss at α = 0.5. α is not used.
  """
  del alpha
  return distance(student, target) + distance(student, teacher)


IMITATION_OBJECTIVES: dict[str, Callable[..., jnp.ndarray]] = {
  "paper": imitation_paper,
  "authors_code": imitation_authors_code,
  "authors_script": imitation_authors_script,
  "authors_sr": imitation_authors_sr,
}
IMITATION_USES_ALPHA = frozenset({"paper"})
# Objectives defined together with the student they start from (config.kd.init_from).
IMITATION_INIT_FROM = {"authors_script": "feature"}


def get_imitation(name: str) -> Callable[..., jnp.ndarray]:
  """The registered imitation objective `name`, or one sentence listing the valid names."""
  if name not in IMITATION_OBJECTIVES:
    raise InputError(f"config.kd.imitation={name!r} is not one of {sorted(IMITATION_OBJECTIVES)}.")
  return IMITATION_OBJECTIVES[name]


def imitation_formula(name: str) -> str:
  """The objective's formula and source in words (the first line of its docstring)."""
  return get_imitation(name).__doc__.strip().splitlines()[0].rstrip(".")


def imitation(
  student: jnp.ndarray,
  teacher: jnp.ndarray,
  target: jnp.ndarray,
  alpha: float = 0.5,
  loss: str = "l1",
  objective: str = "paper",
) -> jnp.ndarray:
  """KD-MRI's KD stage loss: imitation objective `objective` (default the paper's
  α·L(x_S, target) + (1 − α)·L(x_S, x_T)) with L = `loss` (L1 by default).

  The teacher output is treated as a constant (no gradient flows into the teacher).
  """
  fn = get_imitation(objective)
  return fn(student, jax.lax.stop_gradient(teacher), target, alpha, RECONSTRUCTION_LOSSES[loss])


# --- the feature stage's validation criterion (config.kd.feature_best='attention_mse') ------------


def _distilled_map(features: Any, path: Any, role: str) -> jnp.ndarray:
  """The map at `path`; for a section (start, end), as `fsp` takes, the distilled end map."""
  selected = feature_losses.select(features, path, role)
  return selected[-1] if isinstance(selected, tuple) else selected


def attention_mse(
  teacher_features: Any,
  student_features: Any,
  pairs: Sequence[tuple[Any, Any]],
  normalize: str = "sample",
) -> jnp.ndarray:
  """Per example (B,): mean over layer pairs of mean_p (Q_T − Q_S)², Q = `attention_map`.

  The authors' feature stage keeps the checkpoint with the lowest such validation MSE (`evaluate` in
  train_feature.py: F.mse_loss of the attention maps per pair, averaged over pairs and validation
  batches; their maps are normalised over the batch, `normalize='batch'`). Computable for any
  feature method, on its own layer pairs; channel counts may differ.
  """
  terms = []
  for t, s in pairs:
    q_t = feature_losses.attention_map(_distilled_map(teacher_features, t, "teacher"), normalize)
    q_s = feature_losses.attention_map(_distilled_map(student_features, s, "student"), normalize)
    terms.append(jnp.mean(jnp.square(q_t - q_s), axis=1))
  return sum(terms) / len(terms)
