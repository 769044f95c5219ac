"""Side-by-side speed of kdmri_jax and the PyTorch reference: inference and a full training step.

    python -m kdmri_jax.benchmark --models teacher student --shapes 240x240 640x368 --batch 1 \
        --modes inference train --precision float32 bfloat16 --repeats 5 --json speed.json

For each (model, mode, shape, batch) every available implementation is built with the same weights
(random init through JAX, converted with `kdmri_jax.torch_reference.jax_to_torch_state_dict`),
compiled and warmed up (the first call's time is reported as `compile_s`), then timed round-robin:
repetition r runs each implementation once before repetition r+1 starts, so load from other
processes falls on all of them alike. Reported: the median over repetitions.

Implementations: `jax_jit` (the jitted inference function / train step), `jax_export` (the
deserialized `jax.export` artifact), `onnxruntime` (the ONNX graph of `kdmri_jax.onnx_export`,
inference only), `torch_eager` (the reference as written, NCHW, `torch.inference_mode`; on a GPU
with `cudnn.benchmark` on, as PyTorch advises for fixed shapes), `torch_eager_cl` (the same in
channels_last memory format, oneDNN's fast CPU layout) and `torch_compile` (inductor; "unavailable:
reason" if it fails). A training step is forward, L1 loss to the target, backward and an Adam update
(lr 1e-3): for JAX the project's own step (`train.make_train_step` on the `student`/`teacher`
objective and `train.make_optimizer`, as training runs it), for PyTorch `torch.optim.Adam`. Without
torch (the optional `torch` extra), the torch rows report "unavailable" and why; the rest run as
usual.

GFLOP/s use the analytic convolution count, 2·H·W·Cin·Cout·9 per conv and image (×3 for a training
step: forward, input gradient, weight gradient); the DFTs are not counted. `% peak` relates them to
the machine's measured convolution peak: the best GFLOP/s of one 32→32 conv3x3 + ReLU (256×256,
batch 1) over JAX, PyTorch (both layouts) and ONNX Runtime (32 images on a GPU) — a roofline for
this layer shape, not the datasheet peak. Peak device memory is reported on GPU (PyTorch's
allocator, JAX's `memory_stats`).

`--precision` (one or more; all timed in the same interleaved rounds) applies to every
implementation alike: `float32` is full fp32 (JAX `default_matmul_precision("highest")`, PyTorch's
`allow_tf32` flags off; XLA and cuDNN would otherwise use TF32 on Ampere/Hopper GPUs); `tf32` allows
TensorFloat-32 convolutions and products (NVIDIA GPUs only: skipped on CPU, where it would be
float32 again); `bfloat16` computes the convolutions in bf16 with float32 parameters and Adam state
(the Flax models with `dtype=bfloat16`, which run `model.apply`: the `inference.JaxOps` rewrites
are float32-only; PyTorch under `torch.autocast`; no ONNX graph). The PyTorch flags are restored
after every call. Each inference row reports `max_abs_diff_vs_fp32`, the max |difference| of its
output from the float32 JAX model's on the same batch (float32 rows: the rounding floor). The
roofline is measured in float32; `× torch_eager` compares with PyTorch eager at the same precision.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from kdmri_jax import convert, export as export_lib, inference, models, sharding, train
from kdmri_jax.atomic import write_text_atomic
from kdmri_jax.errors import require, require_writable_output, run_cli
from kdmri_jax.models import layout

IMPLS = ("jax_jit", "jax_export", "onnxruntime", "torch_eager", "torch_eager_cl", "torch_compile")
TRAIN_IMPLS = ("jax_jit", "torch_eager", "torch_eager_cl", "torch_compile")
MODES = ("inference", "train")
PRECISIONS = ("float32", "tf32", "bfloat16")
TF32_ONLY_GPU = "tf32 applies to NVIDIA GPUs only (on CPU it would time float32 again)"
LEARNING_RATE = 1e-3
# The training step's settings: L1 and Adam at the paper's rate (configs/default.py); the step decay
# (×0.1 every 40 epochs) does not change the rate within the timed steps.
TRAIN_SETTINGS = {
  "loss": "l1",
  "learning_rate": LEARNING_RATE,
  "lr_step_epochs": 40,
  "lr_gamma": 0.1,
}


# ----------------------------------------------------------------------------------------- counting


def conv_flops(model: Any, batch: int, height: int, width: int, mode: str = "inference") -> float:
  """Analytic conv FLOPs: Σ 2·H·W·Cin·Cout·9 per image; a training step counts 3× the forward."""
  taps = np.prod(layout.KERNEL_SIZE)
  forward = (
    sum(
      2.0 * height * width * conv.in_features * conv.out_features * taps
      for stack in layout.conv_stacks(model)
      for conv in stack
    )
    * batch
  )
  return forward * (3.0 if mode == "train" else 1.0)


def machine_line() -> str:
  """The CPU model and core count from lscpu (falls back to `platform`)."""
  try:
    info = dict(
      line.split(":", 1)
      for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=True
      ).stdout.splitlines()
      if ":" in line
    )
    info = {k.strip(): v.strip() for k, v in info.items()}
    cores = int(info.get("Core(s) per socket", 1)) * int(info.get("Socket(s)", 1))
    avx512 = ", AVX-512" if "avx512f" in info.get("Flags", "") else ""
    return f"{info.get('Model name', platform.processor())}, {cores} cores{avx512}"
  except (OSError, subprocess.CalledProcessError, ValueError):
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


# ------------------------------------------------------------------------------------------- inputs


def make_batch(
  model: Any, batch: int, height: int, width: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """A random batch in the kdmri_jax layout (zero-filled image, masked k-space, mask, target)."""
  inputs = export_lib.example_inputs(model, batch, height, width, seed)
  target = np.random.default_rng(seed + 1).random((batch, height, width), dtype=np.float32)
  if models.is_reconstruction(model):
    return {"input": inputs[0], "kspace": inputs[1], "mask": inputs[2], "target": target}
  return {"input": inputs[0], "target": target}


class Impl:
  """One implementation of one benchmark case: `run()` does one timed unit of work and waits for
  it."""

  def __init__(
    self, name: Any, run: Callable[[], Any], device: str, memory: Callable[[], int | None] = None
  ):
    self.name, self.run, self.device = name, run, device
    self.memory = memory or (lambda: None)


# ---------------------------------------------------------------------------------------- precision


@contextlib.contextmanager
def precision_scope(precision: str):
  """JAX's default matmul/conv precision and, once torch is loaded, PyTorch's TF32 flags for
  `precision`; restores the flags."""
  torch = sys.modules.get("torch")  # not loaded (or not installed): no flags to set
  tf32 = precision == "tf32"
  if torch is not None:
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
  try:
    with jax.default_matmul_precision("tensorfloat32" if tf32 else "highest"):
      yield
  finally:
    if torch is not None:
      torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _scoped(function: Callable[[], Any], precision: str) -> Callable[[], Any]:
  """`function` called inside `precision_scope(precision)` (about 2 µs per call)."""

  def call():
    with precision_scope(precision):
      return function()

  return call


def usable_precisions(requested: Sequence[str], device: str) -> tuple[list[str], list[str]]:
  """(the precisions to time on `device`, notes on those skipped): tf32 only on a GPU."""
  requested = list(dict.fromkeys(requested))
  if device == "gpu" or "tf32" not in requested:
    return requested, []
  return [p for p in requested if p != "tf32"], [f"tf32 skipped: {TF32_ONLY_GPU}."]


def max_abs_diff(output: Any, reference: np.ndarray) -> float:
  """Max |output − reference| for a JAX/NumPy array or a torch tensor of the same elements."""
  if hasattr(output, "detach"):  # torch: (B, 1, H, W), possibly bf16 or on the GPU
    output = output.detach().float().cpu().numpy()
  return export_lib.max_abs_error(np.reshape(output, reference.shape), reference)


# ---------------------------------------------------------------------------------------------- JAX


def _jax_inference(model, params, batch, kind: str, device) -> Callable[[], Any]:
  args = [jax.device_put(array, device) for array in inference.model_inputs(model, batch)]
  b, h, w = batch["input"].shape
  if kind == "jax_jit":
    function = jax.jit(inference.image_function(model, params))
  else:
    exported = export_lib.export_jax(model, params, b, h, w)
    function = jax.jit(jax.export.deserialize(bytearray(exported.serialize())).call)
  return lambda: function(*args).block_until_ready()


def jax_train_step(
  model_name: str, model: Any, params: Any, batch: dict, device
) -> Callable[[], Any]:
  """A function running the project's training step once on `batch` (and waiting for it):
  `train.make_train_step` on a one-device mesh, with the `teacher`/`student` stage's objective
  (L1 to the target) and `train.make_optimizer` (Adam); the state is donated, as in training."""
  config = ConfigDict({"train": TRAIN_SETTINGS, "sft": {"enabled": False}})  # the plain teacher
  stage = "teacher" if "teacher" in model_name else "student"
  objective = train.make_objective(stage, config, model)
  tx = train.make_optimizer(config.train, steps_per_epoch=1)
  mesh = sharding.make_mesh([device])
  step = train.make_train_step(objective, tx, mesh)
  # A copy: the donated state must not share buffers with the parameters other rows use.
  own_params = jax.tree.map(np.array, params)
  state = {"state": sharding.replicate(train.create_train_state(own_params, tx, seed=0), mesh)}
  data = sharding.global_batch(batch, mesh)

  def run():
    state["state"], metrics = step(state["state"], data)
    return metrics["loss"].block_until_ready()

  return run


def _jax_memory(device) -> Callable[[], int | None]:
  def peak():
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return None if not stats else stats.get("peak_bytes_in_use")

  return peak


# ------------------------------------------------------------------------------------------ PyTorch


class Unavailable(Exception):
  """An implementation this machine cannot run; the message says why (its row's status)."""


def optional_torch() -> Any:
  """The torch module, or None where it is not installed (the optional `torch` extra)."""
  try:
    import torch
  except ImportError:
    return None
  return torch


def _require_torch() -> Any:
  torch = optional_torch()
  if torch is None:
    raise Unavailable(f"torch is not installed (pip install '.[torch]', i.e. {convert.TORCH_PIN})")
  return torch


def _torch_setup(model_name: str, params: Any, batch: dict, device: str, channels_last: bool):
  torch = _require_torch()
  from kdmri_jax import torch_reference

  net = torch_reference.build(model_name)
  # Writable NumPy copies: torch.from_numpy warns on JAX's read-only buffers.
  params = jax.tree.map(np.array, params)
  net.load_state_dict(torch_reference.jax_to_torch_state_dict(model_name, params))
  net = net.to(device)
  image = torch.from_numpy(batch["input"]).unsqueeze(1).to(device)
  if channels_last:
    net = net.to(memory_format=torch.channels_last)
    image = image.contiguous(memory_format=torch.channels_last)
  args = [image]
  if torch_reference.is_reconstruction(model_name):
    args += [
      torch.from_numpy(batch["kspace"]).to(device),
      torch.from_numpy(batch["mask"]).to(device),
    ]
  target = torch.from_numpy(batch["target"]).unsqueeze(1).to(device)
  return torch, net, args, target


def _torch_sync(torch, device: str) -> None:
  if device == "cuda":
    torch.cuda.synchronize()


def _autocast(torch, device: str, precision: str):
  """bf16 autocast for `bfloat16` (float32 parameters and optimizer state), else a no-op."""
  return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _torch_inference(
  model_name, params, batch, device, precision, channels_last=False, compiled=False
):
  torch, net, args, _ = _torch_setup(model_name, params, batch, device, channels_last)
  net.eval()
  forward = torch.compile(net, dynamic=False) if compiled else net

  def run():
    with torch.inference_mode(), _autocast(torch, device, precision):
      out = forward(*args)[0]
    _torch_sync(torch, device)
    return out

  return run


def _torch_train(model_name, params, batch, device, precision, channels_last=False, compiled=False):
  torch, net, args, target = _torch_setup(model_name, params, batch, device, channels_last)
  net.train()
  forward = torch.compile(net, dynamic=False) if compiled else net
  optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

  def run():
    optimizer.zero_grad(set_to_none=True)
    with _autocast(torch, device, precision):
      loss = torch.nn.functional.l1_loss(forward(*args)[0], target)
    loss.backward()
    optimizer.step()
    _torch_sync(torch, device)
    return loss

  return run


def _torch_memory(device: str) -> Callable[[], int | None]:
  def peak():
    import torch

    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else None

  return peak


# --------------------------------------------------------------------------------------------- ONNX


def _onnx_inference(model, params, batch, threads: int, spin: bool) -> Callable[[], Any]:
  from kdmri_jax import onnx_export

  b, h, w = batch["input"].shape
  session = onnx_export.session(onnx_export.build_onnx(model, params, b, h, w), threads, spin=spin)
  feed = onnx_export.onnx_inputs(model, batch["input"], batch.get("kspace"), batch.get("mask"))
  return lambda: session.run(None, feed)[0]


# -------------------------------------------------------------------------------------------- cases


def build_impl(
  name: str,
  mode: str,
  model_name: str,
  model: Any,
  params: Any,
  batch: dict,
  device: str,
  ort_threads: int,
  spin: bool = True,
  precision: str = "float32",
) -> Impl:
  """The implementation `name` of one case at `precision`; raises if it cannot be built on this
  machine.

  Building (tracing, export) and every call of `run` happen inside `precision_scope(precision)`.
  """
  with precision_scope(precision):
    impl = _build_impl(
      name, mode, model_name, model, params, batch, device, ort_threads, spin, precision
    )
  impl.run = _scoped(impl.run, precision)
  return impl


def _build_impl(
  name, mode, model_name, model, params, batch, device, ort_threads, spin, precision
) -> Impl:
  jax_device = jax.devices("gpu")[0] if device == "gpu" else jax.devices("cpu")[0]
  torch_device = "cuda" if device == "gpu" else "cpu"
  if name in ("jax_jit", "jax_export"):
    if precision == "bfloat16":
      model = model.clone(dtype=jnp.bfloat16)  # bf16 compute, float32 parameters
    run = (
      _jax_inference(model, params, batch, name, jax_device)
      if mode == "inference"
      else jax_train_step(model_name, model, params, batch, jax_device)
    )
    return Impl(name, run, device, _jax_memory(jax_device))
  if name == "onnxruntime":
    require(device == "cpu", "onnxruntime is benchmarked on CPU only.")
    if precision == "bfloat16":
      raise NotImplementedError("no bfloat16 ONNX graph (onnx_export builds float32 only).")
    return Impl(name, _onnx_inference(model, params, batch, ort_threads, spin), device)
  if name.startswith("torch"):
    builder = _torch_inference if mode == "inference" else _torch_train
    run = builder(
      model_name,
      params,
      batch,
      torch_device,
      precision,
      channels_last=name == "torch_eager_cl",
      compiled=name == "torch_compile",
    )
    return Impl(name, run, device, _torch_memory(torch_device))
  raise ValueError(f"unknown implementation {name!r}")


def applicable(name: str, mode: str) -> str | None:
  """None if `name` can run `mode`, else the reason it is skipped."""
  if mode == "train" and name not in TRAIN_IMPLS:
    return "inference only"
  return None


def _reason(error: Exception) -> str:
  first_line = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
  return first_line if isinstance(error, Unavailable) else f"{type(error).__name__}: {first_line}"


def time_case(impls: list[Impl], repeats: int, warmup: int) -> dict[str, dict[str, Any]]:
  """Compile (first call), warm up, then time `repeats` interleaved rounds; per-impl stats."""
  results: dict[str, dict[str, Any]] = {}
  live = []
  for impl in impls:
    try:
      start = time.perf_counter()
      impl.run()
      compile_s = time.perf_counter() - start
      for _ in range(warmup):
        impl.run()
      results[impl.name] = {"compile_s": compile_s, "times": [], "status": "ok"}
      live.append(impl)
    except Exception as error:  # torch.compile and friends fail in many ways; report, do not crash
      results[impl.name] = {"status": f"unavailable: {_reason(error)}"}
  for _ in range(repeats):
    for impl in live:  # round-robin: each repetition runs every implementation once
      start = time.perf_counter()
      impl.run()
      results[impl.name]["times"].append(time.perf_counter() - start)
  for impl in live:
    # Process-wide peaks (PyTorch's allocator, JAX's memory_stats): an upper bound per
    # implementation.
    results[impl.name]["peak_memory_bytes"] = impl.memory()
  return results


def measure_peak(
  device: str, repeats: int, ort_threads: int, spin: bool = True
) -> dict[str, float]:
  """GFLOP/s of one 32→32 conv3x3 + ReLU at 256×256 per implementation; the best is the machine
  peak."""
  size, channels = 256, 32
  images = 32 if device == "gpu" else 1  # one 256×256 conv cannot fill a GPU
  rng = np.random.default_rng(0)
  x = rng.random((images, size, size, channels), dtype=np.float32)
  kernel = rng.standard_normal((3, 3, channels, channels), dtype=np.float32) * 0.1
  bias = np.zeros(channels, np.float32)
  flops = 2.0 * size * size * channels * channels * 9 * images
  jax_device = jax.devices("gpu")[0] if device == "gpu" else jax.devices("cpu")[0]

  xj, kj = jax.device_put(x, jax_device), jax.device_put(kernel, jax_device)
  conv = jax.jit(
    lambda x, k: jax.nn.relu(
      jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )
  )
  runs = {"jax_jit": lambda: conv(xj, kj).block_until_ready()}
  runs.update(_torch_conv_runs(x, kernel, bias, "cuda" if device == "gpu" else "cpu"))
  if device == "cpu":
    runs["onnxruntime"] = _onnx_conv(kernel, bias, size, channels, ort_threads, spin)
  impls = [Impl(name, run, device) for name, run in runs.items()]
  stats = time_case(impls, repeats, warmup=2)
  return {
    name: flops / statistics.median(s["times"]) / 1e9
    for name, s in stats.items()
    if s["status"] == "ok"
  }


def _torch_conv_runs(
  x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, device: str
) -> dict[str, Callable[[], Any]]:
  """The roofline conv in PyTorch, NCHW and channels_last; none where torch is not installed."""
  torch = optional_torch()
  if torch is None:
    return {}
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
  wt = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).to(device)
  bt = torch.from_numpy(bias).to(device)

  def torch_conv(x, w):
    def run():
      with torch.inference_mode():
        out = torch.relu(torch.nn.functional.conv2d(x, w, bt, padding=1))
      _torch_sync(torch, device)
      return out

    return run

  return {
    "torch_eager": torch_conv(xt, wt),
    "torch_eager_cl": torch_conv(
      xt.contiguous(memory_format=torch.channels_last),
      wt.contiguous(memory_format=torch.channels_last),
    ),
  }


