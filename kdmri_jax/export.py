"""Export a trained model's inference function: a `jax.export` artifact (StableHLO) or an ONNX
graph.

    python -m kdmri_jax.export --checkpoint CKPT --model teacher --shape 240 240 --batch 1 \
        --out teacher.jax
    python -m kdmri_jax.export --checkpoint CKPT --model student --shape 240 240 --format onnx \
        --out student.onnx

The exported function is `kdmri_jax.inference.image_function`: the reconstruction only (feature maps
dropped), with the weights baked in:
  DC-CNN  (image (B, H, W) f32, kspace (B, H, W) c64, mask (B, H, W) f32) -> image (B, H, W) f32
  VDSR    (image (B, H, W) f32) -> image (B, H, W) f32
A `.jax` file loads without the model code: `jax.export.deserialize(open(f,
"rb").read()).call(*args)`. The ONNX graph takes k-space as (B, H, W, 2) real/imaginary (see
`kdmri_jax.onnx_export`). Every export is run once on random inputs and compared with the jitted
model (max |difference| <= 1e-4) before it is written, to a temporary file renamed into place; an
existing output is never replaced without `--overwrite`, except a damaged one (a .jax or .onnx file
that does not read back as an export), which is moved aside to `<out>.damaged-<unix time>` and
written again (`kdmri_jax.outputs.check_existing`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kdmri_jax import checkpoints, inference, models, outputs
from kdmri_jax.atomic import write_bytes_atomic
from kdmri_jax.errors import InputError, require, require_writable_output, run_cli

TOLERANCE = 1e-4
FORMATS = ("jax", "onnx")


def example_inputs(
  model: Any, batch: int, height: int, width: int, seed: int = 0
) -> tuple[np.ndarray, ...]:
  """Random inputs of the exported signature: a DC-CNN gets image, its k-space (masked) and a 0/1
  mask."""
  rng = np.random.default_rng(seed)
  image = rng.random((batch, height, width), dtype=np.float32)
  if not models.is_reconstruction(model):
    return (image,)
  mask = (rng.random((batch, height, width)) < 0.4).astype(np.float32)
  kspace = (np.fft.fft2(image, norm="ortho") * mask).astype(np.complex64)
  zero_filled = np.fft.ifft2(kspace, norm="ortho").real.astype(np.float32)
  return zero_filled, kspace, mask


def input_specs(
  model: Any, batch: int, height: int, width: int
) -> tuple[jax.ShapeDtypeStruct, ...]:
  shape = (batch, height, width)
  image = jax.ShapeDtypeStruct(shape, jnp.float32)
  if not models.is_reconstruction(model):
    return (image,)
  return image, jax.ShapeDtypeStruct(shape, jnp.complex64), jax.ShapeDtypeStruct(shape, jnp.float32)


def export_jax(model: Any, params: Any, batch: int, height: int, width: int) -> jax.export.Exported:
  """`jax.export` of the inference function for CPU (and CUDA when this jaxlib can lower to it)."""
  platforms = ["cpu"]
  if any(d.platform == "gpu" for d in jax.devices()):
    platforms.append("cuda")
  function = jax.jit(inference.image_function(model, params))
  return jax.export.export(function, platforms=platforms)(*input_specs(model, batch, height, width))


def load_jax(path: str | os.PathLike) -> jax.export.Exported:
  """Deserializes a `.jax` artifact; call it with `.call(*inputs)`."""
  with open(path, "rb") as file:
    return jax.export.deserialize(bytearray(file.read()))


def reference_output(model: Any, params: Any, inputs: Sequence[np.ndarray]) -> np.ndarray:
  """The jitted model's reconstruction (features dropped), the ground truth of every export
  check."""
  return np.asarray(jax.jit(inference.image_function(model, params, fast=False))(*inputs))


def max_abs_error(output: Any, reference: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(output, np.float32) - reference)))


def _atomic_write(path: str, payload: bytes, overwrite: bool) -> None:
  require(
    overwrite or not os.path.exists(path),
    f"output {path} already exists; choose another --out or pass --overwrite.",
  )
  directory = os.path.dirname(os.path.abspath(path))
  require(os.path.isdir(directory), f"output folder {directory} does not exist; create it first.")
  write_bytes_atomic(path, payload)


def export(
  model: Any,
  params: Any,
  batch: int,
  height: int,
  width: int,
  out: str,
  format: str = "jax",
  overwrite: bool = False,
) -> float:
  """Exports, verifies against the jitted model, writes `out`; returns the max |difference|."""
  require(format in FORMATS, f"--format {format!r} is not one of {FORMATS}.")
  require(
    overwrite or not os.path.exists(out),
    f"output {out} already exists; choose another --out or pass --overwrite.",
  )
  inputs = example_inputs(model, batch, height, width)
  reference = reference_output(model, params, inputs)
  if format == "jax":
    exported = export_jax(model, params, batch, height, width)
    payload = bytes(exported.serialize())
    error = max_abs_error(jax.export.deserialize(bytearray(payload)).call(*inputs), reference)
  else:
    from kdmri_jax import onnx_export

    proto = onnx_export.build_onnx(model, params, batch, height, width)
    payload = proto.SerializeToString()
    session = onnx_export.session(payload)
    output = session.run(None, onnx_export.onnx_inputs(model, *inputs))[0]
    error = max_abs_error(output, reference)
  if not error <= TOLERANCE:
    raise RuntimeError(
      f"{format} export differs from the jitted model by {error:.2e} > {TOLERANCE:.0e}."
    )
  _atomic_write(out, payload, overwrite)
  return error


def export_damage(path: str, format: str) -> str | None:  # noqa: A002
  """Why `path`, a file named like a `format` export (.jax / .onnx), does not read back as one; None
  when it does, or when it is named otherwise (not this command's file)."""
  if not os.path.isfile(path) or not path.lower().endswith(f".{format}"):
    return None
  if os.path.getsize(path) == 0:
    return "empty"
  try:
    if format == "jax":
      load_jax(path).mlir_module()  # the StableHLO module too, not only the header
    else:
      import onnx

      onnx.checker.check_model(onnx.load(path), full_check=True)
  except Exception as error:  # flatbuffers, MLIR and protobuf raise many types for a damaged file
    return f"{type(error).__name__} while reading it"
  return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m kdmri_jax.export", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--checkpoint", required=True, help="kdmri_jax checkpoint directory")
  parser.add_argument(
    "--model",
    required=True,
    choices=sorted(models.PRESETS),
    help="the model the checkpoint must hold",
  )
  parser.add_argument("--shape", type=int, nargs=2, required=True, metavar=("H", "W"))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--out", required=True, help="output file (.jax or .onnx)")
  parser.add_argument("--format", choices=FORMATS, default="jax")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  height, width = args.shape
  require(
    height > 0 and width > 0 and args.batch > 0,
    f"--shape {height} {width} and --batch {args.batch} must be positive.",
  )
  require_writable_output(args.out, "--out", "file")
  damage = functools.partial(export_damage, format=args.format)
  damaged = outputs.check_existing(args.out, "--out", damage, args.overwrite)
  model, params, _ = checkpoints.load_params(args.checkpoint, expected_model=args.model)
  if damaged is not None:  # the checkpoint loads: the damaged export makes way for a new one
    outputs.move_damaged_aside(args.out, damaged, print)
  try:
    error = export(model, params, args.batch, height, width, args.out, args.format, args.overwrite)
  except NotImplementedError as reason:
    raise InputError(f"--format {args.format} cannot export this checkpoint: {reason}") from None
  print(
    f"wrote {args.out} ({args.format}, {args.model}, batch {args.batch}, {height}x{width}); "
    f"max |export - jit| = {error:.2e}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
