"""Feature-distillation losses: hand-computed values, NumPy-loop references, zero at equality,
gradients, jit."""

from __future__ import annotations

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import stage_state, tiny_main_argv
from kdmri_jax import checkpoints, feature_losses as fl
from kdmri_jax.errors import InputError
from kdmri_jax.models import apply, build_model, init_params
from kdmri_jax.train_input import synthetic_source


def _maps(*shape, seed=0, offset=0.1):
  # Post-ReLU-like: positive, away from 0 so every normalisation is well defined.
  return np.random.default_rng(seed).random(shape).astype(np.float32) + offset


# --- hand-computed examples -----------------------------------------------------------------------


def test_attention_hand_example():
  # Q_T = (2, 2)/√8 = (1/√2, 1/√2); Q_S = (4, 0)/4 = (1, 0); mean |diff| = (1 − 1/√2 + 1/√2)/2 =
  # 0.5.
  teacher = np.array([[[[1, 1], [1, 1]]]], np.float32)  # (1, 1, 2, 2)
  student = np.array([[[[2, 0], [0, 0]]]], np.float32)
  assert float(fl.attention_transfer(teacher, student)) == pytest.approx(0.5, abs=1e-6)
  # Disjoint one-hot maps: |(1, 0) − (0, 1)| averages to 1.
  assert float(
    fl.attention_transfer(
      np.array([[[[1], [0]]]], np.float32), np.array([[[[0], [1]]]], np.float32)
    )
  ) == pytest.approx(1.0)


def test_attention_code_hand_example():
  # Normalised over the batch at each pixel: Q_T = (1, 1)/√2, Q_S = (1, 0); mean |diff| = 0.5.
  teacher = np.ones((2, 1, 1, 1), np.float32)
  student = np.array([1, 0], np.float32).reshape(2, 1, 1, 1)
  assert float(fl.attention_transfer_batch(teacher, student)) == pytest.approx(0.5, abs=1e-6)
  # Per sample (1×1 maps): Q_T = (1, 1); the student's sample 1 is all zero so Q_S = (1, 0): again
  # 0.5.
  assert float(fl.attention_transfer(teacher, student)) == pytest.approx(0.5, abs=1e-6)


def test_fitnet_hand_example_and_regressor():
  assert (
    float(fl.fitnet(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.float32))) == 1.0
  )
  # One student channel, two teacher channels: r(s) = s·[2, 3] + [1, 0] = (3, 3) for s = 1.
  params = {"conv1x1": {"kernel": jnp.array([[2.0, 3.0]]), "bias": jnp.array([1.0, 0.0])}}
  student = np.ones((1, 1, 1, 1), np.float32)
  assert float(fl.fitnet(np.full((1, 1, 1, 2), 3.0, np.float32), student, params)) == 0.0
  assert float(fl.fitnet(np.zeros((1, 1, 1, 2), np.float32), student, params)) == pytest.approx(9.0)
  with pytest.raises(InputError, match="init_feature_params"):
    fl.fitnet(np.zeros((1, 1, 1, 2), np.float32), student)


def test_fsp_hand_example():
  # G = Σ_p F1_p F2_p / (H·W): teacher (1·2 + 1·0)/2 = 1, student (1·0 + 0·2)/2 = 0 -> (1 − 0)² = 1.
  t1, t2 = np.array([1, 1.0]).reshape(1, 1, 2, 1), np.array([2, 0.0]).reshape(1, 1, 2, 1)
  s1, s2 = np.array([1, 0.0]).reshape(1, 1, 2, 1), np.array([0, 2.0]).reshape(1, 1, 2, 1)
  assert float(fl.fsp((t1, t2), (s1, s2))) == pytest.approx(1.0)
  assert float(fl.fsp((t1, t2), (s1, t2))) == pytest.approx(0.0)  # student G = (1·2 + 0·0)/2 = 1


def test_sp_hand_example():
  # Teacher rows (1,0),(0,1): G̃ = I. Student rows equal: G̃ = 1/√2 everywhere.
  # ‖diff‖² = 2·((1 − a)² + a²) = 4 − 2√2 with a = 1/√2; / B² = 1 − √2/2.
  teacher = np.array([[1, 0], [0, 1]], np.float32).reshape(2, 1, 1, 2)
  student = np.array([[1, 0], [1, 0]], np.float32).reshape(2, 1, 1, 2)
  assert float(fl.similarity_preserving(teacher, student)) == pytest.approx(
    1 - math.sqrt(2) / 2, abs=1e-6
  )


def test_cc_hand_example():
  # k(d) = e^{−0.8}(1 + 0.8 d + 0.32 d²): teacher d = I, student d = all ones.
  # Off-diagonal entries differ by e^{−0.8}·1.12; two of them, / B² = 4.
  teacher = np.array([[1, 0], [0, 1]], np.float32).reshape(2, 1, 1, 2)
  student = np.array([[1, 0], [1, 0]], np.float32).reshape(2, 1, 1, 2)
  expected = 2 * (1.12 * math.exp(-0.8)) ** 2 / 4
  assert float(fl.correlation_congruence(teacher, student)) == pytest.approx(expected, rel=1e-5)


