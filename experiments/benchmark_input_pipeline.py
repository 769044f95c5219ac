"""Input-pipeline throughput next to the teacher's CPU training-step consumption (not a test).

  python -m experiments.benchmark_input_pipeline [--cache-dir DIR] [--batches 150] [--reps 5]

Measures, on the embedded 240×240 brain data at batch 4: slices/s of `train_batches` over the h5
source held in memory, over the same files read slice by slice (the large-dataset path), and over
the TFDS array_record source; then the median time of the project's DC-CNN teacher train step
(`train.make_train_step`: forward, L1, gradient, Adam update) on one 4×240×240 batch, i.e. the
slices/s training consumes. Prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def pipeline_rate(source, batch_size: int, batches: int, threads: int) -> float:
  from kdmri_jax.data import train_batches

  seen, epoch = 0, 0
  start = time.perf_counter()
  while seen < batches:
    for batch in train_batches(source, batch_size, seed=0, epoch=epoch, num_threads=threads):
      seen += 1
      if seen >= batches:
        break
    epoch += 1
  return batches * batch_size / (time.perf_counter() - start)


def teacher_rate(batch, reps: int) -> tuple[float, float]:
  """(median seconds, first call's seconds) of the project's teacher training step on `batch`
  (`kdmri_jax.benchmark.jax_train_step`: `train.make_train_step` with the stage's objective)."""
  import jax

  from kdmri_jax import benchmark, models

  model = models.build_model("teacher")
  params = models.init_params(model, jax.random.PRNGKey(0), *batch["target"].shape[1:])
  step = benchmark.jax_train_step("teacher", model, params, dict(batch), jax.devices("cpu")[0])
  start = time.perf_counter()
  step()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times), compile_s


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--cache-dir", default=None, help="embedded data cache (default ~/.cache/kdmri_jax)"
  )
  parser.add_argument("--batches", type=int, default=150)
  parser.add_argument("--batch-size", type=int, default=4)
  parser.add_argument("--threads", type=int, default=2, help="pipeline reader threads")
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()

  from kdmri_jax import masks
  from kdmri_jax.data import (
    embedded_brain_root,
    list_volumes,
    mask_path_for,
    tfds_builder,
    train_batches,
  )
  from kdmri_jax.data.sources import ReferenceSource

  start = time.perf_counter()
  root = embedded_brain_root(args.cache_dir, size=240, accs=("4x",))
  print(f"embedded brain root {root} ready in {time.perf_counter() - start:.1f} s")
  paths = list_volumes(root, "train", "4x")
  mask = masks.load_mask(mask_path_for(root, "4x"), (240, 240))
  sources = {
    "h5 in memory": ReferenceSource(paths, "4x", mask),
    "h5 slice by slice": ReferenceSource(paths, "4x", mask, max_memory_bytes=0),
  }
  sources["tfds array_record"] = tfds_builder.load_source(root, "train", "4x", mask=mask)

  print(
    f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; "
    f"batch {args.batch_size}, 240×240, {args.threads} reader threads, {args.batches} batches"
  )
  rates = {}
  for source in sources.values():  # warm up: imports, thread pools, file caches
    next(iter(train_batches(source, args.batch_size, seed=0, epoch=0)))
  for name, source in sources.items():
    rates[name] = pipeline_rate(source, args.batch_size, args.batches, args.threads)
    print(f"  pipeline [{name:18s}] {rates[name]:8.1f} slices/s")
  batch = next(iter(train_batches(sources["h5 in memory"], args.batch_size, seed=0, epoch=0)))
  step_s, compile_s = teacher_rate(batch, args.reps)
  need = args.batch_size / step_s
  print(
    f"  teacher train step (jit, CPU): median {step_s * 1e3:.0f} ms over {args.reps} reps "
    f"(compile {compile_s:.1f} s) -> consumes {need:.1f} slices/s"
  )
  for name, rate in rates.items():
    print(f"  {name}: {rate / need:.0f}x faster than the teacher step needs")


if __name__ == "__main__":
  main()
