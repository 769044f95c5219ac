"""Feature-distillation losses over matched (teacher, student) feature maps, and their registry.

A feature map is (B, H, W, C), post-ReLU. A loss takes one teacher map and one student map and returns a
scalar; `feature_distillation` averages it over the configured layer pairs (for KD-MRI: teacher conv 3 and
student conv 2 of every cascade). The methods, by registry name:

| name              | method                                             | compares                     |
|-------------------|----------------------------------------------------|------------------------------|
| `attention`       | attention transfer, per-sample (the paper)         | Σ_c F² maps, L2 over space   |
| `attention_code`  | attention transfer as the authors' code normalises | Σ_c F² maps, L2 over batch   |
| `fitnet`          | FitNet hints (Romero et al. 2015)                  | maps, via a 1×1 regressor    |
| `fsp`             | flow of solution procedure (Yim et al. 2017)       | Gram of two layers' maps     |
| `sp`              | similarity preserving (Tung & Mori 2019)           | batch × batch similarity     |
| `cc`              | correlation congruence (Peng et al. 2019)          | batch × batch RBF kernel     |
| `local_affinity`, `pairwise` | structured KD pair-wise (Liu et al. 2019) | node × node cosine affinity |
| `feature_l1`, `feature_l2` | imitation of the maps themselves          | maps, element-wise           |

Adding a method is one function `(teacher_map, student_map) -> scalar` and one entry in `FEATURE_LOSSES`
(and, if it needs different layers by default, one entry in `METHOD_LAYER_PAIRS`). Two methods go beyond a
single map per side: `fsp` takes a *pair of layers* per side — a layer path there may be a pair of paths
(start, end), and a single path `end` means the section from the first conv of the same block to `end`
(see `SECTION_METHODS`), so the paper's pairs work for it unchanged — and `fitnet` takes trainable regressor
parameters when the channel counts differ (see `init_feature_params`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdmri_jax.errors import InputError

_EPS = 1e-12  # as torch.nn.functional.normalize


def _f32(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.asarray(x).astype(jnp.float32)


def _check_maps(method: str, teacher: jnp.ndarray, student: jnp.ndarray, same_channels: bool) -> None:
  """Maps must be (B, H, W, C) with the same batch and spatial size (and channels where required)."""
  if teacher.ndim != 4 or student.ndim != 4:
    raise InputError(f"{method} needs (B, H, W, C) feature maps, got teacher {teacher.shape} and "
                     f"student {student.shape}; pick layer paths that select a single map.")
  end = 4 if same_channels else 3
  if teacher.shape[:end] != student.shape[:end]:
    what = "shape" if same_channels else "batch and spatial size"
    hint = " (use `fitnet`, whose 1×1 regressor maps student channels to the teacher's)" if (
        method.startswith("feature_") and teacher.shape[:3] == student.shape[:3]) else ""
    raise InputError(f"{method} needs teacher and student maps of the same {what}, got {teacher.shape} "
                     f"and {student.shape}{hint}.")


# --- attention transfer ------------------------------------------------------------------------------


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
  _check_maps("attention", teacher, student, same_channels=False)
  diff = attention_map(teacher, normalize) - attention_map(student, normalize)
  return jnp.mean(jnp.abs(diff) ** p)


def attention_transfer_batch(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """AT with the authors' code's batch-axis normalisation (see `attention_map`)."""
  return attention_transfer(teacher, student, normalize="batch")


# --- imitation of the maps and FitNet hints -----------------------------------------------------------


def feature_l1(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Feature imitation, L1: mean |F_T − F_S| over every element (maps of the same shape)."""
  _check_maps("feature_l1", teacher, student, same_channels=True)
  return jnp.mean(jnp.abs(_f32(teacher) - _f32(student)))