def test_local_affinity_hand_example():
  # Nodes (1,0),(0,1) -> a = I; nodes (1,0),(1,0) -> a = 1; two off-diagonal 1s over 4 entries.
  teacher = np.array([[1, 0], [0, 1]], np.float32).reshape(1, 1, 2, 2)
  student = np.array([[1, 0], [1, 0]], np.float32).reshape(1, 1, 2, 2)
  assert float(fl.local_affinity(teacher, student, scale=None)) == pytest.approx(0.5, abs=1e-6)
  assert fl.FEATURE_LOSSES["pairwise"] is fl.FEATURE_LOSSES["local_affinity"]


def test_feature_imitation_hand_example():
  teacher = np.array([1, 2, 3, 4], np.float32).reshape(1, 2, 2, 1)
  student = np.array([1, 0, 3, 8], np.float32).reshape(1, 2, 2, 1)
  assert float(fl.feature_l1(teacher, student)) == pytest.approx((2 + 4) / 4)
  assert float(fl.feature_l2(teacher, student)) == pytest.approx((4 + 16) / 4)


def test_rkd_hand_example():
  # Teacher: a right isosceles triangle (0,0),(1,0),(0,1); student: collinear (0,0),(1,0),(2,0).
  teacher = np.array([[0, 0], [1, 0], [0, 1]], np.float32).reshape(3, 1, 1, 2)
  student = np.array([[0, 0], [1, 0], [2, 0]], np.float32).reshape(3, 1, 1, 2)
  # Distances over their mean: teacher (1, 1, √2)/((2 + √2)/3), student (1, 2, 1)/(4/3); each pair
  # appears twice.
  mu_t = (2 + math.sqrt(2)) / 3
  gaps = [1 / mu_t - 0.75, 1 / mu_t - 1.5, math.sqrt(2) / mu_t - 0.75]
  distance = 2 * sum(0.5 * g * g for g in gaps) / 9
  # Angle cosines at vertices 0, 1, 2: teacher (0, √2/2, √2/2), student (1, −1, 1); Huber of gaps
  # 1, 1 + √2/2, 1 − √2/2 is 1/2, 1/2 + √2/2, (1 − √2/2)²/2 (sum 7/4), each twice, over 27 triplets.
  angle = 2 * 1.75 / 27
  assert float(fl.relational(teacher, student)) == pytest.approx(distance + 2 * angle, rel=1e-5)
  # Relations are scale-free: a student three times the teacher has the same distances and angles.
  assert float(fl.relational(teacher, 3 * teacher)) == pytest.approx(0.0, abs=1e-6)


def test_rkd_distance_is_zero_between_coinciding_samples():
  # Samples 0 and 1 coincide: their distance is 0 (not the norm's stand-in 1), the others 5, 5;
  # the mean over the 6 ordered pairs is 20/6.
  distances = fl.rkd_distances(jnp.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]]))
  np.testing.assert_allclose(distances, [[0, 0, 1.5], [0, 0, 1.5], [1.5, 1.5, 0]], rtol=1e-6)
  grads = jax.grad(lambda e: jnp.sum(fl.rkd_distances(e)) + jnp.sum(fl.rkd_angles(e)))(
    jnp.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
  )
  assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("name", ["ab", "vid", "ft"])
def test_trainable_methods_without_params_need_equal_channels(name):
  t, s = _maps(2, 3, 3, 4), _maps(2, 3, 3, 2)
  message = rf"^{name}: the student map has 2 channels .*init_feature_params"
  with pytest.raises(InputError, match=message):
    fl.FEATURE_LOSSES[name](t, s)


def test_pkt_hand_example():
  # Teacher cosines c01 = 0, c02 = 1, c12 = 0 -> K = (c + 1)/2; rows over the two other samples:
  # p_{·|0} = (1/3, 2/3), p_{·|1} = (1/2, 1/2), p_{·|2} = (2/3, 1/3). Student: all equal -> q = 1/2.
  teacher = np.array([[1, 0], [0, 1], [1, 0]], np.float32).reshape(3, 1, 1, 2)
  student = np.ones((3, 1, 1, 2), np.float32)
  row = (1 / 3) * math.log(2 / 3) + (2 / 3) * math.log(4 / 3)
  assert float(fl.probabilistic_transfer(teacher, student)) == pytest.approx(2 * row / 3, rel=1e-4)
  # One neighbour each: p = q = 1.
  assert float(fl.probabilistic_transfer(teacher[:2], student[:2])) == 0.0


def test_nst_hand_example():
  # Teacher channels (1, 0), (0, 1) over two pixels; student one channel (1, 1)/√2.
  # MMD² = mean k_TT (1, 0, 0, 1 -> 1/2) + k_SS (1) − 2 mean k_TS (1/2) = 1/2.
  teacher = np.array([[1, 0], [0, 1]], np.float32).reshape(1, 1, 2, 2)
  student = np.ones((1, 1, 2, 1), np.float32)
  assert float(fl.neuron_selectivity(teacher, student)) == pytest.approx(0.5, abs=1e-6)
  assert float(fl.neuron_selectivity(teacher, 5 * teacher)) == pytest.approx(0.0, abs=1e-6)


