"""Interleaved A/B of the CPU training step: XLA's conv gradient, `models.layers`', PyTorch eager.

  python -m experiments.train_step_ab_cpu --size 240 --batch 1 --repeats 5

Prints each implementation's median and its ratio to PyTorch eager (experiments/results/speed.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import unittest.mock

import jax
from jax import lax

from kdmri_jax import benchmark, models
from kdmri_jax.models import layers


def build(name: str, size: int, batch: int) -> list[benchmark.Impl]:
  model = models.build_model(name)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  data = benchmark.make_batch(model, batch, size, size)
  with unittest.mock.patch.object(layers, "conv_general_dilated", lax.conv_general_dilated):
    xla_grad = benchmark.build_impl("jax_jit", "train", name, model, params, data, "cpu", 0, False)
    xla_grad.run()  # traced and compiled with XLA's own gradient while the patch holds
  xla_grad.name = (name, "jax_xla_grad")
  impls = [xla_grad]
  for impl in ("jax_jit", "torch_eager"):
    built = benchmark.build_impl(impl, "train", name, model, params, data, "cpu", 0, False)
    built.name = (name, impl)
    impls.append(built)
  return impls


def main(argv) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=240)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  if args.size < 8 or args.batch < 1 or args.repeats < 1:
    parser.error("--size must be at least 8, --batch and --repeats at least 1.")
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's import, as in the benchmark
  impls = [impl for name in ("teacher", "student") for impl in build(name, args.size, args.batch)]
  load = os.getloadavg()[0]
  stats = benchmark.time_case(impls, args.repeats, warmup=1)
  medians = {key: 1e3 * statistics.median(s["times"]) for key, s in stats.items()}
  for (name, impl), ms in medians.items():
    print(f"{name} {impl}: {ms:.1f} ms, x torch_eager {medians[(name, 'torch_eager')] / ms:.2f}")
  print(f"1-min load {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
