"""Interleaved A/B of the CPU training step: XLA's conv gradient, `models.layers`', PyTorch eager.

  python -m experiments.train_step_ab_cpu --size 240 --batch 1 --repeats 5

Prints one line per (model, implementation) — its median and its ratio to PyTorch eager — and the
1-minute load at the start and end (experiments/results/speed.md, issue 13).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import unittest.mock
from typing import Any, Sequence

import jax
from jax import lax

from kdmri_jax import benchmark, models
from kdmri_jax.errors import require, run_cli
from kdmri_jax.models import layers

MODELS = ("teacher", "student")
IMPLS = ("jax_xla_grad", "jax_jit", "torch_eager")  # jax_xla_grad: jax_jit without layers' VJP


def _train_impl(impl: str, name: str, model: Any, params: Any, data: dict) -> benchmark.Impl:
  built = benchmark.build_impl(impl, "train", name, model, params, data, "cpu", 0, False)
  built.name = (name, impl)
  return built


def _xla_grad_impl(name: str, model: Any, params: Any, data: dict) -> benchmark.Impl:
  """`jax_jit` traced and compiled while conv3x3 uses `lax.conv_general_dilated` (XLA's gradient);
  later calls reuse that compiled step."""
  with unittest.mock.patch.object(layers, "conv_general_dilated", lax.conv_general_dilated):
    impl = _train_impl("jax_jit", name, model, params, data)
    impl.run()
  impl.name = (name, "jax_xla_grad")
  return impl


def build(name: str, size: int, batch: int) -> list[benchmark.Impl]:
  """The three training steps of model `name` on one batch, in `IMPLS` order."""
  model = models.build_model(name)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  data = benchmark.make_batch(model, batch, size, size)
  return [_xla_grad_impl(name, model, params, data)] + [
    _train_impl(impl, name, model, params, data) for impl in IMPLS[1:]
  ]


def report_lines(stats: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
  """'MODEL IMPL: MS ms, x torch_eager RATIO' per timed case ('MODEL IMPL: STATUS' otherwise)."""
  medians = {
    key: 1e3 * statistics.median(s["times"]) for key, s in stats.items() if s["status"] == "ok"
  }
  lines = []
  for (name, impl), s in stats.items():
    if (name, impl) not in medians:
      lines.append(f"{name} {impl}: {s['status']}")
      continue
    eager = medians.get((name, "torch_eager"))
    ratio = f"{eager / medians[(name, impl)]:.2f}" if eager else "n/a"
    lines.append(f"{name} {impl}: {medians[(name, impl)]:.1f} ms, x torch_eager {ratio}")
  return lines


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=240)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  require(
    args.size >= 8 and args.batch >= 1 and args.repeats >= 1,
    "--size must be at least 8, --batch and --repeats at least 1.",
  )
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's import, as in the benchmark
  impls = [impl for name in MODELS for impl in build(name, args.size, args.batch)]
  load = os.getloadavg()[0]
  stats = benchmark.time_case(impls, args.repeats, warmup=1)
  print("\n".join(report_lines(stats)))
  print(f"1-min load {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