def test_ab_hand_example_and_its_zero():
  teacher = np.array([0.5, 0.0], np.float32).reshape(1, 1, 1, 2)  # neuron 0 on, neuron 1 off
  student = np.array([0.25, 0.5], np.float32).reshape(1, 1, 1, 2)
  # On: max(0, 1 − 0.25)² = 0.5625; off: max(0, 1 + 0.5)² = 2.25.
  assert float(fl.activation_boundary(teacher, student)) == pytest.approx((0.5625 + 2.25) / 2)
  beyond = np.array([1.5, -1.0], np.float32).reshape(1, 1, 1, 2)  # past the margin, right side
  assert float(fl.activation_boundary(teacher, beyond)) == 0.0
  # Margin 1/4: the on neuron is exactly at it (0), the off one costs (0.25 + 0.5)².
  got = float(fl.activation_boundary(teacher, student, margin=0.25))
  assert got == pytest.approx(0.75**2 / 2)
  # A connector from one student channel: r(s) = s·[2, −4] + [0, 0] puts s = 1 past both margins.
  params = {"conv1x1": {"kernel": jnp.array([[2.0, -4.0]]), "bias": jnp.zeros(2)}}
  assert float(fl.activation_boundary(teacher, np.ones((1, 1, 1, 1), np.float32), params)) == 0.0


def _inverse_softplus(y):
  return math.log(math.expm1(y))


def test_vid_hand_example():
  teacher = np.array([1.0, 3.0], np.float32).reshape(1, 1, 1, 2)
  student = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)
  # σ² = 1: ½ mean (t − s)².
  assert float(fl.variational_information(teacher, student)) == pytest.approx((1 + 4) / 2 / 2)
  # μ = three identity 1×1 convolutions (the inputs are ≥ 0, so the ReLUs pass them), σ² = (1, 4):
  # mean(½ log 1 + 1²/2, ½ log 4 + 2²/8) = (0.5 + ln 2 + 0.5)/2.
  eye = {"kernel": jnp.eye(2).reshape(1, 1, 2, 2), "bias": jnp.zeros(2)}
  alpha = jnp.array([_inverse_softplus(1 - fl.VID_EPS), _inverse_softplus(4 - fl.VID_EPS)])
  params = {"regressor": {f"conv_{i}": eye for i in range(3)}, "alpha": alpha}
  assert float(fl.variational_information(teacher, student, params)) == pytest.approx(
    (1 + math.log(2)) / 2, rel=1e-5
  )
  start = fl.init_vid(teacher, student[..., :1], jax.random.PRNGKey(0))
  np.testing.assert_allclose(fl.vid_variance(start["alpha"]), [1.0, 1.0], rtol=1e-6)
  assert start["regressor"]["conv_0"]["kernel"].shape == (1, 1, 1, 2)  # from C_S = 1 to C_T = 2


def test_ft_hand_example():
  # Factors are the maps without parameters: (1, 0) vs (1, 1)/√2 -> mean |diff| =
  # (1 − 1/√2 + 1/√2)/2.
  teacher = np.array([1.0, 0.0], np.float32).reshape(1, 1, 1, 2)
  student = np.array([1.0, 1.0], np.float32).reshape(1, 1, 1, 2)
  assert float(fl.factor_transfer(teacher, student)) == pytest.approx(0.5, abs=1e-6)
  assert float(fl.factor_transfer(teacher, 7 * teacher)) == pytest.approx(0.0, abs=1e-7)


# --- NumPy loop references on B=2, H=W=3, C=2 -----------------------------------------------------


def _np_attention(t, s, batch_norm):
  b, h, w, _ = t.shape
  qt, qs = (np.zeros((b, h * w)) for _ in range(2))
  for i in range(b):
    for y in range(h):
      for x in range(w):
        qt[i, y * w + x] = sum(v * v for v in t[i, y, x])
        qs[i, y * w + x] = sum(v * v for v in s[i, y, x])
  axis = 0 if batch_norm else 1
  qt /= np.sqrt((qt**2).sum(axis, keepdims=True))
  qs /= np.sqrt((qs**2).sum(axis, keepdims=True))
  return np.abs(qt - qs).mean()


def _np_sp(t, s):
  b = t.shape[0]

  def gram(f):
    q = f.reshape(b, -1).astype(np.float64)
    g = np.array([[np.dot(q[i], q[j]) for j in range(b)] for i in range(b)])
    return g / np.sqrt((g**2).sum(1, keepdims=True))

  return ((gram(t) - gram(s)) ** 2).sum() / b**2


def _np_cc(t, s, gamma=0.4):
  b = t.shape[0]

  def kernel(f):
    e = f.mean(axis=(1, 2)).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    # The exact RBF on unit vectors and its order-2 Taylor series, both by loops.
    k = np.zeros((b, b))
    for i in range(b):
      for j in range(b):
        d = float(np.dot(e[i], e[j]))
        k[i, j] = math.exp(-2 * gamma) * (1 + 2 * gamma * d + (2 * gamma * d) ** 2 / 2)
    return k

  return ((kernel(t) - kernel(s)) ** 2).sum() / b**2


