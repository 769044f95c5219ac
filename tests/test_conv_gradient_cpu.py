"""experiments/conv_gradient_cpu.py: the weight-gradient rewrites equal XLA's, and the table
prints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import conv_gradient_cpu as cg


def test_weight_gradient_rewrites_equal_xlas():
  rng = np.random.default_rng(0)
  x, g = (
    jnp.asarray(rng.standard_normal((2, 6, 5, cg.CHANNELS), dtype=np.float32)) for _ in range(2)
  )
  kernel = jnp.zeros((3, 3, cg.CHANNELS, cg.CHANNELS), jnp.float32)
  expected = jax.vjp(lambda k: cg.conv(x, k), kernel)[1](g)[0].reshape(9, cg.CHANNELS, cg.CHANNELS)
  np.testing.assert_allclose(cg.weight_grad_taps(x, g), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(cg.weight_grad_im2col(x, g), expected, rtol=1e-4, atol=1e-4)


def test_prints_one_row_per_case(capsys):
  assert cg.main(["--size", "8", "--repeats", "1"]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
  assert len(rows) == 1 + 7 and "weight gradient (XLA)" in rows[3]


def test_bad_arguments_exit_2():
  with pytest.raises(SystemExit) as error:
    cg.main(["--size", "2"])
  assert error.value.code == 2