def _onnx_conv(kernel, bias, size, channels, threads, spin):
  from onnx import TensorProto, helper, numpy_helper

  from kdmri_jax import onnx_export

  nodes = [
    helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["y"], ["z"]),
  ]
  shape = [1, channels, size, size]
  graph = helper.make_graph(
    nodes,
    "conv",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
    [helper.make_tensor_value_info("z", TensorProto.FLOAT, shape)],
    [
      numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).copy(), "w"),
      numpy_helper.from_array(bias, "b"),
    ],
  )
  proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_export.OPSET)])
  proto.ir_version = min(proto.ir_version, 9)
  session = onnx_export.session(proto, threads, spin=spin)
  x = np.random.default_rng(0).random(shape, dtype=np.float32)
  return lambda: session.run(None, {"x": x})[0]


# ------------------------------------------------------------------------------------------- report


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Student/teacher speed-up (teacher ms / student ms) per implementation, precision, mode, shape,
  batch."""
  by_key = {
    (r["model"], r["mode"], r["impl"], r["precision"], r["batch"], r["height"], r["width"]): r
    for r in rows
    if r.get("median_ms")
  }
  out = []
  for (model, mode, impl, precision, b, h, w), row in by_key.items():
    if model != "teacher":
      continue
    student = by_key.get(("student", mode, impl, precision, b, h, w))
    if student:
      out.append(
        {
          "mode": mode,
          "impl": impl,
          "precision": precision,
          "batch": b,
          "height": h,
          "width": w,
          "teacher_ms": row["median_ms"],
          "student_ms": student["median_ms"],
          "student_speedup": row["median_ms"] / student["median_ms"],
        }
      )
  return out


def markdown(
  rows: list[dict[str, Any]],
  speedups: list[dict[str, Any]],
  peak: dict[str, float],
  notes: Sequence[str] = (),
) -> str:
  lines = [
    "| model | mode | H×W | B | impl | precision | median ms | GFLOP/s | % peak | compile s | × "
    "torch_eager | max abs diff vs fp32 |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  eager = {
    _case(r): r["median_ms"] for r in rows if r["impl"] == "torch_eager" and r.get("median_ms")
  }
  for r in rows:
    case = (
      f"| {r['model']} | {r['mode']} | {r['height']}×{r['width']} "
      f"| {r['batch']} | {r['impl']} | {r['precision']} |"
    )
    if not r.get("median_ms"):
      lines.append(f"{case} {r['status']} | | | | | |")
      continue
    base = eager.get(_case(r))
    ratio = f"{base / r['median_ms']:.2f}" if base else ""
    lines.append(
      f"{case} {r['median_ms']:.1f} | {r['gflops_per_s']:.1f} | {_fmt(r['pct_of_peak'], '.0f')} | "
      f"{r['compile_s']:.2f} | {ratio} | {_fmt(r.get('max_abs_diff_vs_fp32'), '.1e')} |"
    )
  if speedups:
    lines += [
      "",
      "| mode | H×W | B | impl | precision | teacher ms | student ms | student speed-up |",
      "|---|---|---|---|---|---|---|---|",
    ]
    for s in speedups:
      lines.append(
        f"| {s['mode']} | {s['height']}×{s['width']} | {s['batch']} "
        f"| {s['impl']} | {s['precision']} | {s['teacher_ms']:.1f} "
        f"| {s['student_ms']:.1f} | {s['student_speedup']:.2f} |"
      )
  if peak:
    best = max(peak, key=peak.get)
    lines += [
      "",
      "Roofline (32→32 conv3x3 + ReLU, 256×256, float32): "
      + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
      + f" GFLOP/s; peak = {peak[best]:.1f} ({best}).",
    ]
  if notes:
    lines += ["", *notes]
  return "\n".join(lines)


def _case(row: dict[str, Any]) -> tuple:
  """The key of the PyTorch eager row a row is compared with: same model, mode, precision, batch,
  shape."""
  return row["model"], row["mode"], row["precision"], row["batch"], row["height"], row["width"]


def _fmt(value: float | None, spec: str) -> str:
  return "" if value is None else format(value, spec)


# ---------------------------------------------------------------------------------------------- CLI


def parse_shape(text: str) -> tuple[int, int]:
  try:
    height, width = (int(v) for v in text.lower().split("x"))
  except ValueError:
    height = width = 0
  require(
    height > 0 and width > 0,
    f"--shapes entry {text!r} is not HxW with positive sizes, e.g. 240x240.",
  )
  return height, width


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m kdmri_jax.benchmark", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--models", nargs="+", default=["teacher", "student"])
  parser.add_argument("--shapes", nargs="+", default=["240x240", "640x368"])
  parser.add_argument("--batch", nargs="+", type=int, default=[1])
  parser.add_argument("--modes", nargs="+", default=list(MODES))
  parser.add_argument("--impls", nargs="+", default=list(IMPLS))
  parser.add_argument(
    "--precision",
    nargs="+",
    default=["float32"],
    help=f"one or more of {', '.join(PRECISIONS)} (tf32: NVIDIA GPUs only), timed side by side",
  )
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
    "--warmup", type=int, default=1, help="untimed calls after the first (compile) call"
  )
  parser.add_argument(
    "--device",
    choices=("auto", "cpu", "gpu"),
    default="auto",
    help="auto: the GPU when JAX sees one, else the CPU",
  )
  parser.add_argument(
    "--ort-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: per core)"
  )
  parser.add_argument(
    "--busy-wait",
    action="store_true",
    help="keep OpenMP/ONNX Runtime busy-waiting worker threads (their defaults; best on a "
    "dedicated machine). Without it the benchmark sets OMP_WAIT_POLICY=PASSIVE and turns "
    "ORT spinning off, which is 2-4x faster for both on a machine shared with other jobs",
  )
  parser.add_argument("--no-peak", action="store_true", help="skip the conv roofline measurement")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="write the rows, speed-ups and machine facts here")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
  return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs every case of `args`; returns the JSON report (also printed as markdown)."""
  device = args.device
  if device == "auto":
    device = "gpu" if any(d.platform == "gpu" for d in jax.devices()) else "cpu"
  torch = optional_torch()  # loaded first, so that every precision scope sets its flags
  if device == "gpu" and torch is not None:
    # PyTorch's advice for fixed input shapes: cuDNN times its algorithms and keeps the fastest (for
    # the roofline and every PyTorch case alike).
    torch.backends.cudnn.benchmark = True
  precisions, notes = usable_precisions(args.precision, device)
  require(precisions, f"--precision: {TF32_ONLY_GPU}; choose float32 or bfloat16 on the CPU.")
  for note in notes:
    print(note, file=sys.stderr)
  load_before = os.getloadavg()
  with precision_scope("float32"):
    peak = (
      {}
      if args.no_peak
      else measure_peak(device, max(args.repeats, 3), args.ort_threads, args.busy_wait)
    )
  built = {}
  for model_name in args.models:
    model = models.build_model(model_name)
    built[model_name] = (model, models.init_params(model, jax.random.PRNGKey(args.seed), 8, 8))
  rows = []
  for mode in args.modes:
    for height, width in (parse_shape(s) for s in args.shapes):
      for batch_size in args.batch:
        shape = (height, width, batch_size)
        rows += _time_cases(args, device, built, precisions, mode, shape, peak)
  report = _report(args, device, torch, precisions, notes, peak, built, rows, load_before)
  print(markdown(rows, report["student_speedups"], peak, notes))
  print(
    f"\n{report['machine']}; {report['date']}; 1-min load average "
    f"{report['load_average_1m']['start']} at start, {report['load_average_1m']['end']} at end."
  )
  return report