def _np_pool(f, patch):
  b, h, w, c = f.shape
  nh, nw = -(-h // patch), -(-w // patch)
  out = np.zeros((b, nh * nw, c))
  for i in range(b):
    for y in range(nh):
      for x in range(nw):
        block = f[i, y * patch : (y + 1) * patch, x * patch : (x + 1) * patch]
        out[i, y * nw + x] = block.reshape(-1, c).max(0)
  return out


def _np_affinity_loss(t, s, patch):
  nt, ns = _np_pool(t, patch), _np_pool(s, patch)
  b, n, _ = nt.shape
  total = 0.0
  for i in range(b):
    for p in range(n):
      for q in range(n):
        at = (
          nt[i, p]
          @ nt[i, q]
          / ((np.linalg.norm(nt[i, p]) + 1e-8) * (np.linalg.norm(nt[i, q]) + 1e-8))
        )
        a_s = (
          ns[i, p]
          @ ns[i, q]
          / ((np.linalg.norm(ns[i, p]) + 1e-8) * (np.linalg.norm(ns[i, q]) + 1e-8))
        )
        total += (at - a_s) ** 2
  return total / (n * n) / b


def _np_fsp(t1, t2, s1, s2):
  def g(a, b_):
    bsz, h, w, c1 = a.shape
    c2 = b_.shape[-1]
    out = np.zeros((bsz, c1, c2))
    for n in range(bsz):
      for i in range(c1):
        for j in range(c2):
          out[n, i, j] = sum(a[n, y, x, i] * b_[n, y, x, j] for y in range(h) for x in range(w)) / (
            h * w
          )
    return out

  return ((g(t1, t2) - g(s1, s2)) ** 2).mean()


def test_losses_match_numpy_loops():
  t, s = _maps(2, 3, 3, 2, seed=1), _maps(2, 3, 3, 2, seed=2)
  assert float(fl.attention_transfer(t, s)) == pytest.approx(_np_attention(t, s, False), rel=1e-5)
  assert float(fl.attention_transfer_batch(t, s)) == pytest.approx(
    _np_attention(t, s, True), rel=1e-5
  )
  assert float(fl.similarity_preserving(t, s)) == pytest.approx(_np_sp(t, s), rel=1e-4, abs=1e-9)
  assert float(fl.correlation_congruence(t, s)) == pytest.approx(_np_cc(t, s), rel=1e-4, abs=1e-9)
  # scale 2/3 on 3×3 -> patches of 2 in ceil mode: 2×2 nodes, the edge ones cover one row/column.
  assert float(fl.local_affinity(t, s, scale=2 / 3)) == pytest.approx(
    _np_affinity_loss(t, s, 2), rel=1e-4
  )
  assert float(fl.local_affinity(t, s, scale=None)) == pytest.approx(
    _np_affinity_loss(t, s, 1), rel=1e-4
  )
  t2, s2 = _maps(2, 3, 3, 3, seed=3), _maps(2, 3, 3, 3, seed=4)
  assert float(fl.fsp((t, t2), (s, s2))) == pytest.approx(_np_fsp(t, t2, s, s2), rel=1e-5)
  assert float(fl.fitnet(t, s)) == pytest.approx(((t - s) ** 2).mean(), rel=1e-6)


def _np_huber(x):
  return 0.5 * x * x if abs(x) <= 1 else abs(x) - 0.5


def _np_rkd(t, s):
  def relations(f):
    e = f.reshape(len(f), -1).astype(np.float64)
    b = len(e)
    dist = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
    dist /= dist.sum() / (b * (b - 1))
    angle = np.zeros((b, b, b))
    for j in range(b):
      for i in range(b):
        for k in range(b):
          if i != j and k != j:
            u, v = e[i] - e[j], e[k] - e[j]
            angle[j, i, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return dist, angle

  (dt, at), (ds, as_) = relations(t), relations(s)
  distance = np.mean([_np_huber(x) for x in (dt - ds).ravel()])
  return distance + 2 * np.mean([_np_huber(x) for x in (at - as_).ravel()])


def _np_pkt(t, s):
  def conditional(f):
    e = f.reshape(len(f), -1).astype(np.float64)
    b = len(e)
    kernel = np.array(
      [
        [(e[i] @ e[j] / (np.linalg.norm(e[i]) * np.linalg.norm(e[j])) + 1) / 2 for j in range(b)]
        for i in range(b)
      ]
    )
    return {
      (i, j): kernel[i, j] / sum(kernel[i, k] for k in range(b) if k != i)
      for i in range(b)
      for j in range(b)
      if i != j
    }

  p, q = conditional(t), conditional(s)
  return sum(p[ij] * math.log(p[ij] / q[ij]) for ij in p) / len(t)


def _np_nst(t, s):
  def channels(f):
    maps = [f[..., c].ravel().astype(np.float64) for c in range(f.shape[-1])]
    return [m / np.linalg.norm(m) for m in maps]

  total = 0.0
  for n in range(len(t)):
    ct, cs = channels(t[n]), channels(s[n])

    def k(xs, ys):
      return np.mean([(x @ y) ** 2 for x in xs for y in ys])

    total += k(ct, ct) + k(cs, cs) - 2 * k(ct, cs)
  return total / len(t)


def _np_ab(t, s, margin=1.0):
  out = np.where(t > 0, np.maximum(0, margin - s) ** 2, np.maximum(0, margin + s) ** 2)
  return out.mean()


def _np_conv(x, layer):
  """'SAME' stride-1 cross-correlation with bias, by loops; kernel (k, k, C_in, C_out) as flax's."""
  kernel, bias = np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64)
  k = kernel.shape[0]
  pad = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  b, h, w, _ = x.shape
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for n in range(b):
    for y in range(h):
      for xx in range(w):
        patch = pad[n, y : y + k, xx : xx + k]  # (k, k, C_in)
        out[n, y, xx] = np.tensordot(patch, kernel, axes=3) + bias
  return out


def _np_stack(x, params, slope):
  """Convolutions conv_0, conv_1, ... with a (leaky) ReLU between them."""
  x = np.asarray(x, np.float64)
  for i in range(len(params)):
    if i:
      x = np.where(x > 0, x, slope * x)
    x = _np_conv(x, params[f"conv_{i}"])
  return x


def _np_vid(t, s, params):
  mean = _np_stack(s, params["regressor"], 0.0)
  var = np.log1p(np.exp(np.asarray(params["alpha"], np.float64))) + 1e-5
  return np.mean(0.5 * np.log(var) + (t - mean) ** 2 / (2 * var))


def _np_ft(t, s, params):
  def unit(f):
    flat = f.reshape(len(f), -1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)

  encoded = _np_stack(t, params["encoder"], 0.1)
  reconstruction = np.mean((t - _np_stack(encoded, params["decoder"], 0.1)) ** 2)
  factor_s = _np_stack(s, params["translator"], 0.1)
  return np.mean(np.abs(unit(encoded) - unit(factor_s))) + reconstruction


def test_new_methods_match_numpy_loops():
  t, s = _maps(4, 3, 3, 2, seed=11), _maps(4, 3, 3, 3, seed=12)  # channel counts differ
  assert float(fl.relational(t, s)) == pytest.approx(_np_rkd(t, s), rel=1e-4)
  assert float(fl.probabilistic_transfer(t, s)) == pytest.approx(_np_pkt(t, s), rel=1e-3)
  assert float(fl.neuron_selectivity(t, s)) == pytest.approx(_np_nst(t, s), rel=1e-4)
  same = _maps(4, 3, 3, 2, seed=13) - 0.4  # signed, like pre-activations: both hinge sides active
  assert float(fl.activation_boundary(t, same)) == pytest.approx(_np_ab(t, same), rel=1e-5)
  vid = fl.init_vid(t, s, jax.random.PRNGKey(1))
  vid["alpha"] = jnp.array([0.3, -0.5])  # away from σ² = 1, so the variance term is tested too
  assert float(fl.variational_information(t, s, vid)) == pytest.approx(_np_vid(t, s, vid), rel=1e-4)
  ft = fl.init_ft(t, s, jax.random.PRNGKey(2))
  assert float(fl.factor_transfer(t, s, ft)) == pytest.approx(_np_ft(t, s, ft), rel=1e-4)
  connector = fl.init_hint_regressor(t, s, jax.random.PRNGKey(3))
  mapped = np.asarray(s, np.float64) @ np.asarray(connector["conv1x1"]["kernel"]) + np.asarray(
    connector["conv1x1"]["bias"]
  )
  got = float(fl.activation_boundary(t, s, connector))
  assert got == pytest.approx(_np_ab(t, mapped), rel=1e-5)


def test_trainable_parts_and_what_trains_them():
  t, s = _maps(2, 4, 4, 4, seed=21), _maps(2, 4, 4, 2, seed=22)
  ft = fl.init_ft(t, s, jax.random.PRNGKey(0))
  m = math.ceil(fl.FT_RATE * 4)
  assert ft["encoder"]["conv_2"]["kernel"].shape == (3, 3, m, m)
  assert ft["decoder"]["conv_2"]["kernel"].shape == (3, 3, 4, 4)
  assert ft["translator"]["conv_0"]["kernel"].shape == (3, 3, 2, 2)
  grads = jax.grad(lambda p: fl.factor_transfer(t, s, p))(ft)
  # The paraphraser learns from its reconstruction alone (the factor term sees F_T as a constant).
  nets = fl.ft_networks(4, 2)

  def reconstruction(encoder):
    encoded = nets["encoder"].apply({"params": encoder}, jnp.asarray(t))
    return jnp.mean(jnp.square(t - nets["decoder"].apply({"params": ft["decoder"]}, encoded)))

  for got, want in zip(
    jax.tree.leaves(grads["encoder"]), jax.tree.leaves(jax.grad(reconstruction)(ft["encoder"]))
  ):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["translator"]))
  vid = fl.init_vid(t, s, jax.random.PRNGKey(1))
  grads = jax.grad(lambda p: fl.variational_information(t, s, p))(vid)
  assert float(jnp.abs(grads["alpha"]).max()) > 0
  assert float(jnp.abs(grads["regressor"]["conv_0"]["kernel"]).max()) > 0
  # Which methods get trainable parts for equal widths (KD-MRI's 32/32) and for unequal ones.
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  equal, narrow = (_dccnn_like(5), _dccnn_like(3)), (_dccnn_like(5, 4), _dccnn_like(3, 2))
  cases = (("vid", True), ("ft", True), ("ab", False), ("fitnet", False), ("rkd", False))
  for name, with_equal in cases:
    key = jax.random.PRNGKey(0)
    assert bool(fl.init_feature_params(name, *equal, pairs, key)) == with_equal, name
    assert bool(fl.init_feature_params(name, *narrow, pairs, key)) == (name != "rkd"), name


