"""Feature-distillation losses over matched (teacher, student) feature maps, and their registry.

A feature map is (B, H, W, C), post-ReLU. A loss takes one teacher map and one student map and returns a
scalar; `feature_distillation` averages it over the configured layer pairs (for KD-MRI: teacher conv 3 and
student conv 2 of every cascade). Adding a method is one function and one entry in `FEATURE_LOSSES`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax.numpy as jnp

from kdmri_jax.errors import InputError

_EPS = 1e-12  # as torch.nn.functional.normalize


def attention_map(feature: jnp.ndarray, normalize: str = "sample") -> jnp.ndarray:
  """Spatial attention Q = Σ_c F_c², flattened to (B, H·W) and L2-normalised.

  `normalize="sample"`: Q_b / ‖Q_b‖₂ over space for each sample (the paper; Zagoruyko & Komodakis 2017).
  `normalize="batch"`: Q[:, p] / ‖Q[:, p]‖₂ over the batch at each pixel p, as the authors' code does
  (`F.normalize(dim=0)`); with batch size 1 every map is then 1 everywhere and the loss is 0.
  """
  q = jnp.sum(jnp.square(feature.astype(jnp.float32)), axis=-1).reshape(feature.shape[0], -1)
  if normalize == "sample":
    axis = 1
  elif normalize == "batch":
    axis = 0
  else:
    raise InputError(f"attention normalize={normalize!r} is not one of ['batch', 'sample'].")
  return q / jnp.maximum(jnp.linalg.norm(q, axis=axis, keepdims=True), _EPS)


def attention_transfer(teacher: jnp.ndarray, student: jnp.ndarray, normalize: str = "sample",
                       p: int = 1) -> jnp.ndarray:
  """AT loss = mean |Q_T − Q_S|^p over samples and pixels (p = 1 as in the authors' code)."""
  diff = attention_map(teacher, normalize) - attention_map(student, normalize)
  return jnp.mean(jnp.abs(diff) ** p)


def attention_transfer_batch(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """AT with the authors' code's batch-axis normalisation (see `attention_map`)."""
  return attention_transfer(teacher, student, normalize="batch")


FeatureLoss = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]

FEATURE_LOSSES: dict[str, FeatureLoss] = {
    "attention": attention_transfer,
    "attention_code": attention_transfer_batch,
}

# A layer path indexes a model's features: (cascade, layer) for DC-CNN, (layer,) for VDSR; 0-based.
LayerPath = Sequence[int]

# KD-MRI's pairs: teacher conv 3 ↔ student conv 2 in each of the 5 cascades; VDSR teacher layer 6 ↔
# student layer 4.
PAPER_LAYER_PAIRS = {
    "dccnn": tuple(((c, 2), (c, 1)) for c in range(5)),
    "vdsr": (((5,), (3,)),),
}


def get_feature_loss(name: str) -> FeatureLoss:
  """The registered loss `name`, or one sentence listing the valid names."""
  if name not in FEATURE_LOSSES:
    raise InputError(f"unknown feature loss {name!r}; choose one of {sorted(FEATURE_LOSSES)}.")
  return FEATURE_LOSSES[name]


def select(features: Any, path: LayerPath, role: str = "model") -> jnp.ndarray:
  """features[path[0]][path[1]]...; one sentence naming the valid range when a path does not exist."""
  node = features
  for depth, index in enumerate(path):
    if not isinstance(node, (tuple, list)) or not -len(node) <= index < len(node):
      size = len(node) if isinstance(node, (tuple, list)) else 0
      raise InputError(f"the {role} has no feature layer {tuple(path)}: index {index} at depth {depth} "
                       f"must be in 0..{size - 1}.")
    node = node[index]
  return node


def feature_distillation(name: str, teacher_features: Any, student_features: Any,
                         pairs: Sequence[tuple[LayerPath, LayerPath]]) -> jnp.ndarray:
  """Mean of loss `name` over the (teacher path, student path) pairs."""
  fn = get_feature_loss(name)
  terms = [fn(select(teacher_features, t, "teacher"), select(student_features, s, "student"))
           for t, s in pairs]
  return sum(terms) / len(terms)