def _time_cases(
  args: argparse.Namespace,
  device: str,
  built: dict,
  precisions: Sequence[str],
  mode: str,
  shape: tuple[int, int, int],
  peak: dict[str, float],
) -> list[dict[str, Any]]:
  """The rows of one (mode, (H, W, batch)). All models and precisions are timed in the same
  interleaved rounds, so the student/teacher and bf16/fp32 ratios compare calls made under the same
  machine load."""
  height, width, batch_size = shape
  batches = {
    name: make_batch(model, batch_size, height, width, args.seed)
    for name, (model, _) in built.items()
  }
  cases = [
    (m, p, n) for m in built for p in precisions for n in args.impls if not applicable(n, mode)
  ]
  impls, stats = [], {}
  for case in cases:
    model_name, precision, name = case
    model, params = built[model_name]
    try:
      impl = build_impl(
        name,
        mode,
        model_name,
        model,
        params,
        batches[model_name],
        device,
        args.ort_threads,
        args.busy_wait,
        precision,
      )
      impl.name = case
      impls.append(impl)
    except Exception as error:
      stats[case] = {"status": f"unavailable: {_reason(error)}"}
  stats.update(time_case(impls, args.repeats, args.warmup))
  if mode == "inference":
    _add_diffs(stats, impls, built, batches)
  best_peak = max(peak.values()) if peak else None
  return [_row(case, stats[case], mode, device, shape, built, best_peak) for case in cases]