# --- every registered method: zero at equality, gradients, jit, batch 1 ---------------------------


def _pair(name, batch, seed=0, same=False):
  t = _maps(batch, 4, 4, 3, seed=seed)
  s = t.copy() if same else _maps(batch, 4, 4, 3, seed=seed + 1)
  if name == "fsp":
    t2 = _maps(batch, 4, 4, 2, seed=seed + 2)
    s2 = t2.copy() if same else _maps(batch, 4, 4, 2, seed=seed + 3)
    return (t, t2), (s, s2)
  return t, s


# Margin losses are not distances between the maps: not 0 at student = teacher (see AB's docstring).
_MARGINS = {"ab"}


@pytest.mark.parametrize("name", sorted(set(fl.FEATURE_LOSSES) - _MARGINS))
def test_zero_when_student_equals_teacher(name):
  t, s = _pair(name, 4, same=True)
  assert abs(float(fl.FEATURE_LOSSES[name](t, s))) < 1e-6


def test_margin_losses_are_zero_past_the_margin_only():
  t = _maps(2, 4, 4, 3, seed=7) - 0.5  # about half the teacher's neurons off
  past = np.where(t > 0, 1.0 + t, -1.0 - np.abs(t))
  assert float(fl.activation_boundary(t, past)) == 0.0
  assert float(fl.activation_boundary(t, np.maximum(t, 0))) > 0


