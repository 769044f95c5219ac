"""Export a trained model's inference function: a `jax.export` artifact (StableHLO) or an ONNX graph.

    python -m kdmri_jax.export --checkpoint CKPT --model teacher --shape 240 240 --batch 1 --out teacher.jax
    python -m kdmri_jax.export --checkpoint CKPT --model student --shape 240 240 --format onnx --out student.onnx

The exported function is the reconstruction only (feature maps dropped), with the weights baked in:
  DC-CNN  (image (B, H, W) f32, kspace (B, H, W) c64, mask (B, H, W) f32) -> image (B, H, W) f32
  VDSR    (image (B, H, W) f32) -> image (B, H, W) f32
A `.jax` file loads without the model code: `jax.export.deserialize(open(f, "rb").read()).call(*args)`.
The ONNX graph takes k-space as (B, H, W, 2) real/imaginary (see `kdmri_jax.onnx_export`). Every export is
run once on random inputs and compared with the jitted model (max |difference| <= 1e-4) before it is written,
to a temporary file renamed into place; an existing output is never replaced without `--overwrite`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kdmri_jax import checkpoints, fft, models
from kdmri_jax.errors import InputError, require, run_cli

TOLERANCE = 1e-4
FORMATS = ("jax", "onnx")


def _taps(x: jnp.ndarray) -> list[jnp.ndarray]:
  """The 9 zero-padded 3×3 neighbours of every pixel of x (B, H, W, ...), row-major tap order."""
  height, width = x.shape[1], x.shape[2]
  pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 3)
  padded = jnp.pad(x, pad)
  return [padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)]


def conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """The models' conv3x3 (zero padding 1, bias; NHWC, HWIO), faster on XLA:CPU for 1 in or 1 out channel.

  XLA's convolution runs the 1→F and F→1 layers of the DC-CNN at a few GFLOP/s (as slow as a 32→32
  layer for 1/32 of the work). 1→F is a fused multiply-add over the 9 shifted copies of the image; F→1
  contracts the channels first (one (H·W, F)×(F, 9) product) and then sums the 9 shifted tap planes.
  Same arithmetic as the convolution up to float32 rounding order.
  """
  cin, cout = kernel.shape[2], kernel.shape[3]
  if cin == 1:
    taps = _taps(x[..., 0])
    out = bias + sum(tap[..., None] * kernel[i // 3, i % 3, 0] for i, tap in enumerate(taps))
    return out
  if cout == 1:
    per_tap = jnp.dot(x, kernel[..., 0].reshape(9, cin).T)  # (B, H, W, 9)
    shifted = _taps(per_tap)
    return (bias + sum(plane[..., i] for i, plane in enumerate(shifted)))[..., None]
  out = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out + bias


def conv_stack(layers: Sequence[Any], x: jnp.ndarray) -> jnp.ndarray:
  """conv3x3 through `layers` ({'kernel', 'bias'} dicts), ReLU after all but the last."""
  for index, layer in enumerate(layers):
    x = conv3x3(x, layer["kernel"], layer["bias"])
    if index < len(layers) - 1:
      x = jax.nn.relu(x)
  return x


def fast_forward(model: Any, params: Any, image: jnp.ndarray, kspace: jnp.ndarray | None = None,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """The model's reconstruction through `conv3x3` and a split data consistency (features dropped).

  DC is linear in x: Re(IFFT2(m·k0 + (1−m)·FFT2(x))) = x0 + Re(IFFT2((1−m)·FFT2(x))) with
  x0 = Re(IFFT2(m·k0)) computed once per call instead of once per cascade. Equal to `model.apply` to float32
  rounding; covers the paper's DC-CNN (real images, hard DC, no residual) and VDSR.
  """
  x = image[..., None].astype(jnp.float32)
  if not models.is_reconstruction(model):
    layers = [params[f"conv_{j}"] for j in range(model.num_layers)]
    return (x + conv_stack(layers, x))[..., 0]
  sampled = mask > 0
  measured = fft.ifft2(jnp.where(sampled, kspace, 0)).real
  for c in range(model.num_cascades):
    layers = [params[f"cascade_{c}"][f"conv_{j}"] for j in range(model.num_convs)]
    out = conv_stack(layers, x)[..., 0]
    x = (measured + fft.ifft2(jnp.where(sampled, 0, fft.fft2(out))).real)[..., None]
  return x[..., 0]


def has_fast_path(model: Any) -> bool:
  """True when `fast_forward` computes exactly what the model does."""
  if not models.is_reconstruction(model):
    return model.dtype == jnp.float32
  return not (model.complex_images or model.residual or model.noise_lambda is not None or model.learn_lambda
              or model.dtype != jnp.float32)


def inference_function(model: Any, params: Any, fast: bool = True) -> Callable[..., jnp.ndarray]:
  """The forward pass returning only the image, with `params` closed over (baked in on export).

  `fast` uses `fast_forward` where it applies; otherwise `model.apply` with the features dropped.
  """
  if fast and has_fast_path(model):
    return lambda *inputs: fast_forward(model, params, *inputs)
  if not models.is_reconstruction(model):
    return lambda image: model.apply({"params": params}, image)[0]
  return lambda image, kspace, mask: model.apply({"params": params}, image, kspace, mask)[0]


def example_inputs(model: Any, batch: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, ...]:
  """Random inputs of the exported signature: a DC-CNN gets image, its k-space (masked) and a 0/1 mask."""
  rng = np.random.default_rng(seed)
  image = rng.random((batch, height, width), dtype=np.float32)
  if not models.is_reconstruction(model):
    return (image,)
  mask = (rng.random((batch, height, width)) < 0.4).astype(np.float32)
  kspace = (np.fft.fft2(image, norm="ortho") * mask).astype(np.complex64)
  zero_filled = np.fft.ifft2(kspace, norm="ortho").real.astype(np.float32)
  return zero_filled, kspace, mask


def input_specs(model: Any, batch: int, height: int, width: int) -> tuple[jax.ShapeDtypeStruct, ...]:
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
  function = jax.jit(inference_function(model, params))
  return jax.export.export(function, platforms=platforms)(*input_specs(model, batch, height, width))


def load_jax(path: str | os.PathLike) -> jax.export.Exported:
  """Deserializes a `.jax` artifact; call it with `.call(*inputs)`."""
  with open(path, "rb") as file:
    return jax.export.deserialize(bytearray(file.read()))


def reference_output(model: Any, params: Any, inputs: Sequence[np.ndarray]) -> np.ndarray:
  """The jitted model's reconstruction (features dropped), the ground truth of every export check."""
  return np.asarray(jax.jit(inference_function(model, params, fast=False))(*inputs))