def feature_l2(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Feature imitation, L2: mean (F_T − F_S)² over every element (maps of the same shape)."""
  _check_maps("feature_l2", teacher, student, same_channels=True)
  return jnp.mean(jnp.square(_f32(teacher) - _f32(student)))


class HintRegressor(nn.Module):
  """FitNet's regressor r: a 1×1 convolution with bias from the student's C_S channels to the teacher's C_T.

  Its parameters are {'conv1x1': {'kernel': (C_S, C_T), 'bias': (C_T,)}}; they are created by
  `init_feature_params`, trained together with the student in the feature stage, and dropped afterwards (the KD stage and
  inference use the student alone).
  """

  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    # A Dense layer on the channel axis of (B, H, W, C) is exactly a 1×1 convolution.
    return nn.Dense(self.features, name="conv1x1")(_f32(x))


def fitnet(teacher: jnp.ndarray, student: jnp.ndarray, params: Any = None) -> jnp.ndarray:
  """FitNet hints (Romero et al., ICLR 2015): L = mean (F_T − r(F_S))² over every element.

  r is the identity when the channel counts match (KD-MRI: 32/32 for DC-CNN, 64/64 for VDSR) and then
  `fitnet` equals `feature_l2`; otherwise r is a `HintRegressor` whose `params` must be given (from
  `init_feature_params`). Romero et al. also use a convolutional regressor when spatial sizes differ;
  the models here keep the size, so that case is an error.
  """
  _check_maps("fitnet", teacher, student, same_channels=False)
  guided = _f32(student)
  if params is not None:
    guided = HintRegressor(teacher.shape[-1]).apply({"params": params}, guided)
  elif teacher.shape[-1] != student.shape[-1]:
    raise InputError(f"fitnet: the student map has {student.shape[-1]} channels and the teacher's "
                     f"{teacher.shape[-1]}; create the 1×1 regressor with init_feature_params and pass "
                     "its params.")
  return jnp.mean(jnp.square(_f32(teacher) - guided))


def init_hint_regressor(teacher: jnp.ndarray, student: jnp.ndarray, rng: jax.Array) -> Any:
  """Parameters of a `HintRegressor` for this pair, or None when the channel counts already match."""
  if teacher.shape[-1] == student.shape[-1]:
    return None
  return HintRegressor(teacher.shape[-1]).init(rng, jnp.zeros((1, 1, 1, student.shape[-1])))["params"]


# --- FSP --------------------------------------------------------------------------------------------


def fsp_matrix(first: jnp.ndarray, second: jnp.ndarray) -> jnp.ndarray:
  """Yim et al.'s flow matrix G_ij = Σ_{x,y} F1_{x,y,i} · F2_{x,y,j} / (H·W), shape (B, C1, C2)."""
  b, h, w, _ = first.shape
  f1 = _f32(first).reshape(b, h * w, -1)
  f2 = _f32(second).reshape(b, h * w, -1)
  return jnp.einsum("bpi,bpj->bij", f1, f2) / (h * w)


def fsp(teacher: Sequence[jnp.ndarray], student: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """FSP (Yim et al., CVPR 2017): L = mean over (b, i, j) of (G_T − G_S)².

  Each side is a *pair of layers* (start, end) of one section of the network — by default a cascade's first
  conv and the distilled conv (`FSP_LAYER_PAIRS`) — and G = `fsp_matrix(start, end)`. The teacher's and student's start maps
  must share their channel count, as must the end maps, so that both G are C1 × C2; all four maps must have
  the same spatial size.
  """
  if not (isinstance(teacher, (tuple, list)) and isinstance(student, (tuple, list))
          and len(teacher) == 2 and len(student) == 2):
    raise InputError("fsp compares a pair of layers per side: give each layer pair as "
                     "((teacher_start, teacher_end), (student_start, student_end)), see FSP_LAYER_PAIRS.")
  for t, s in zip(teacher, student):
    _check_maps("fsp", t, s, same_channels=True)
  _check_maps("fsp", teacher[0], teacher[1], same_channels=False)
  diff = fsp_matrix(*teacher) - fsp_matrix(*student)
  return jnp.mean(jnp.square(diff))


# --- batch-similarity methods: SP and CC --------------------------------------------------------------


def _row_normalize(matrix: jnp.ndarray) -> jnp.ndarray:
  return matrix / jnp.maximum(jnp.linalg.norm(matrix, axis=-1, keepdims=True), _EPS)


def similarity_preserving(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """SP (Tung & Mori, ICCV 2019): L = ‖G̃_T − G̃_S‖_F² / B².

  Q = F reshaped to (B, H·W·C), G = Q Qᵀ (B × B), G̃ = G with each row L2-normalised. Channel counts may
  differ. With batch size 1 both G̃ are 1 and the loss is 0.
  """
  _check_maps("sp", teacher, student, same_channels=False)
  b = teacher.shape[0]

  def gram(f):
    q = _f32(f).reshape(b, -1)
    return _row_normalize(q @ q.T)

  return jnp.sum(jnp.square(gram(teacher) - gram(student))) / (b * b)


def rbf_taylor_kernel(embedding: jnp.ndarray, gamma: float = 0.4, order: int = 2) -> jnp.ndarray:
  """Gaussian RBF k(x, y) = exp(−γ‖x − y‖²) for unit vectors, by its Taylor series of `order` in x·y.

  For ‖x‖ = ‖y‖ = 1: exp(−γ‖x − y‖²) = e^{−2γ} · exp(2γ x·y) ≈ e^{−2γ} Σ_{p=0}^{P} (2γ)^p (x·y)^p / p!.
  """
  z = _row_normalize(_f32(embedding))
  dots = z @ z.T
  series = sum((2 * gamma) ** p / math.factorial(p) * dots ** p for p in range(order + 1))
  return math.exp(-2 * gamma) * series


def correlation_congruence(teacher: jnp.ndarray, student: jnp.ndarray, gamma: float = 0.4,
                           order: int = 2) -> jnp.ndarray:
  """CC (Peng et al., ICCV 2019): L = ‖C_T − C_S‖_F² / B².

  Embeddings are the maps averaged over space, (B, C), L2-normalised; C is the B × B Gaussian-RBF
  correlation by its Taylor expansion (`rbf_taylor_kernel`, γ = 0.4, order P = 2 as in the paper's
  experiments). The paper also adds instance-level KD on logits, which has no counterpart here. Channel
  counts may differ. With batch size 1 both C are e^{−2γ}·Σ(2γ)^p/p! and the loss is 0.
  """
  _check_maps("cc", teacher, student, same_channels=False)
  b = teacher.shape[0]
  kt = rbf_taylor_kernel(jnp.mean(_f32(teacher), axis=(1, 2)), gamma, order)
  ks = rbf_taylor_kernel(jnp.mean(_f32(student), axis=(1, 2)), gamma, order)
  return jnp.sum(jnp.square(kt - ks)) / (b * b)


# --- structured KD: pair-wise (local) affinity ---------------------------------------------------------


def max_pool_nodes(feature: jnp.ndarray, scale: float | None) -> jnp.ndarray:
  """Non-overlapping max pooling with patch int(H·scale) × int(W·scale), ceil mode -> (B, N, C) nodes.

  `scale=None` keeps every pixel as a node. Edge patches that stick out are padded with −∞, so they take
  the maximum of the pixels they do cover (PyTorch's `ceil_mode=True`).
  """
  x = _f32(feature)
  b, h, w, c = x.shape
  if scale is None:
    return x.reshape(b, h * w, c)
  ph, pw = max(1, int(h * scale)), max(1, int(w * scale))
  nh, nw = -(-h // ph), -(-w // pw)
  x = jnp.pad(x, ((0, 0), (0, nh * ph - h), (0, nw * pw - w), (0, 0)), constant_values=-jnp.inf)
  return x.reshape(b, nh, ph, nw, pw, c).max(axis=(2, 4)).reshape(b, nh * nw, c)


def affinity(nodes: jnp.ndarray) -> jnp.ndarray:
  """a_ij = f_i · f_j / ((‖f_i‖ + 1e-8)(‖f_j‖ + 1e-8)) over nodes, (B, N, N).

  The norm is a constant for the gradient (`stop_gradient`), as in the authors' criterion.
  """
  norm = jax.lax.stop_gradient(jnp.linalg.norm(nodes, axis=-1, keepdims=True)) + 1e-8
  z = nodes / norm
  return jnp.einsum("bmc,bnc->bmn", z, z)


def local_affinity(teacher: jnp.ndarray, student: jnp.ndarray, scale: float | None = 0.125) -> jnp.ndarray:
  """Pair-wise distillation of structured KD (Liu et al., CVPR 2019), the authors' code's criterion.

  Nodes are the maps max-pooled over patches of int(H·scale) × int(W·scale) pixels (`max_pool_nodes`; the
  default 1/8 gives about 8 × 8 nodes at any image size); L = mean over (b, i, j) of (a^S_ij − a^T_ij)²
  with a the cosine `affinity` of node feature vectors — the authors' `sim_dis_compute`, Σ / N² / B.
  Their code leaves the pooling commented out (every pixel a node, `scale=None`), which needs N² = (H·W)²
  entries per sample: 13 GB at 240 × 240. Channel counts may differ.
  """
  _check_maps("local_affinity", teacher, student, same_channels=False)
  diff = affinity(max_pool_nodes(teacher, scale)) - affinity(max_pool_nodes(student, scale))
  return jnp.mean(jnp.square(diff))


# --- registry -------------------------------------------------------------------------------------------

FeatureLoss = Callable[[Any, Any], jnp.ndarray]

FEATURE_LOSSES: dict[str, FeatureLoss] = {
    "attention": attention_transfer,
    "attention_code": attention_transfer_batch,
    "fitnet": fitnet,
    "fsp": fsp,
    "sp": similarity_preserving,
    "cc": correlation_congruence,
    "local_affinity": local_affinity,
    "pairwise": local_affinity,
    "feature_l1": feature_l1,
    "feature_l2": feature_l2,
}

# Methods with trainable parameters: name -> init(teacher_map, student_map, rng) -> params or None. The
# loss then takes them as `params=`.
FEATURE_PARAM_INITS: dict[str, Callable[[Any, Any, jax.Array], Any]] = {
    "fitnet": init_hint_regressor,
}

# A layer path indexes a model's features: (cascade, layer) for DC-CNN, (layer,) for VDSR; 0-based. For
# `fsp` a path is a pair of such paths (start, end).
LayerPath = Sequence[int]

# KD-MRI's pairs: teacher conv 3 ↔ student conv 2 in each of the 5 cascades; VDSR teacher layer 6 ↔
# student layer 4.
PAPER_LAYER_PAIRS = {
    "dccnn": tuple(((c, 2), (c, 1)) for c in range(5)),
    "vdsr": (((5,), (3,)),),
}

# FSP's sections end at the paper's distilled layer and start at the first conv of the same cascade (the
# flow through the part of the network the paper distils): teacher (c,0)→(c,2), student (c,0)→(c,1);
# VDSR teacher 0→5, student 0→3.
FSP_LAYER_PAIRS = {
    "dccnn": tuple((((c, 0), (c, 2)), ((c, 0), (c, 1))) for c in range(5)),
    "vdsr": ((((0,), (5,)), ((0,), (3,))),),
}

METHOD_LAYER_PAIRS: dict[str, dict[str, tuple]] = {"fsp": FSP_LAYER_PAIRS}

# Methods that compare a section (start layer, end layer) per side. A single path `end` given to them
# stands for (`end` with its last index set to 0, `end`): the section from the block's first conv, so
# `PAPER_LAYER_PAIRS` and `FSP_LAYER_PAIRS` select the same maps for `fsp`.
SECTION_METHODS = frozenset({"fsp"})


def section(path: Any) -> Any:
  """A single layer path `(..., l)` -> the section `((..., 0), (..., l))`; a pair of paths is kept."""
  try:
    ints = tuple(int(i) for i in path)
  except (TypeError, ValueError):
    return path  # a pair of paths, or garbage that `select` reports
  return (ints[:-1] + (0,), ints) if ints else path


def get_feature_loss(name: str) -> FeatureLoss:
  """The registered loss `name`, or one sentence listing the valid names."""
  if name not in FEATURE_LOSSES:
    raise InputError(f"unknown feature loss {name!r}; choose one of {sorted(FEATURE_LOSSES)}.")
  return FEATURE_LOSSES[name]


def default_layer_pairs(name: str, family: str) -> tuple:
  """The layer pairs method `name` uses by default for a model `family` ('dccnn' or 'vdsr')."""
  get_feature_loss(name)
  table = METHOD_LAYER_PAIRS.get(name, PAPER_LAYER_PAIRS)
  if family not in table:
    raise InputError(f"unknown model family {family!r}; choose one of {sorted(table)}.")
  return table[family]


def _describe_paths(features: Any) -> str:
  """The valid layer paths of a features tree, e.g. '(c, l) with c in 0..4 and l in 0..1'."""
  ranges, node = [], features
  while isinstance(node, (tuple, list)) and node:
    ranges.append(len(node))
    node = node[0]
  if not ranges:
    return "no feature layers"
  names = ["c", "l"] if len(ranges) == 2 else ["l"] if len(ranges) == 1 else [f"i{k}" for k in ranges]
  spans = " and ".join(f"{n} in 0..{r - 1}" for n, r in zip(names, ranges))
  return f"({', '.join(names)}{',' if len(names) == 1 else ''}) with {spans}"


def _is_path_pair(path: Any) -> bool:
  return isinstance(path, (tuple, list)) and len(path) > 0 and isinstance(path[0], (tuple, list))


def select(features: Any, path: Any, role: str = "model") -> Any:
  """features[path[0]][path[1]]...; a pair of paths (for `fsp`) selects a pair of maps.

  A path that does not exist gets one sentence listing the valid paths.
  """
  if _is_path_pair(path):
    return tuple(select(features, p, role) for p in path)
  node = features
  try:
    indices = [int(i) for i in path]
  except (TypeError, ValueError):
    indices = None
  for index in indices or [None]:
    if index is None or not isinstance(node, (tuple, list)) or not -len(node) <= index < len(node):
      break
    node = node[index]
  else:
    if not isinstance(node, (tuple, list)):
      return node
  raise InputError(f"the {role} has no feature layer {path!r}; valid layer paths are "
                   f"{_describe_paths(features)}.")


def init_feature_params(name: str, teacher_features: Any, student_features: Any,
                        pairs: Sequence[tuple[Any, Any]], rng: jax.Array) -> dict[str, Any]:
  """Trainable parameters method `name` needs, keyed by pair index ('0', '1', ...); {} for most methods.

  Only `fitnet` between maps with different channel counts has any (a `HintRegressor` per pair). The
  feature stage optimises them together with the student, e.g. as `{'student': ..., 'feature': ...}`,
  and passes them to `feature_distillation(..., params=...)`. Feature shapes suffice (`jax.eval_shape`).
  """
  get_feature_loss(name)
  init = FEATURE_PARAM_INITS.get(name)
  if init is None:
    return {}
  params = {}
  for i, (t, s) in enumerate(pairs):
    p = init(select(teacher_features, t, "teacher"), select(student_features, s, "student"),
             jax.random.fold_in(rng, i))
    if p is not None:
      params[str(i)] = p
  return params


def feature_distillation(name: str, teacher_features: Any, student_features: Any,
                         pairs: Sequence[tuple[Any, Any]],
                         params: Mapping[str, Any] | None = None) -> jnp.ndarray:
  """Mean of loss `name` over the (teacher path, student path) pairs.

  `params` are the method's trainable parameters from `init_feature_params` (only `fitnet` with differing
  channel counts has any).
  """
  fn = get_feature_loss(name)
  if not pairs:
    raise InputError(f"feature loss {name!r} got no layer pairs; set config.kd.layer_pairs, e.g. "
                     f"{PAPER_LAYER_PAIRS['dccnn'][0]!r} for DC-CNN.")
  params = params or {}
  if name in SECTION_METHODS:
    pairs = [(section(t), section(s)) for t, s in pairs]
  terms = []
  for i, (t, s) in enumerate(pairs):
    extra = {"params": params[str(i)]} if str(i) in params else {}
    terms.append(fn(select(teacher_features, t, "teacher"), select(student_features, s, "student"),
                    **extra))
  return sum(terms) / len(terms)