def _row(
  case: tuple[str, str, str],
  s: dict[str, Any],
  mode: str,
  device: str,
  shape: tuple[int, int, int],
  built: dict,
  best_peak: float | None,
) -> dict[str, Any]:
  """One JSON row from an implementation's timing stats `s` (also printed as a progress line)."""
  model_name, precision, name = case
  height, width, batch_size = shape
  model, params = built[model_name]
  flops = conv_flops(model, batch_size, height, width, mode)
  row = {
    "model": model_name,
    "mode": mode,
    "impl": name,
    "precision": precision,
    "device": device,
    "batch": batch_size,
    "height": height,
    "width": width,
    "median_ms": None,
    "gflops_per_s": None,
    "status": s["status"],
    "params": models.count_params(params),
    "gflop": flops / 1e9,
    "max_abs_diff_vs_fp32": s.get("max_abs_diff_vs_fp32"),
  }
  if s["status"] == "ok":
    median = statistics.median(s["times"])
    row.update(
      median_ms=median * 1e3,
      gflops_per_s=flops / median / 1e9,
      min_ms=min(s["times"]) * 1e3,
      compile_s=s["compile_s"],
      repeats=len(s["times"]),
      peak_memory_bytes=s.get("peak_memory_bytes"),
    )
    row["pct_of_peak"] = 100.0 * row["gflops_per_s"] / best_peak if best_peak else None
  status = "" if s["status"] == "ok" else s["status"]
  print(
    f"{model_name} {mode} {height}x{width} b{batch_size} {name} {precision}: "
    f"{row['median_ms'] and round(row['median_ms'], 1)} ms {status}",
    file=sys.stderr,
    flush=True,
  )
  return row