def max_abs_error(output: Any, reference: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(output, np.float32) - reference)))


def _atomic_write(path: str, payload: bytes, overwrite: bool) -> None:
  require(overwrite or not os.path.exists(path),
          f"output {path} already exists; choose another --out or pass --overwrite.")
  directory = os.path.dirname(os.path.abspath(path))
  require(os.path.isdir(directory), f"output folder {directory} does not exist; create it first.")
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as file:
      file.write(payload)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def export(model: Any, params: Any, batch: int, height: int, width: int, out: str,
           format: str = "jax", overwrite: bool = False) -> float:
  """Exports, verifies against the jitted model, writes `out`; returns the max |difference|."""
  require(format in FORMATS, f"--format {format!r} is not one of {FORMATS}.")
  require(overwrite or not os.path.exists(out),
          f"output {out} already exists; choose another --out or pass --overwrite.")
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
    raise RuntimeError(f"{format} export differs from the jitted model by {error:.2e} > {TOLERANCE:.0e}.")
  _atomic_write(out, payload, overwrite)
  return error


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m kdmri_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", required=True, help="kdmri_jax checkpoint directory")
  parser.add_argument("--model", required=True, choices=sorted(models.PRESETS),
                      help="the model the checkpoint must hold")
  parser.add_argument("--shape", type=int, nargs=2, required=True, metavar=("H", "W"))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--out", required=True, help="output file (.jax or .onnx)")
  parser.add_argument("--format", choices=FORMATS, default="jax")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  height, width = args.shape
  require(height > 0 and width > 0 and args.batch > 0,
          f"--shape {height} {width} and --batch {args.batch} must be positive.")
  require(args.overwrite or not os.path.exists(args.out),
          f"output {args.out} already exists; choose another --out or pass --overwrite.")
  model, params, _ = checkpoints.load_params(args.checkpoint, expected_model=args.model)
  try:
    error = export(model, params, args.batch, height, width, args.out, args.format, args.overwrite)
  except NotImplementedError as reason:
    raise InputError(f"--format {args.format} cannot export this checkpoint: {reason}") from None
  print(f"wrote {args.out} ({args.format}, {args.model}, batch {args.batch}, {height}x{width}); "
        f"max |export - jit| = {error:.2e}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