# Aliases (pairwise = local_affinity) are the same function: test each function once.
_DISTINCT = sorted(
  {fn: name for name, fn in sorted(fl.FEATURE_LOSSES.items(), reverse=True)}.values()
)


@pytest.mark.parametrize("name", _DISTINCT)
def test_positive_gradients_finite_jit_and_batch_one(name):
  fn = fl.FEATURE_LOSSES[name]
  t, s = _pair(name, 4)  # the paper's batch; PKT compares each sample with B − 1 ≥ 2 others
  value = float(fn(t, s))
  assert value > 0
  grads = jax.grad(lambda x: fn(t, x))(jax.tree_util.tree_map(jnp.asarray, s))
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert any(float(jnp.abs(g).max()) > 0 for g in leaves)
  assert float(jax.jit(fn)(t, s)) == pytest.approx(value, rel=1e-4, abs=1e-8)
  t1, s1 = jax.tree_util.tree_map(lambda a: a[:1], (t, s))
  one = jax.jit(fn)(t1, s1)
  assert one.shape == () and bool(jnp.isfinite(one))
  g1 = jax.tree_util.tree_leaves(
    jax.grad(lambda x: fn(t1, x))(jax.tree_util.tree_map(jnp.asarray, s1))
  )
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in g1)


def test_batch_statistics_vanish_with_batch_one():
  # SP, CC and the code's AT compare samples within a batch: one sample carries no signal.
  t, s = _maps(1, 4, 4, 3, seed=5), _maps(1, 4, 4, 3, seed=6)
  for name in ("sp", "cc", "attention_code"):
    assert abs(float(fl.FEATURE_LOSSES[name](t, s))) < 1e-6, name
  assert float(fl.FEATURE_LOSSES["attention"](t, s)) > 0


# --- the entry point: layer pairs, names, parameters, real models ---------------------------------


def _dccnn_like(num_convs, channels=32, seed=0):
  return tuple(
    tuple(_maps(2, 4, 4, channels, seed=seed + 10 * c + j) for j in range(num_convs - 1))
    for c in range(5)
  )


def test_feature_distillation_averages_paper_pairs():
  teacher, student = _dccnn_like(5), _dccnn_like(3, seed=100)
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  expected = np.mean([float(fl.attention_transfer(teacher[c][2], student[c][1])) for c in range(5)])
  got = float(fl.feature_distillation("attention", teacher, student, pairs))
  assert got == pytest.approx(expected, rel=1e-6)
  # Config overrides arrive as lists.
  as_lists = [[list(t), list(s)] for t, s in pairs]
  assert float(fl.feature_distillation("attention", teacher, student, as_lists)) == pytest.approx(
    got
  )


