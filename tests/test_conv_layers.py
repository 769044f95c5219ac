"""models.layers.conv_general_dilated: the CPU weight gradient equals JAX's and takes YNNPACK."""

import re
import unittest.mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from kdmri_jax import losses, models
from kdmri_jax.models import layers


def _grads(conv, x, kernel):
  def loss(x, kernel):
    out = conv(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=layers.NHWC)
    return jnp.sum(jnp.sin(out))  # a non-trivial cotangent

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)


@pytest.mark.parametrize(
  "batch,cin,cout", [(1, 32, 1), (2, 32, 1), (1, 1, 32), (3, 8, 8), (2, 32, 32)]
)
def test_gradients_equal_jax_own(batch, cin, cout):
  rng = np.random.default_rng(batch * 100 + cin + cout)
  x = jnp.asarray(rng.standard_normal((batch, 9, 7, cin), dtype=np.float32))
  kernel = jnp.asarray(rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.2)
  ours = _grads(layers.conv_general_dilated, x, kernel)
  theirs = _grads(lax.conv_general_dilated, x, kernel)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_swapped_weight_gradient_handles_uneven_padding():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 8, 6, 5), dtype=np.float32))
  padding = ((0, 2), (2, 1))
  conv = lambda k: layers._conv(x, k, padding, None)  # noqa: E731
  out_shape = jax.eval_shape(conv, jnp.zeros((3, 3, 5, 2))).shape
  g = jnp.asarray(rng.standard_normal(out_shape, dtype=np.float32))
  expected = jax.vjp(conv, jnp.zeros((3, 3, 5, 2)))[1](g)[0]
  np.testing.assert_allclose(
    layers.weight_gradient_swapped(x, g, padding, (3, 3)), expected, rtol=1e-5, atol=1e-5
  )


def _train(model, params, batch, steps):
  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(p, state):
    grads = jax.grad(lambda p: losses.l1(models.apply(model, p, batch)[0], batch["target"]))(p)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  state = optimizer.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params


def _batch(size=24, images=2, seed=0):
  from kdmri_jax import benchmark

  return benchmark.make_batch(models.build_model("student"), images, size, size, seed)


def test_twenty_training_steps_agree_with_jax_own_gradient_to_1e5():
  model = models.build_model("student", num_cascades=2)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  batch = _batch()
  fast = _train(model, params, batch, 20)
  with unittest.mock.patch.object(layers, "conv_general_dilated", lax.conv_general_dilated):
    plain = _train(model, params, batch, 20)
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fast, params)
  assert max(jax.tree.leaves(moved)) > 1e-3  # the comparison is not vacuous: parameters moved
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fast, plain)
  assert max(jax.tree.leaves(diff)) < 1e-5


def test_training_step_is_bit_identical_across_calls():
  model = models.build_model("teacher", num_cascades=1)
  params = models.init_params(model, jax.random.PRNGKey(3), 8, 8)
  batch = _batch(images=3, seed=2)
  first, second = _train(model, params, batch, 2), _train(model, params, batch, 2)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), first, second)))


def _plain_convolutions(conv_fn, batch):
  """Convolutions of the compiled CPU gradient outside a YNNPACK fusion (XLA's generic kernel)."""
  model = models.build_model("student", num_cascades=1)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  with unittest.mock.patch.object(layers, "conv_general_dilated", conv_fn):
    loss = lambda p: losses.l1(models.apply(model, p, batch)[0], batch["target"])  # noqa: E731
    text = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
  ynn_bodies = set(re.findall(r"calls=%([\w.\-]+)[^\n]*__ynn_fusion", text))
  plain, computation = 0, None
  for line in text.splitlines():
    header = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
    if header and line.rstrip().endswith("{"):
      computation = header.group(1)
    plain += " convolution(" in line and computation not in ynn_bodies
  return plain


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's library choice")
def test_every_gradient_convolution_takes_ynnpack_on_cpu():
  batch = _batch(size=32, images=1)
  if _plain_convolutions(lax.conv_general_dilated, batch) == 0:
    pytest.skip("this jaxlib already runs every gradient conv through YNNPACK (or has no YNNPACK)")
  assert _plain_convolutions(layers.conv_general_dilated, batch) == 0
