"""Where XLA:CPU's training step loses time: one 32→32 conv3x3 layer's forward pass, input gradient
and weight gradient, and the weight gradient rewritten as matrix products (with the cost of building
their operands). Prints a table of medians; the numbers in experiments/results/speed.md ("What was
tried").

  python -m experiments.conv_gradient_cpu --size 240 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

CHANNELS = 32


def conv(x, kernel):
  return jax.lax.conv_general_dilated(
    x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def taps(x):
  """The 9 shifted (B, H, W, C) copies of x that a 3×3 kernel sees, row-major tap order."""
  height, width = x.shape[1], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]


def weight_grad_taps(x, g):
  """dW[tap] = Σ_pixels x_tap ⊗ g: nine (C, HW)·(HW, C) products."""
  flat_g = g.reshape(-1, CHANNELS)
  return jnp.stack([jnp.einsum("pk,pc->kc", t.reshape(-1, CHANNELS), flat_g) for t in taps(x)])


def im2col(x):
  return jnp.concatenate(taps(x), axis=-1).reshape(-1, 9 * CHANNELS)


def weight_grad_im2col(x, g):
  """dW = im2col(x)ᵀ · g: one (9C, HW)·(HW, C) product."""
  return jnp.einsum("pk,pc->kc", im2col(x), g.reshape(-1, CHANNELS)).reshape(9, CHANNELS, CHANNELS)


def median_ms(function, *args, repeats: int) -> float:
  jax.block_until_ready(function(*args))  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main(argv) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=240, help="image height and width")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  if args.size < 3 or args.repeats < 1:
    parser.error("--size must be at least 3 and --repeats at least 1.")
  rng = np.random.default_rng(0)
  shape = (1, args.size, args.size, CHANNELS)
  x, g = (jnp.asarray(rng.random(shape, dtype=np.float32)) for _ in range(2))
  kernel = jnp.asarray(rng.random((3, 3, CHANNELS, CHANNELS), dtype=np.float32))
  weight_grad = jax.jit(lambda x, g: jax.vjp(lambda k: conv(x, k), kernel)[1](g)[0])
  reference = weight_grad(x, g).reshape(9, CHANNELS, CHANNELS)
  cols, flat_g = im2col(x), g.reshape(-1, CHANNELS)
  cases = [
    ("forward conv", jax.jit(conv), (x, kernel)),
    (
      "input gradient",
      jax.jit(lambda k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0]),
      (kernel, g),
    ),
    ("weight gradient (XLA)", weight_grad, (x, g)),
    ("weight gradient as 9 tap products", jax.jit(weight_grad_taps), (x, g)),
    ("weight gradient as im2col + 1 product", jax.jit(weight_grad_im2col), (x, g)),
    ("  of which: building im2col", jax.jit(im2col), (x,)),
    (
      "  of which: the product alone",
      jax.jit(lambda c, g: jnp.einsum("pk,pc->kc", c, g)),
      (cols, flat_g),
    ),
  ]
  scale = float(jnp.abs(reference).max())
  print(
    f"| {args.size}×{args.size}, {CHANNELS}→{CHANNELS}, "
    f"batch 1 | median ms | max rel. diff vs XLA |"
  )
  print("|---|---|---|")
  for name, function, inputs in cases:
    diff = ""
    if name.startswith("weight gradient as"):
      error = float(jnp.abs(function(*inputs).reshape(reference.shape) - reference).max())
      diff = f"{error / scale:.1e}"
    print(f"| {name} | {median_ms(function, *inputs, repeats=args.repeats):.2f} | {diff} |")
  print(f"\n{jax.devices()[0].device_kind}, jax {jax.__version__}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