def test_bad_method_and_layer_get_one_sentence():
  teacher, student = _dccnn_like(5), _dccnn_like(3)
  with pytest.raises(
    InputError, match=r"unknown feature loss 'at'; choose one of \[.*'attention'.*'sp'"
  ):
    fl.feature_distillation("at", teacher, student, fl.PAPER_LAYER_PAIRS["dccnn"])
  with pytest.raises(
    InputError,
    match=r"student has no feature layer \(0, 2\); valid layer paths are "
    r"\(c, l\) with c in 0\.\.4 and l in 0\.\.1\.",
  ):
    fl.feature_distillation("attention", teacher, student, [((0, 2), (0, 2))])
  with pytest.raises(InputError, match=r"teacher has no feature layer \(5,\)"):
    fl.feature_distillation("attention", teacher, student, [((5,), (0, 1))])
  vdsr = tuple(_maps(1, 4, 4, 2, seed=j) for j in range(6))
  with pytest.raises(InputError, match=r"valid layer paths are \(l,\) with l in 0\.\.5"):
    fl.select(vdsr, (6,), "student")
  with pytest.raises(InputError, match="choose one of"):
    fl.default_layer_pairs("hints", "dccnn")
  with pytest.raises(InputError, match="pair of layers"):
    fl.fsp(teacher[0][0], student[0][0])
  with pytest.raises(InputError, match=r"student has no feature layer \(0, 2\)"):
    fl.feature_distillation("fsp", teacher, student, [((0, 2), (0, 2))])


def test_fsp_default_pairs_select_layer_pairs():
  teacher, student = _dccnn_like(5), _dccnn_like(3, seed=100)
  pairs = fl.default_layer_pairs("fsp", "dccnn")
  expected = np.mean(
    [
      float(fl.fsp((teacher[c][0], teacher[c][2]), (student[c][0], student[c][1])))
      for c in range(5)
    ]
  )
  assert float(fl.feature_distillation("fsp", teacher, student, pairs)) == pytest.approx(
    expected, rel=1e-6
  )
  # A single path stands for the section from the cascade's first conv: the paper's pairs work too.
  paper = fl.PAPER_LAYER_PAIRS["dccnn"]
  assert float(fl.feature_distillation("fsp", teacher, student, paper)) == pytest.approx(
    expected, rel=1e-6
  )
  assert fl.default_layer_pairs("attention", "vdsr") == (((5,), (3,)),)


def test_fitnet_regressor_params_when_channels_differ():
  teacher, student = _dccnn_like(5, channels=4), _dccnn_like(3, channels=2, seed=50)
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  params = fl.init_feature_params("fitnet", teacher, student, pairs, jax.random.PRNGKey(0))
  assert sorted(params) == [str(c) for c in range(5)]
  assert params["0"]["conv1x1"]["kernel"].shape == (2, 4)

  def loss(p):
    return fl.feature_distillation("fitnet", teacher, student, pairs, p)

  grads = jax.grad(loss)(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.abs(grads["3"]["conv1x1"]["kernel"]).max()) > 0
  with pytest.raises(InputError, match="channels"):
    fl.feature_distillation("fitnet", teacher, student, pairs)
  # Equal channels (KD-MRI's 32/32): no parameters at all.
  assert (
    fl.init_feature_params("fitnet", _dccnn_like(5), _dccnn_like(3), pairs, jax.random.PRNGKey(0))
    == {}
  )
  assert fl.init_feature_params("sp", teacher, student, pairs, jax.random.PRNGKey(0)) == {}


def _real_feature_shapes(name, size=8):
  """Random maps shaped like the features model `name` returns (traced with eval_shape: no
  compile)."""
  model = build_model(name)
  batch = {
    "input": jnp.zeros((3, size, size)),
    "kspace": jnp.zeros((3, size, size), jnp.complex64),
    "mask": jnp.ones((size, size)),
  }
  shapes = jax.eval_shape(
    lambda: apply(model, init_params(model, jax.random.PRNGKey(0), size, size), batch)[1]
  )
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  maps = [_maps(*leaf.shape, seed=i + len(name)) for i, leaf in enumerate(leaves)]
  return jax.tree_util.tree_unflatten(tree, maps)


@pytest.mark.parametrize(
  "family,teacher,student",
  [("dccnn", "teacher", "student"), ("vdsr", "vdsr_teacher", "vdsr_student")],
)
def test_every_method_on_the_paper_models_features(family, teacher, student):
  ft, fs = _real_feature_shapes(teacher), _real_feature_shapes(student)
  if family == "dccnn":
    assert [len(c) for c in ft] == [4] * 5 and [len(c) for c in fs] == [2] * 5
    at = fl.attention_transfer(ft[3][2], fs[3][1])  # teacher conv 3, student conv 2, 1-based
  else:
    assert len(ft) == 10 and len(fs) == 6
    at = fl.attention_transfer(ft[5], fs[3])  # teacher layer 6, student layer 4, 1-based
  pairs = fl.PAPER_LAYER_PAIRS[family]
  assert float(
    fl.feature_distillation("attention", ft, fs, pairs[3:4] if family == "dccnn" else pairs)
  ) == pytest.approx(float(at))
  for name in fl.FEATURE_LOSSES:
    value = float(fl.feature_distillation(name, ft, fs, fl.default_layer_pairs(name, family)))
    assert np.isfinite(value) and value > 0, name


