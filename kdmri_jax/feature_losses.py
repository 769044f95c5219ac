"""Feature-distillation losses over matched (teacher, student) feature maps, and their registry.

A feature map is (B, H, W, C), post-ReLU. A loss takes one teacher map and one student map and
returns a scalar; `feature_distillation` averages it over the configured layer pairs (for KD-MRI:
teacher conv 3 and student conv 2 of every cascade). The methods, by registry name:

| name             | method                                           | compares                   |
|------------------|--------------------------------------------------|----------------------------|
| `attention`      | attention transfer, per-sample (the paper)       | Σ_c F² maps, L2 over space |
| `attention_code` | attention transfer, normalised as authors' code  | Σ_c F² maps, L2 over batch |
| `fitnet`         | FitNet hints (Romero et al. 2015)                | maps, via a 1×1 regressor  |
| `fsp`            | flow of solution procedure (Yim et al. 2017)     | Gram of two layers' maps   |
| `sp`             | similarity preserving (Tung & Mori 2019)         | batch × batch similarity   |
| `cc`             | correlation congruence (Peng et al. 2019)        | batch × batch RBF kernel   |
| `local_affinity`, `pairwise` | structured KD (Liu et al. 2019)     | node × node cosine affinity |
| `feature_l1`, `feature_l2` | imitation of the maps themselves       | maps, element-wise         |
| `vid`            | variational info. distillation (Ahn et al. 2019) | Gaussian likelihood of F_T |
| `rkd`            | relational KD, distance/angle (Park et al. 2019) | batch distances, angles    |
| `pkt`            | probabilistic transfer (Passalis & Tefas 2018)   | batch cosine-kernel KL     |
| `ab`             | activation boundaries (Heo et al. 2019)          | teacher on/off, margin     |
| `ft`             | factor transfer (Kim et al. 2018)                | paraphrased factors        |
| `nst`            | neuron selectivity transfer (Huang & Wang 2017)  | MMD of channel maps        |

Adding a method is one function `(teacher_map, student_map) -> scalar` and one entry in
`FEATURE_LOSSES` (and, if it needs different layers by default, one entry in `METHOD_LAYER_PAIRS`).
Two methods go beyond a single map per side: `fsp` takes a *pair of layers* per side — a layer path
there may be a pair of paths (start, end), and a single path `end` means the section from the first
conv of the same block to `end` (see `SECTION_METHODS`), so the paper's pairs work for it unchanged
— and some take trainable parameters (`FEATURE_PARAM_INITS`, see `init_feature_params`), which the
feature stage trains with the student and then drops: `fitnet`'s and `ab`'s 1×1 regressor when the
channel counts differ, `vid`'s mean regressor and variances, `ft`'s paraphraser and translator.
Called without them, `vid` and `ft` use the identity in place of their networks (σ² = 1 for `vid`),
so every registered loss also works as a plain function.
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


def _check_maps(
  method: str, teacher: jnp.ndarray, student: jnp.ndarray, same_channels: bool
) -> None:
  """Maps must be (B, H, W, C) with the same batch and spatial size (and channels where
  required)."""
  if teacher.ndim != 4 or student.ndim != 4:
    raise InputError(
      f"{method} needs (B, H, W, C) feature maps, got teacher {teacher.shape} and "
      f"student {student.shape}; pick layer paths that select a single map."
    )
  end = 4 if same_channels else 3
  if teacher.shape[:end] != student.shape[:end]:
    what = "shape" if same_channels else "batch and spatial size"
    hint = (
      " (use `fitnet`, whose 1×1 regressor maps student channels to the teacher's)"
      if (method.startswith("feature_") and teacher.shape[:3] == student.shape[:3])
      else ""
    )
    raise InputError(
      f"{method} needs teacher and student maps of the same "
      f"{what}, got {teacher.shape} and {student.shape}{hint}."
    )


def _check_trainable_maps(
  method: str, teacher: jnp.ndarray, student: jnp.ndarray, params: Any
) -> None:
  """`_check_maps` for a method with trainable parts: without their `params` it compares the maps
  channel by channel, so the channel counts must match."""
  _check_maps(method, teacher, student, same_channels=False)
  if params is None and teacher.shape[-1] != student.shape[-1]:
    raise InputError(
      f"{method}: the student map has {student.shape[-1]} channels and the "
      f"teacher's {teacher.shape[-1]}; create its trainable parts with "
      "init_feature_params and pass their params."
    )


# --- vectors and norms shared by the methods -----------------------------------------------------


def _embeddings(feature: jnp.ndarray) -> jnp.ndarray:
  """A map (B, H, W, C) as one vector per sample, (B, H·W·C), for the batch-relational methods."""
  return _f32(feature).reshape(feature.shape[0], -1)


def _row_normalize(matrix: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """matrix / ‖·‖₂ along `axis`, the norm clamped at `_EPS` as `F.normalize` (the authors' code)."""
  return matrix / jnp.maximum(jnp.linalg.norm(matrix, axis=axis, keepdims=True), _EPS)


def _safe_norm(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """‖x‖₂ along `axis` (kept), with a finite gradient at x = 0 (a plain norm's is NaN there, which
  RKD's self-differences and coinciding samples hit)."""
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _unit(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """x / ‖x‖₂ along `axis`; a zero vector stays zero, with finite gradients (see `_safe_norm`)."""
  norm = _safe_norm(x, axis)
  return x / jnp.where(norm > 0, norm, 1.0)


def _off_diagonal(size: int) -> jnp.ndarray:
  return 1.0 - jnp.eye(size, dtype=jnp.float32)


# --- attention transfer ---------------------------------------------------------------------------


def attention_map(feature: jnp.ndarray, normalize: str = "sample") -> jnp.ndarray:
  """Spatial attention Q = Σ_c F_c², flattened to (B, H·W) and L2-normalised.

  `normalize="sample"`: Q_b / ‖Q_b‖₂ over space for each sample (the paper; Zagoruyko & Komodakis
  2017). `normalize="batch"`: Q[:, p] / ‖Q[:, p]‖₂ over the batch at each pixel p, as the authors'
  code does (`F.normalize(dim=0)`); with batch size 1 every map is then 1 everywhere and the loss is
  0.
  """
  q = jnp.sum(jnp.square(feature.astype(jnp.float32)), axis=-1).reshape(feature.shape[0], -1)
  if normalize == "sample":
    axis = 1
  elif normalize == "batch":
    axis = 0
  else:
    raise InputError(f"attention normalize={normalize!r} is not one of ['batch', 'sample'].")
  return _row_normalize(q, axis)


def attention_transfer(
  teacher: jnp.ndarray, student: jnp.ndarray, normalize: str = "sample", p: int = 1
) -> jnp.ndarray:
  """AT loss = mean |Q_T − Q_S|^p over samples and pixels (p = 1 as in the authors' code)."""
  _check_maps("attention", teacher, student, same_channels=False)
  diff = attention_map(teacher, normalize) - attention_map(student, normalize)
  return jnp.mean(jnp.abs(diff) ** p)


def attention_transfer_batch(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """AT with the authors' code's batch-axis normalisation (see `attention_map`)."""
  return attention_transfer(teacher, student, normalize="batch")


# --- imitation of the maps and FitNet hints -------------------------------------------------------


def feature_l1(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Feature imitation, L1: mean |F_T − F_S| over every element (maps of the same shape)."""
  _check_maps("feature_l1", teacher, student, same_channels=True)
  return jnp.mean(jnp.abs(_f32(teacher) - _f32(student)))


def feature_l2(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Feature imitation, L2: mean (F_T − F_S)² over every element (maps of the same shape)."""
  _check_maps("feature_l2", teacher, student, same_channels=True)
  return jnp.mean(jnp.square(_f32(teacher) - _f32(student)))


class HintRegressor(nn.Module):
  """FitNet's regressor r: a 1×1 convolution with bias from the student's C_S channels to the
  teacher's C_T.

  Its parameters are {'conv1x1': {'kernel': (C_S, C_T), 'bias': (C_T,)}}; they are created by
  `init_feature_params`, trained together with the student in the feature stage, and dropped
  afterwards (the KD stage and inference use the student alone).
  """

  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    # A Dense layer on the channel axis of (B, H, W, C) is exactly a 1×1 convolution.
    return nn.Dense(self.features, name="conv1x1")(_f32(x))


def _hint(teacher: jnp.ndarray, student: jnp.ndarray, params: Any) -> jnp.ndarray:
  """The student's map through FitNet's connector r: a `HintRegressor`, or the identity without
  `params`."""
  if params is None:
    return _f32(student)
  return HintRegressor(teacher.shape[-1]).apply({"params": params}, _f32(student))


def _init_on_channels(module: nn.Module, channels: int, rng: jax.Array) -> Any:
  """Parameters of a convolutional `module` applied to maps of `channels` channels (a 1×1 dummy
  suffices: convolution parameters do not depend on the spatial size)."""
  return module.init(rng, jnp.zeros((1, 1, 1, channels)))["params"]


def fitnet(teacher: jnp.ndarray, student: jnp.ndarray, params: Any = None) -> jnp.ndarray:
  """FitNet hints (Romero et al., ICLR 2015): L = mean (F_T − r(F_S))² over every element.

  r is the identity when the channel counts match (KD-MRI: 32/32 for DC-CNN, 64/64 for VDSR) and
  then `fitnet` equals `feature_l2`; otherwise r is a `HintRegressor` whose `params` must be given
  (from `init_feature_params`). Romero et al. also use a convolutional regressor when spatial sizes
  differ; the models here keep the size, so that case is an error.
  """
  _check_trainable_maps("fitnet", teacher, student, params)
  return jnp.mean(jnp.square(_f32(teacher) - _hint(teacher, student, params)))


def init_hint_regressor(teacher: jnp.ndarray, student: jnp.ndarray, rng: jax.Array) -> Any:
  """Parameters of a `HintRegressor` for this pair, or None when the channel counts already
  match."""
  if teacher.shape[-1] == student.shape[-1]:
    return None
  return _init_on_channels(HintRegressor(teacher.shape[-1]), student.shape[-1], rng)


# --- FSP ------------------------------------------------------------------------------------------


def fsp_matrix(first: jnp.ndarray, second: jnp.ndarray) -> jnp.ndarray:
  """Yim et al.'s flow matrix G_ij = Σ_{x,y} F1_{x,y,i} · F2_{x,y,j} / (H·W), shape (B, C1, C2)."""
  b, h, w, _ = first.shape
  f1 = _f32(first).reshape(b, h * w, -1)
  f2 = _f32(second).reshape(b, h * w, -1)
  return jnp.einsum("bpi,bpj->bij", f1, f2) / (h * w)


def fsp(teacher: Sequence[jnp.ndarray], student: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """FSP (Yim et al., CVPR 2017): L = mean over (b, i, j) of (G_T − G_S)².

  Each side is a *pair of layers* (start, end) of one section of the network — by default a
  cascade's first conv and the distilled conv (`FSP_LAYER_PAIRS`) — and G = `fsp_matrix(start,
  end)`. The teacher's and student's start maps must share their channel count, as must the end
  maps, so that both G are C1 × C2; all four maps must have the same spatial size.
  """
  if not (
    isinstance(teacher, (tuple, list))
    and isinstance(student, (tuple, list))
    and len(teacher) == 2
    and len(student) == 2
  ):
    raise InputError(
      "fsp compares a pair of layers per side: give each layer pair as "
      "((teacher_start, teacher_end), (student_start, student_end)), see FSP_LAYER_PAIRS."
    )
  for t, s in zip(teacher, student):
    _check_maps("fsp", t, s, same_channels=True)
  _check_maps("fsp", teacher[0], teacher[1], same_channels=False)
  diff = fsp_matrix(*teacher) - fsp_matrix(*student)
  return jnp.mean(jnp.square(diff))


# --- batch-similarity methods: SP and CC ----------------------------------------------------------


def similarity_preserving(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """SP (Tung & Mori, ICCV 2019): L = ‖G̃_T − G̃_S‖_F² / B².

  Q = F reshaped to (B, H·W·C), G = Q Qᵀ (B × B), G̃ = G with each row L2-normalised. Channel counts
  may differ. With batch size 1 both G̃ are 1 and the loss is 0.
  """
  _check_maps("sp", teacher, student, same_channels=False)
  b = teacher.shape[0]

  def gram(f):
    q = _embeddings(f)
    return _row_normalize(q @ q.T)

  return jnp.sum(jnp.square(gram(teacher) - gram(student))) / (b * b)


def rbf_taylor_kernel(embedding: jnp.ndarray, gamma: float = 0.4, order: int = 2) -> jnp.ndarray:
  """Gaussian RBF k(x, y) = exp(−γ‖x − y‖²) for unit vectors, by its Taylor series of `order` in
  x·y.

  For ‖x‖ = ‖y‖ = 1: exp(−γ‖x − y‖²) = e^{−2γ} · exp(2γ x·y) ≈ e^{−2γ} Σ_{p=0}^{P} (2γ)^p (x·y)^p /
  p!.
  """
  z = _row_normalize(_f32(embedding))
  dots = z @ z.T
  series = sum((2 * gamma) ** p / math.factorial(p) * dots**p for p in range(order + 1))
  return math.exp(-2 * gamma) * series


def correlation_congruence(
  teacher: jnp.ndarray, student: jnp.ndarray, gamma: float = 0.4, order: int = 2
) -> jnp.ndarray:
  """CC (Peng et al., ICCV 2019): L = ‖C_T − C_S‖_F² / B².

  Embeddings are the maps averaged over space, (B, C), L2-normalised; C is the B × B Gaussian-RBF
  correlation by its Taylor expansion (`rbf_taylor_kernel`, γ = 0.4, order P = 2 as in the paper's
  experiments). The paper also adds instance-level KD on logits, which has no counterpart here.
  Channel counts may differ. With batch size 1 both C are e^{−2γ}·Σ(2γ)^p/p! and the loss is 0.
  """
  _check_maps("cc", teacher, student, same_channels=False)
  b = teacher.shape[0]
  kt = rbf_taylor_kernel(jnp.mean(_f32(teacher), axis=(1, 2)), gamma, order)
  ks = rbf_taylor_kernel(jnp.mean(_f32(student), axis=(1, 2)), gamma, order)
  return jnp.sum(jnp.square(kt - ks)) / (b * b)


# --- structured KD: pair-wise (local) affinity ----------------------------------------------------


def max_pool_nodes(feature: jnp.ndarray, scale: float | None) -> jnp.ndarray:
  """Non-overlapping max pooling with patch int(H·scale) × int(W·scale), ceil mode -> (B, N, C)
  nodes.

  `scale=None` keeps every pixel as a node. Edge patches that stick out are padded with −∞, so they
  take the maximum of the pixels they do cover (PyTorch's `ceil_mode=True`).
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


def local_affinity(
  teacher: jnp.ndarray, student: jnp.ndarray, scale: float | None = 0.125
) -> jnp.ndarray:
  """Pair-wise distillation of structured KD (Liu et al., CVPR 2019), the authors' code's criterion.

  Nodes are the maps max-pooled over patches of int(H·scale) × int(W·scale) pixels
  (`max_pool_nodes`; the default 1/8 gives about 8 × 8 nodes at any image size); L = mean over (b,
  i, j) of (a^S_ij − a^T_ij)² with a the cosine `affinity` of node feature vectors — the authors'
  `sim_dis_compute`, Σ / N² / B. Their code leaves the pooling commented out (every pixel a node,
  `scale=None`), which needs N² = (H·W)² entries per sample: 13 GB at 240 × 240. Channel counts may
  differ.
  """
  _check_maps("local_affinity", teacher, student, same_channels=False)
  diff = affinity(max_pool_nodes(teacher, scale)) - affinity(max_pool_nodes(student, scale))
  return jnp.mean(jnp.square(diff))


# --- networks of the methods with trainable parts (VID, FT) ---------------------------------------


class ConvStack(nn.Module):
  """Convolutions of `widths` output channels (kernel k×k, 'SAME', with bias), an activation between
  them and none after the last: VID's mean regressor (1×1, ReLU) and FT's paraphraser and translator
  (3×3, leaky ReLU 0.1)."""

  widths: Sequence[int]
  kernel: int = 1
  leaky: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _f32(x)
    for i, width in enumerate(self.widths):
      if i:
        x = nn.leaky_relu(x, 0.1) if self.leaky else nn.relu(x)
      x = nn.Conv(width, (self.kernel, self.kernel), padding="SAME", name=f"conv_{i}")(x)
    return x


# --- VID ------------------------------------------------------------------------------------------

VID_EPS = 1e-5  # ε of σ² = softplus(α) + ε: keeps the variance away from 0


def vid_variance(alpha: jnp.ndarray) -> jnp.ndarray:
  """σ_c² = log(1 + e^{α_c}) + ε (Ahn et al.'s parametrisation of the per-channel variance)."""
  return jax.nn.softplus(_f32(alpha)) + VID_EPS


def vid_regressor(teacher_channels: int) -> ConvStack:
  """VID's mean μ(·): three 1×1 convolutions (ReLU between) from the student's channels to C_T."""
  return ConvStack((teacher_channels,) * 3)


def variational_information(
  teacher: jnp.ndarray, student: jnp.ndarray, params: Any = None
) -> jnp.ndarray:
  """VID (Ahn et al., CVPR 2019): the negative log-likelihood of the teacher's map under a Gaussian
  predicted from the student's, a variational lower bound on their mutual information:

    L = mean over (b, h, w, c) of [ ½ log σ_c² + (t_{bhwc} − μ(s)_{bhwc})² / (2 σ_c²) ]

  (the paper's −log q(t | s) without its constant ½ log 2π, averaged instead of summed), with the
  heteroscedastic mean μ = `vid_regressor` and σ_c² = `vid_variance(α_c)`, both trained with the
  student (`params = {'regressor': ..., 'alpha': (C_T,)}` from `init_vid`; α starts at σ² = 1). The
  loss may be negative once σ² < 1. Without `params`, μ is the identity (equal channel counts) and
  σ² = 1, so L = ½ mean (t − s)².
  """
  _check_trainable_maps("vid", teacher, student, params)
  t = _f32(teacher)
  if params is None:
    return 0.5 * jnp.mean(jnp.square(t - _f32(student)))
  mean = vid_regressor(teacher.shape[-1]).apply({"params": params["regressor"]}, student)
  variance = vid_variance(params["alpha"])
  return jnp.mean(0.5 * jnp.log(variance) + jnp.square(t - mean) / (2 * variance))


def init_vid(teacher: jnp.ndarray, student: jnp.ndarray, rng: jax.Array) -> Any:
  """VID's trainable parts for one layer pair: the mean regressor and α with σ² = 1 at the start."""
  c_t = teacher.shape[-1]
  alpha = jnp.full((c_t,), math.log(math.expm1(1.0 - VID_EPS)), jnp.float32)  # softplus⁻¹(1 − ε)
  return {
    "regressor": _init_on_channels(vid_regressor(c_t), student.shape[-1], rng),
    "alpha": alpha,
  }


# --- RKD ------------------------------------------------------------------------------------------


def _huber(x: jnp.ndarray) -> jnp.ndarray:
  """Huber loss with δ = 1 (PyTorch's smooth L1): ½x² for |x| ≤ 1, |x| − ½ beyond."""
  a = jnp.abs(x)
  return jnp.where(a <= 1.0, 0.5 * jnp.square(x), a - 0.5)


def _gaps(embedding: jnp.ndarray) -> jnp.ndarray:
  """[j, i] = e_i − e_j, (B, B, D)."""
  return embedding[None, :, :] - embedding[:, None, :]


def rkd_distances(embedding: jnp.ndarray) -> jnp.ndarray:
  """ψ_D(i, j) = ‖e_i − e_j‖₂ / μ with μ the mean distance over pairs i ≠ j, (B, B); 0 on the
  diagonal and between coinciding samples, and everywhere when all samples coincide (or B = 1)."""
  b = embedding.shape[0]
  distance = _safe_norm(_gaps(embedding))[..., 0]
  mean = jnp.sum(distance) / max(b * (b - 1), 1)
  return distance / jnp.maximum(mean, _EPS)


def rkd_angles(embedding: jnp.ndarray) -> jnp.ndarray:
  """ψ_A(i, j, k) = ⟨(e_i − e_j)/‖e_i − e_j‖, (e_k − e_j)/‖e_k − e_j‖⟩, the cosine of the angle at
  vertex j, as an array [j, i, k] of shape (B, B, B); 0 where e_i = e_j or e_k = e_j."""
  unit = _unit(_gaps(embedding))
  return jnp.einsum("jid,jkd->jik", unit, unit)


def relational(
  teacher: jnp.ndarray,
  student: jnp.ndarray,
  distance_weight: float = 1.0,
  angle_weight: float = 2.0,
) -> jnp.ndarray:
  """RKD (Park et al., CVPR 2019): L = λ_D · mean_{i,j} l_δ(ψ_D^T − ψ_D^S) + λ_A · mean_{i,j,k}
  l_δ(ψ_A^T − ψ_A^S), l_δ the Huber loss (δ = 1), over every pair and triplet of the batch.

  Embeddings are the flattened maps (`_embeddings`); ψ_D are distances normalised by their mean
  (`rkd_distances`), ψ_A cosines of the angles the triplets form (`rkd_angles`); λ_D = 1, λ_A = 2
  are the paper's metric-learning weights. Channel counts may differ. With batch size 1 the loss is
  0.
  """
  _check_maps("rkd", teacher, student, same_channels=False)
  et, es = _embeddings(teacher), _embeddings(student)
  distance = jnp.mean(_huber(rkd_distances(et) - rkd_distances(es)))
  angle = jnp.mean(_huber(rkd_angles(et) - rkd_angles(es)))
  return distance_weight * distance + angle_weight * angle


# --- PKT ------------------------------------------------------------------------------------------


def pkt_probabilities(embedding: jnp.ndarray) -> jnp.ndarray:
  """p_{j|i} = K(e_i, e_j) / Σ_{k≠i} K(e_i, e_k) for j ≠ i (0 for j = i), (B, B), with the cosine
  kernel K(a, b) = ½(aᵀb / (‖a‖‖b‖) + 1) ∈ [0, 1]."""
  b = embedding.shape[0]
  unit = _unit(embedding)
  kernel = 0.5 * (unit @ unit.T + 1.0) * _off_diagonal(b)
  return kernel / jnp.maximum(jnp.sum(kernel, axis=1, keepdims=True), _EPS)


PKT_EPS = 1e-7  # in the logarithm: a student probability of exactly 0 would make the KL infinite


def probabilistic_transfer(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """PKT (Passalis & Tefas, ECCV 2018): the KL divergence from the teacher's conditional
  probabilities of its samples' neighbours to the student's, averaged over the batch:

    L = (1/B) Σ_i Σ_{j≠i} p_{j|i} log(p_{j|i} / q_{j|i}),   p from the teacher, q from the student

  with `pkt_probabilities` of the flattened maps (the paper's cosine-similarity kernel). Channel
  counts may differ. Each sample's neighbours are the other B − 1, so with B ≤ 2 every p = q and L =
  0; the paper's batch of 4 gives 3 neighbours.
  """
  _check_maps("pkt", teacher, student, same_channels=False)
  p = pkt_probabilities(_embeddings(teacher))
  q = pkt_probabilities(_embeddings(student))
  # log((p + ε)/(q + ε)) as log1p of the relative gap: p ≈ q, where a log difference loses digits
  kl = jnp.sum(p * jnp.log1p((p - q) / (q + PKT_EPS))) / teacher.shape[0]
  return jnp.maximum(kl, 0.0)  # a KL divergence is ≥ 0; this removes rounding below it


# --- AB -------------------------------------------------------------------------------------------


def activation_boundary(
  teacher: jnp.ndarray, student: jnp.ndarray, params: Any = None, margin: float = 1.0
) -> jnp.ndarray:
  """AB (Heo et al., AAAI 2019), the piecewise-differentiable activation transfer loss:

    L = mean over (b, h, w, c) of  ρ(t) · max(0, μ − r(s))² + (1 − ρ(t)) · max(0, μ + r(s))²

  with ρ(t) = 1[t > 0] the teacher neuron's activation (a post-ReLU map is > 0 exactly where the
  pre-activation is), μ the margin (1 by default) and r the connector: the identity when the channel
  counts match, a 1×1 `HintRegressor` trained with the student otherwise (`params`, as `fitnet`; Heo
  et al.'s connector also has batch normalisation, left out here). The paper averages nothing: its
  loss is the squared norm; the mean keeps the scale independent of the map size. L = 0 exactly when
  r(s) ≥ μ wherever the teacher is on and r(s) ≤ −μ wherever it is off, so AB is not 0 at s = t: it
  is a margin, not a distance. Here s is the student's post-ReLU map (the paper uses its
  pre-activation): with the identity connector an off teacher neuron then costs at least μ² (at
  s = 0), a floor a post-ReLU student cannot go below.
  """
  _check_trainable_maps("ab", teacher, student, params)
  response = _hint(teacher, student, params)
  on = (_f32(teacher) > 0).astype(jnp.float32)
  hinge = on * jnp.square(jax.nn.relu(margin - response)) + (1 - on) * jnp.square(
    jax.nn.relu(margin + response)
  )
  return jnp.mean(hinge)


# --- FT -------------------------------------------------------------------------------------------

FT_RATE = 0.5  # the paraphrase rate k: a factor has k·C_T channels (the paper's experiments)


def ft_networks(teacher_channels: int, student_channels: int) -> dict[str, ConvStack]:
  """FT's three 3×3, three-layer networks (leaky ReLU 0.1; the paper's also use batch
  normalisation): the paraphraser's encoder C_T → C_T → m → m and decoder m → m → C_T → C_T, m =
  ⌈k·C_T⌉, and the translator C_S → C_S → m → m."""
  m = max(1, math.ceil(FT_RATE * teacher_channels))
  return {
    "encoder": ConvStack((teacher_channels, m, m), 3, leaky=True),
    "decoder": ConvStack((m, teacher_channels, teacher_channels), 3, leaky=True),
    "translator": ConvStack((student_channels, m, m), 3, leaky=True),
  }


def factor_transfer(teacher: jnp.ndarray, student: jnp.ndarray, params: Any = None) -> jnp.ndarray:
  """FT (Kim et al., NeurIPS 2018): L = mean over (b, d) of |F_T/‖F_T‖₂ − F_S/‖F_S‖₂| (p = 1, the
  paper's choice; factors vectorised per sample, norms per sample; the mean instead of the paper's
  sum keeps the scale independent of the map size) + the paraphraser's reconstruction loss mean (t −
  P(t))².

  F_T = the paraphraser's encoding of the teacher's map, F_S = the translator's output on the
  student's (`ft_networks`; `params = {'encoder', 'decoder', 'translator'}` from `init_ft`). The
  paper trains the paraphraser first, on the reconstruction loss alone, and then freezes it; here it
  trains alongside the student in the same stage — F_T enters the factor term as a constant
  (`stop_gradient`), so the paraphraser learns from its reconstruction loss only and the translator
  and student from the factor term only, as in the paper, but against a paraphraser that is still
  converging. Without `params`, both factors are the maps themselves (equal channel counts) and
  there is no reconstruction term.
  """
  _check_trainable_maps("ft", teacher, student, params)
  t, s = _f32(teacher), _f32(student)
  if params is None:
    return _factor_gap(t, s)
  nets = ft_networks(teacher.shape[-1], student.shape[-1])
  encoded = nets["encoder"].apply({"params": params["encoder"]}, t)
  decoded = nets["decoder"].apply({"params": params["decoder"]}, encoded)
  factor_s = nets["translator"].apply({"params": params["translator"]}, s)
  return _factor_gap(jax.lax.stop_gradient(encoded), factor_s) + jnp.mean(jnp.square(t - decoded))


def _factor_gap(factor_t: jnp.ndarray, factor_s: jnp.ndarray) -> jnp.ndarray:
  """FT's factor term: mean |F_T/‖F_T‖₂ − F_S/‖F_S‖₂|, each factor a vector per sample."""
  return jnp.mean(jnp.abs(_unit(_embeddings(factor_t)) - _unit(_embeddings(factor_s))))


def init_ft(teacher: jnp.ndarray, student: jnp.ndarray, rng: jax.Array) -> Any:
  """FT's paraphraser (encoder, decoder) and translator for one layer pair."""
  c_t, c_s = teacher.shape[-1], student.shape[-1]
  nets = ft_networks(c_t, c_s)
  inputs = {"encoder": c_t, "decoder": nets["encoder"].widths[-1], "translator": c_s}
  keys = dict(zip(nets, jax.random.split(rng, len(nets))))
  return {name: _init_on_channels(net, inputs[name], keys[name]) for name, net in nets.items()}


# --- NST ------------------------------------------------------------------------------------------


def _channel_maps(feature: jnp.ndarray) -> jnp.ndarray:
  """Each channel's spatial map as an L2-normalised vector: (B, H, W, C) -> (B, C, H·W)."""
  b, h, w, c = feature.shape
  return _unit(jnp.swapaxes(_f32(feature).reshape(b, h * w, c), 1, 2))


def _mean_poly_kernel(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """mean over (i, j) of k(x_i, y_j) = (x_iᵀ y_j)² per sample, (B,)."""
  return jnp.mean(jnp.square(jnp.einsum("bip,bjp->bij", x, y)), axis=(1, 2))


def neuron_selectivity(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """NST (Huang & Wang, arXiv 1707.01219, 2017): the squared maximum mean discrepancy between the
  teacher's and the student's channels, each channel's H·W map a sample (`_channel_maps`):

    MMD² = (1/C_T²) Σ_{i,i'} k(f_T^i, f_T^i') + (1/C_S²) Σ_{j,j'} k(f_S^j, f_S^j')
           − (2/(C_T C_S)) Σ_{i,j} k(f_T^i, f_S^j),   k(x, y) = (xᵀy)²

  (the paper's polynomial kernel, d = 2, c = 0), averaged over the batch. Channel counts may differ.
  """
  _check_maps("nst", teacher, student, same_channels=False)
  ft, fs = _channel_maps(teacher), _channel_maps(student)
  mmd = _mean_poly_kernel(ft, ft) + _mean_poly_kernel(fs, fs) - 2 * _mean_poly_kernel(ft, fs)
  return jnp.maximum(jnp.mean(mmd), 0.0)  # MMD² ≥ 0 for a positive-definite kernel; rounding aside


# --- registry -------------------------------------------------------------------------------------

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
  "vid": variational_information,
  "rkd": relational,
  "pkt": probabilistic_transfer,
  "ab": activation_boundary,
  "ft": factor_transfer,
  "nst": neuron_selectivity,
}

# Methods with trainable parameters: name -> init(teacher_map, student_map, rng) -> params or None.
# The loss then takes them as `params=`.
FEATURE_PARAM_INITS: dict[str, Callable[[Any, Any, jax.Array], Any]] = {
  "fitnet": init_hint_regressor,
  "ab": init_hint_regressor,
  "vid": init_vid,
  "ft": init_ft,
}

# A layer path indexes a model's features: (cascade, layer) for DC-CNN, (layer,) for VDSR; 0-based.
# For `fsp` a path is a pair of such paths (start, end).
LayerPath = Sequence[int]

# KD-MRI's pairs: teacher conv 3 ↔ student conv 2 in each of the 5 cascades; VDSR teacher layer 6 ↔
# student layer 4.
PAPER_LAYER_PAIRS = {
  "dccnn": tuple(((c, 2), (c, 1)) for c in range(5)),
  "vdsr": (((5,), (3,)),),
}

# FSP's sections end at the paper's distilled layer and start at the first conv of the same cascade
# (the flow through the part of the network the paper distils): teacher (c,0)→(c,2), student
# (c,0)→(c,1); VDSR teacher 0→5, student 0→3.
FSP_LAYER_PAIRS = {
  "dccnn": tuple((((c, 0), (c, 2)), ((c, 0), (c, 1))) for c in range(5)),
  "vdsr": ((((0,), (5,)), ((0,), (3,))),),
}

METHOD_LAYER_PAIRS: dict[str, dict[str, tuple]] = {"fsp": FSP_LAYER_PAIRS}

# Methods that compare a section (start layer, end layer) per side. A single path `end` given to
# them stands for (`end` with its last index set to 0, `end`): the section from the block's first
# conv, so `PAPER_LAYER_PAIRS` and `FSP_LAYER_PAIRS` select the same maps for `fsp`.
SECTION_METHODS = frozenset({"fsp"})


def section(path: Any) -> Any:
  """A single layer path `(..., l)` -> the section `((..., 0), (..., l))`; a pair of paths is
  kept."""
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
  names = (
    ["c", "l"] if len(ranges) == 2 else ["l"] if len(ranges) == 1 else [f"i{k}" for k in ranges]
  )
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
  raise InputError(
    f"the {role} has no feature layer {path!r}; valid layer paths are {_describe_paths(features)}."
  )


def init_feature_params(
  name: str,
  teacher_features: Any,
  student_features: Any,
  pairs: Sequence[tuple[Any, Any]],
  rng: jax.Array,
) -> dict[str, Any]:
  """Trainable parameters method `name` needs, keyed by pair index ('0', '1', ...); {} for most
  methods.

  `FEATURE_PARAM_INITS` says which have any: `fitnet` and `ab` between maps with different channel
  counts (a `HintRegressor` per pair), `vid` and `ft` always. The feature stage optimises them
  together with the student, e.g. as `{'student': ..., 'feature': ...}`, and passes them to
  `feature_distillation(..., params=...)`. Feature shapes suffice (`jax.eval_shape`).
  """
  get_feature_loss(name)
  init = FEATURE_PARAM_INITS.get(name)
  if init is None:
    return {}
  params = {}
  for i, (t, s) in enumerate(pairs):
    p = init(
      select(teacher_features, t, "teacher"),
      select(student_features, s, "student"),
      jax.random.fold_in(rng, i),
    )
    if p is not None:
      params[str(i)] = p
  return params


def feature_distillation(
  name: str,
  teacher_features: Any,
  student_features: Any,
  pairs: Sequence[tuple[Any, Any]],
  params: Mapping[str, Any] | None = None,
) -> jnp.ndarray:
  """Mean of loss `name` over the (teacher path, student path) pairs.

  `params` are the method's trainable parameters from `init_feature_params` (see there which have
  any).
  """
  fn = get_feature_loss(name)
  if not pairs:
    raise InputError(
      f"feature loss {name!r} got no layer pairs; set config.kd.layer_pairs, e.g. "
      f"{PAPER_LAYER_PAIRS['dccnn'][0]!r} for DC-CNN."
    )
  params = params or {}
  if name in SECTION_METHODS:
    pairs = [(section(t), section(s)) for t, s in pairs]
  terms = []
  for i, (t, s) in enumerate(pairs):
    extra = {"params": params[str(i)]} if str(i) in params else {}
    terms.append(
      fn(select(teacher_features, t, "teacher"), select(student_features, s, "student"), **extra)
    )
  return sum(terms) / len(terms)