def _report(
  args: argparse.Namespace,
  device: str,
  torch: Any,
  precisions: Sequence[str],
  notes: Sequence[str],
  peak: dict[str, float],
  built: dict,
  rows: list[dict[str, Any]],
  load_before: tuple[float, ...],
) -> dict[str, Any]:
  """The JSON report: the machine, versions and threads (torch's None without torch), the rows."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return {
    "machine": machine_line() if device == "cpu" else str(jax.devices()[0].device_kind),
    "device": device,
    "date": now.isoformat(timespec="seconds"),
    "command": "python -m kdmri_jax.benchmark " + " ".join(getattr(args, "argv", [])),
    "versions": {
      "jax": jax.__version__,
      "torch": None if torch is None else torch.__version__,
      "onnxruntime": _ort_version(),
    },
    "threads": {
      "torch": None if torch is None else torch.get_num_threads(),
      "onnxruntime": args.ort_threads or "per core",
      "busy_wait": args.busy_wait,
      "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    },
    "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
    "precisions": list(precisions),
    "notes": list(notes),
    "peak_gflops_per_s": peak,
    "params": {name: models.count_params(params) for name, (_, params) in built.items()},
    "rows": rows,
    "student_speedups": summarize(rows),
  }


def _add_diffs(stats: dict, impls: list[Impl], built: dict, batches: dict) -> None:
  """Adds `max_abs_diff_vs_fp32` to the stats of every timed inference impl (one extra, untimed
  call)."""
  references = {}
  for model_name, (model, params) in built.items():
    with precision_scope("float32"):
      references[model_name] = export_lib.reference_output(
        model, params, inference.model_inputs(model, batches[model_name])
      )
  for impl in impls:
    if stats[impl.name]["status"] == "ok":
      stats[impl.name]["max_abs_diff_vs_fp32"] = max_abs_diff(impl.run(), references[impl.name[0]])


def _ort_version() -> str | None:
  try:
    import onnxruntime

    return onnxruntime.__version__
  except ImportError:
    return None


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  args.argv = list(argv)
  for name in args.models:
    require(name in models.PRESETS, f"--models {name!r} is not one of {sorted(models.PRESETS)}.")
  for name in args.impls:
    require(name in IMPLS, f"--impls {name!r} is not one of {list(IMPLS)}.")
  for mode in args.modes:
    require(mode in MODES, f"--modes {mode!r} is not one of {list(MODES)}.")
  for precision in args.precision:
    require(precision in PRECISIONS, f"--precision {precision!r} is not one of {list(PRECISIONS)}.")
  require(
    args.repeats >= 1 and all(b >= 1 for b in args.batch), "--repeats and --batch must be >= 1."
  )
  for shape in args.shapes:
    parse_shape(shape)
  if args.json:
    require_writable_output(args.json, "--json", "file")
    require(
      args.overwrite or not os.path.exists(args.json),
      f"output {args.json} already exists; choose another --json or pass --overwrite.",
    )
  if args.device == "gpu":
    platforms = sorted({d.platform for d in jax.devices()})
    require(
      "gpu" in platforms,
      f"--device gpu: JAX sees no GPU here (platforms: "
      f"{', '.join(platforms)}); install jax[cuda] on a GPU machine or "
      f"pass --device cpu.",
    )
  if not args.busy_wait:
    # Must precede the first `import torch` (OpenMP reads it once); a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  report = run(args)
  if args.json:
    write_text_atomic(args.json, json.dumps(report, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