@pytest.mark.parametrize(
  "name,count",
  [("vdsr_teacher", 333_569), ("vdsr_student", 185_857), ("teacher", 141_765), ("student", 49_285)],
)
def test_parameter_counts(name, count):
  model = build_model(name)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0), 8, 8))
  assert sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)) == count


def test_a_new_method_is_one_function_and_one_registry_entry(monkeypatch):
  """The extension point the module docstring promises: register `my_loss` and select it by name, in
  the registry, in `configs/methods.py` and in a training stage's objective."""
  from configs import default, methods
  from kdmri_jax import train

  def mean_channel_gap(teacher_map, student_map):  # the whole new method
    return jnp.mean(jnp.abs(jnp.mean(teacher_map, -1) - jnp.mean(student_map, -1)))

  monkeypatch.setitem(fl.FEATURE_LOSSES, "mean_channel_gap", mean_channel_gap)
  teacher, student = _dccnn_like(5), _dccnn_like(3, seed=100)
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  expected = np.mean([float(mean_channel_gap(teacher[c][2], student[c][1])) for c in range(5)])
  assert float(
    fl.feature_distillation("mean_channel_gap", teacher, student, pairs)
  ) == pytest.approx(expected)
  assert methods.get_config("demo,mean_channel_gap").kd.feature_loss == "mean_channel_gap"

  config = default.get_config()
  config.kd.feature_loss = "mean_channel_gap"
  t_model, s_model = (build_model(n, num_cascades=1, features=4) for n in ("teacher", "student"))
  objective = train.make_objective("feature", config, s_model, t_model)
  train.check_objective(objective)
  rng = np.random.default_rng(0)
  batch = {
    "input": rng.random((2, 8, 8), np.float32),
    "target": rng.random((2, 8, 8), np.float32),
    "kspace": np.zeros((2, 8, 8), np.complex64),
    "mask": np.ones((2, 8, 8), np.float32),
  }
  t_params, s_params = (
    init_params(m, jax.random.PRNGKey(i), 8, 8) for i, m in enumerate((t_model, s_model))
  )
  t_feats, s_feats = apply(t_model, t_params, batch)[1], apply(s_model, s_params, batch)[1]
  want = float(mean_channel_gap(t_feats[0][2], s_feats[0][1]))
  assert float(objective.loss(s_params, t_params, batch)[0]) == pytest.approx(want, rel=1e-5)


# --- every method end to end: `--config.kd.feature_loss=NAME` on a tiny run -----------------------

_TINY = {"train__batch_size": 4, "evaluate__batch_size": 4, "train__checkpoint_every_steps": 0}


def _tiny_sources(monkeypatch):
  from kdmri_jax import pipeline

  sources = {"train": synthetic_source(8, seed=1), "validation": synthetic_source(4, seed=2)}
  monkeypatch.setattr(pipeline, "load_data", lambda config, split: sources[split])


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
  """A one-epoch teacher of the tiny run (one cascade, 4 features, 16×16), trained once for all."""
  from kdmri_jax import main

  workdir = tmp_path_factory.mktemp("teacher_run")
  with pytest.MonkeyPatch.context() as monkeypatch:
    _tiny_sources(monkeypatch)
    assert main.main(tiny_main_argv(workdir, workdir / "cache", "teacher", epochs=1, **_TINY)) == 0
  return workdir / "teacher"


@pytest.mark.parametrize("name", _DISTINCT)
def test_every_method_trains_the_feature_stage_through_the_flag(
  name, tiny_teacher, tmp_path, monkeypatch
):
  from kdmri_jax import main

  _tiny_sources(monkeypatch)
  shutil.copytree(tiny_teacher, tmp_path / "teacher")
  argv = tiny_main_argv(tmp_path, tmp_path / "cache", "feature", epochs=1, **_TINY)
  assert main.main(argv + [f"--config.kd.feature_loss={name}"]) == 0
  log = (tmp_path / "feature" / "log.txt").read_text()
  assert log.startswith("feature epoch 1/1") and "nan" not in log.lower()
  # best/ holds the plain student, whatever the method trained alongside it.
  best_dir = tmp_path / "feature" / "best"
  student, best, meta = checkpoints.load_params(best_dir, expected_model="student")
  assert meta["stage"] == "feature"
  assert set(best) == set(init_params(student, jax.random.PRNGKey(0), 16, 16))
  # The method's own parts (VID's regressor and variances, FT's networks at equal widths) trained.
  state = stage_state(tmp_path, "feature")
  trained = {k for k in state if k.startswith("state['params']['feature']")}
  assert bool(trained) == (name in ("vid", "ft")), sorted(trained)[:3]
