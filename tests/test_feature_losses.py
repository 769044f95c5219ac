"""Feature-distillation losses: hand-computed values, NumPy-loop references, zero at equality, gradients, jit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdmri_jax import feature_losses as fl
from kdmri_jax.errors import InputError
from kdmri_jax.models import apply, build_model, init_params


def _maps(*shape, seed=0, offset=0.1):
  # Post-ReLU-like: positive, away from 0 so every normalisation is well defined.
  return np.random.default_rng(seed).random(shape).astype(np.float32) + offset


# --- hand-computed examples -------------------------------------------------------------------------


def test_attention_hand_example():
  # Q_T = (2, 2)/√8 = (1/√2, 1/√2); Q_S = (4, 0)/4 = (1, 0); mean |diff| = (1 − 1/√2 + 1/√2)/2 = 0.5.
  teacher = np.array([[[[1, 1], [1, 1]]]], np.float32)  # (1, 1, 2, 2)
  student = np.array([[[[2, 0], [0, 0]]]], np.float32)
  assert float(fl.attention_transfer(teacher, student)) == pytest.approx(0.5, abs=1e-6)
  # Disjoint one-hot maps: |(1, 0) − (0, 1)| averages to 1.
  assert float(fl.attention_transfer(np.array([[[[1], [0]]]], np.float32),
                                     np.array([[[[0], [1]]]], np.float32))) == pytest.approx(1.0)


def test_attention_code_hand_example():
  # Normalised over the batch at each pixel: Q_T = (1, 1)/√2, Q_S = (1, 0); mean |diff| = 0.5.
  teacher = np.ones((2, 1, 1, 1), np.float32)
  student = np.array([1, 0], np.float32).reshape(2, 1, 1, 1)
  assert float(fl.attention_transfer_batch(teacher, student)) == pytest.approx(0.5, abs=1e-6)
  # Per sample (1×1 maps): Q_T = (1, 1); the student's sample 1 is all zero so Q_S = (1, 0): again 0.5.
  assert float(fl.attention_transfer(teacher, student)) == pytest.approx(0.5, abs=1e-6)


def test_fitnet_hand_example_and_regressor():
  assert float(fl.fitnet(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.float32))) == 1.0
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
  assert float(fl.similarity_preserving(teacher, student)) == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-6)


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


# --- NumPy loop references on B=2, H=W=3, C=2 -----------------------------------------------------------


def _np_attention(t, s, batch_norm):
  b, h, w, _ = t.shape
  qt, qs = (np.zeros((b, h * w)) for _ in range(2))
  for i in range(b):
    for y in range(h):
      for x in range(w):
        qt[i, y * w + x] = sum(v * v for v in t[i, y, x])
        qs[i, y * w + x] = sum(v * v for v in s[i, y, x])
  axis = 0 if batch_norm else 1
  qt /= np.sqrt((qt ** 2).sum(axis, keepdims=True))
  qs /= np.sqrt((qs ** 2).sum(axis, keepdims=True))
  return np.abs(qt - qs).mean()


def _np_sp(t, s):
  b = t.shape[0]

  def gram(f):
    q = f.reshape(b, -1).astype(np.float64)
    g = np.array([[np.dot(q[i], q[j]) for j in range(b)] for i in range(b)])
    return g / np.sqrt((g ** 2).sum(1, keepdims=True))

  return ((gram(t) - gram(s)) ** 2).sum() / b ** 2


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

  return ((kernel(t) - kernel(s)) ** 2).sum() / b ** 2


def _np_pool(f, patch):
  b, h, w, c = f.shape
  nh, nw = -(-h // patch), -(-w // patch)
  out = np.zeros((b, nh * nw, c))
  for i in range(b):
    for y in range(nh):
      for x in range(nw):
        block = f[i, y * patch:(y + 1) * patch, x * patch:(x + 1) * patch]
        out[i, y * nw + x] = block.reshape(-1, c).max(0)
  return out


def _np_affinity_loss(t, s, patch):
  nt, ns = _np_pool(t, patch), _np_pool(s, patch)
  b, n, _ = nt.shape
  total = 0.0
  for i in range(b):
    for p in range(n):
      for q in range(n):
        at = nt[i, p] @ nt[i, q] / ((np.linalg.norm(nt[i, p]) + 1e-8) * (np.linalg.norm(nt[i, q]) + 1e-8))
        a_s = ns[i, p] @ ns[i, q] / ((np.linalg.norm(ns[i, p]) + 1e-8) * (np.linalg.norm(ns[i, q]) + 1e-8))
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
          out[n, i, j] = sum(a[n, y, x, i] * b_[n, y, x, j] for y in range(h) for x in range(w)) / (h * w)
    return out

  return ((g(t1, t2) - g(s1, s2)) ** 2).mean()


def test_losses_match_numpy_loops():
  t, s = _maps(2, 3, 3, 2, seed=1), _maps(2, 3, 3, 2, seed=2)
  assert float(fl.attention_transfer(t, s)) == pytest.approx(_np_attention(t, s, False), rel=1e-5)
  assert float(fl.attention_transfer_batch(t, s)) == pytest.approx(_np_attention(t, s, True), rel=1e-5)
  assert float(fl.similarity_preserving(t, s)) == pytest.approx(_np_sp(t, s), rel=1e-4, abs=1e-9)
  assert float(fl.correlation_congruence(t, s)) == pytest.approx(_np_cc(t, s), rel=1e-4, abs=1e-9)
  # scale 2/3 on 3×3 -> patches of 2 in ceil mode: 2×2 nodes, the edge ones cover one row/column.
  assert float(fl.local_affinity(t, s, scale=2 / 3)) == pytest.approx(_np_affinity_loss(t, s, 2), rel=1e-4)
  assert float(fl.local_affinity(t, s, scale=None)) == pytest.approx(_np_affinity_loss(t, s, 1), rel=1e-4)
  t2, s2 = _maps(2, 3, 3, 3, seed=3), _maps(2, 3, 3, 3, seed=4)
  assert float(fl.fsp((t, t2), (s, s2))) == pytest.approx(_np_fsp(t, t2, s, s2), rel=1e-5)
  assert float(fl.fitnet(t, s)) == pytest.approx(((t - s) ** 2).mean(), rel=1e-6)


# --- every registered method: zero at equality, gradients, jit, batch 1 -------------------------------


def _pair(name, batch, seed=0, same=False):
  t = _maps(batch, 4, 4, 3, seed=seed)
  s = t.copy() if same else _maps(batch, 4, 4, 3, seed=seed + 1)
  if name == "fsp":
    t2 = _maps(batch, 4, 4, 2, seed=seed + 2)
    s2 = t2.copy() if same else _maps(batch, 4, 4, 2, seed=seed + 3)
    return (t, t2), (s, s2)
  return t, s


@pytest.mark.parametrize("name", sorted(fl.FEATURE_LOSSES))
def test_zero_when_student_equals_teacher(name):
  t, s = _pair(name, 2, same=True)
  assert abs(float(fl.FEATURE_LOSSES[name](t, s))) < 1e-6


# Aliases (pairwise = local_affinity) are the same function: test each function once.
_DISTINCT = sorted({fn: name for name, fn in sorted(fl.FEATURE_LOSSES.items(), reverse=True)}.values())


@pytest.mark.parametrize("name", _DISTINCT)
def test_positive_gradients_finite_jit_and_batch_one(name):
  fn = fl.FEATURE_LOSSES[name]
  t, s = _pair(name, 2)
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
  g1 = jax.tree_util.tree_leaves(jax.grad(lambda x: fn(t1, x))(jax.tree_util.tree_map(jnp.asarray, s1)))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in g1)


def test_batch_statistics_vanish_with_batch_one():
  # SP, CC and the code's AT compare samples within a batch: one sample carries no signal.
  t, s = _maps(1, 4, 4, 3, seed=5), _maps(1, 4, 4, 3, seed=6)
  for name in ("sp", "cc", "attention_code"):
    assert abs(float(fl.FEATURE_LOSSES[name](t, s))) < 1e-6, name
  assert float(fl.FEATURE_LOSSES["attention"](t, s)) > 0


# --- the entry point: layer pairs, names, parameters, real models ----------------------------------------


def _dccnn_like(num_convs, channels=32, seed=0):
  return tuple(tuple(_maps(2, 4, 4, channels, seed=seed + 10 * c + j) for j in range(num_convs - 1))
               for c in range(5))


def test_feature_distillation_averages_paper_pairs():
  teacher, student = _dccnn_like(5), _dccnn_like(3, seed=100)
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  expected = np.mean([float(fl.attention_transfer(teacher[c][2], student[c][1])) for c in range(5)])
  got = float(fl.feature_distillation("attention", teacher, student, pairs))
  assert got == pytest.approx(expected, rel=1e-6)
  # Config overrides arrive as lists.
  as_lists = [[list(t), list(s)] for t, s in pairs]
  assert float(fl.feature_distillation("attention", teacher, student, as_lists)) == pytest.approx(got)


def test_bad_method_and_layer_get_one_sentence():
  teacher, student = _dccnn_like(5), _dccnn_like(3)
  with pytest.raises(InputError, match=r"unknown feature loss 'at'; choose one of \[.*'attention'.*'sp'"):
    fl.feature_distillation("at", teacher, student, fl.PAPER_LAYER_PAIRS["dccnn"])
  with pytest.raises(InputError, match=r"student has no feature layer \(0, 2\); valid layer paths are "
                     r"\(c, l\) with c in 0\.\.4 and l in 0\.\.1\."):
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
  expected = np.mean([float(fl.fsp((teacher[c][0], teacher[c][2]), (student[c][0], student[c][1])))
                      for c in range(5)])
  assert float(fl.feature_distillation("fsp", teacher, student, pairs)) == pytest.approx(expected, rel=1e-6)
  # A single path stands for the section from the cascade's first conv: the paper's pairs work too.
  paper = fl.PAPER_LAYER_PAIRS["dccnn"]
  assert float(fl.feature_distillation("fsp", teacher, student, paper)) == pytest.approx(expected, rel=1e-6)
  assert fl.default_layer_pairs("attention", "vdsr") == (((5,), (3,)),)


def test_fitnet_regressor_params_when_channels_differ():
  teacher, student = _dccnn_like(5, channels=4), _dccnn_like(3, channels=2, seed=50)
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  params = fl.init_feature_params("fitnet", teacher, student, pairs, jax.random.PRNGKey(0))
  assert sorted(params) == [str(c) for c in range(5)]
  assert params["0"]["conv1x1"]["kernel"].shape == (2, 4)
  loss = lambda p: fl.feature_distillation("fitnet", teacher, student, pairs, p)
  grads = jax.grad(loss)(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.abs(grads["3"]["conv1x1"]["kernel"]).max()) > 0
  with pytest.raises(InputError, match="channels"):
    fl.feature_distillation("fitnet", teacher, student, pairs)
  # Equal channels (KD-MRI's 32/32): no parameters at all.
  assert fl.init_feature_params("fitnet", _dccnn_like(5), _dccnn_like(3), pairs, jax.random.PRNGKey(0)) == {}
  assert fl.init_feature_params("sp", teacher, student, pairs, jax.random.PRNGKey(0)) == {}


def _real_feature_shapes(name, size=8):
  """Random maps shaped like the features model `name` returns (traced with eval_shape: no compile)."""
  model = build_model(name)
  batch = {"input": jnp.zeros((2, size, size)), "kspace": jnp.zeros((2, size, size), jnp.complex64),
           "mask": jnp.ones((size, size))}
  shapes = jax.eval_shape(lambda: apply(model, init_params(model, jax.random.PRNGKey(0), size, size),
                                        batch)[1])
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  maps = [_maps(*leaf.shape, seed=i + len(name)) for i, leaf in enumerate(leaves)]
  return jax.tree_util.tree_unflatten(tree, maps)


@pytest.mark.parametrize("family,teacher,student", [("dccnn", "teacher", "student"),
                                                    ("vdsr", "vdsr_teacher", "vdsr_student")])
def test_every_method_on_the_paper_models_features(family, teacher, student):
  ft, fs = _real_feature_shapes(teacher), _real_feature_shapes(student)
  if family == "dccnn":
    assert [len(c) for c in ft] == [4] * 5 and [len(c) for c in fs] == [2] * 5
    at = fl.attention_transfer(ft[3][2], fs[3][1])  # teacher conv 3, student conv 2, 1-based
  else:
    assert len(ft) == 10 and len(fs) == 6
    at = fl.attention_transfer(ft[5], fs[3])  # teacher layer 6, student layer 4, 1-based
  pairs = fl.PAPER_LAYER_PAIRS[family]
  assert float(fl.feature_distillation("attention", ft, fs, pairs[3:4] if family == "dccnn" else pairs)) \
      == pytest.approx(float(at))
  for name in fl.FEATURE_LOSSES:
    value = float(fl.feature_distillation(name, ft, fs, fl.default_layer_pairs(name, family)))
    assert np.isfinite(value) and value > 0, name


@pytest.mark.parametrize("name,count", [("vdsr_teacher", 333_569), ("vdsr_student", 185_857),
                                        ("teacher", 141_765), ("student", 49_285)])
def test_parameter_counts(name, count):
  model = build_model(name)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0), 8, 8))
  assert sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)) == count


def test_a_new_method_is_one_function_and_one_registry_entry(monkeypatch):
  """The extension point the module docstring promises: register `my_loss` and select it by name, in the
  registry, in `configs/methods.py` and in a training stage's objective."""
  from configs import default, methods
  from kdmri_jax import train

  def mean_channel_gap(teacher_map, student_map):  # the whole new method
    return jnp.mean(jnp.abs(jnp.mean(teacher_map, -1) - jnp.mean(student_map, -1)))

  monkeypatch.setitem(fl.FEATURE_LOSSES, "mean_channel_gap", mean_channel_gap)
  teacher, student = _dccnn_like(5), _dccnn_like(3, seed=100)
  pairs = fl.PAPER_LAYER_PAIRS["dccnn"]
  expected = np.mean([float(mean_channel_gap(teacher[c][2], student[c][1])) for c in range(5)])
  assert float(fl.feature_distillation("mean_channel_gap", teacher, student, pairs)) == pytest.approx(expected)
  assert methods.get_config("demo,mean_channel_gap").kd.feature_loss == "mean_channel_gap"

  config = default.get_config()
  config.kd.feature_loss = "mean_channel_gap"
  t_model, s_model = (build_model(n, num_cascades=1, features=4) for n in ("teacher", "student"))
  objective = train.make_objective("feature", config, s_model, t_model)
  train.check_objective(objective)
  rng = np.random.default_rng(0)
  batch = {"input": rng.random((2, 8, 8), np.float32), "target": rng.random((2, 8, 8), np.float32),
           "kspace": np.zeros((2, 8, 8), np.complex64), "mask": np.ones((2, 8, 8), np.float32)}
  t_params, s_params = (init_params(m, jax.random.PRNGKey(i), 8, 8) for i, m in enumerate((t_model, s_model)))
  t_feats, s_feats = apply(t_model, t_params, batch)[1], apply(s_model, s_params, batch)[1]
  want = float(mean_channel_gap(t_feats[0][2], s_feats[0][1]))
  assert float(objective.loss(s_params, t_params, batch)[0]) == pytest.approx(want, rel=1e-5)
