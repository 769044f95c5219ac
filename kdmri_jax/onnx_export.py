"""ONNX graphs of the trained models for ONNX Runtime, with the Flax parameters baked in.

The graph is `kdmri_jax.models.structure.forward`, the models' one forward pass, run on ONNX ops
(`_OnnxOps`), so it has the model's layers in the model's order (`models.layout`). The convolutions
become `Conv` (+ `Relu`) nodes in NCHW with OIHW weights. Data consistency (DC),
x_dc = Re(IFFT2(m·k0 + (1−m)·FFT2(x))), is linear in x, so it splits into a term fixed by the
measurement, x0 = Re(IFFT2(m·k0)), computed once per call, plus x ↦ Re(IFFT2((1−m)·FFT2(x))) per
cascade. The orthonormal 2-D DFT is separable, FFT2(x) = F_H x F_W with symmetric
F_n[j, k] = exp(−2πi·jk/n)/√n, so each DFT is a few real matrix products with precomputed cos/sin
matrices: exact (no approximation beyond float32 rounding), and a GEMM is what ONNX Runtime runs
best on CPU.

Inputs of a DC-CNN graph: `image` (B, H, W) float32, `kspace` (B, H, W, 2) float32 real/imaginary
(ONNX Runtime has no complex tensors on CPU; see `onnx_inputs`), `mask` (B, H, W) float32 0/1
unshifted. A VDSR graph takes `image` only. The output is `reconstruction` (B, H, W).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kdmri_jax import inference, models
from kdmri_jax.models import layout, structure

OPSET = 17


def dft_matrix(n: int) -> tuple[np.ndarray, np.ndarray]:
  """(cos, −sin) parts of the orthonormal DFT matrix F_n[j, k] = exp(−2πi·jk/n)/√n, float64."""
  index = np.arange(n)
  # jk mod n keeps the angle small, so the float64 phases are exact to rounding even for n in the
  # 1000s.
  angle = 2.0 * np.pi * ((index[:, None] * index[None, :]) % n) / n
  scale = 1.0 / np.sqrt(n)
  return np.cos(angle) * scale, -np.sin(angle) * scale


class _Graph:
  """A small builder: unique node names, initializers, and shorthands for the ops the models
  need."""

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self._count = 0

  def name(self, prefix: str) -> str:
    self._count += 1
    return f"{prefix}_{self._count}"

  def const(self, array: np.ndarray, prefix: str = "c") -> str:
    name = self.name(prefix)
    # np.ascontiguousarray would turn a 0-d scalar into shape (1,); copy keeps the rank.
    self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
    return name

  def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs: Any) -> str:
    out = self.name(prefix or op_type.lower())
    self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
    return out

  def slice(self, x: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
    return self.op(
      "Slice",
      [
        x,
        self.const(np.array(starts, np.int64)),
        self.const(np.array(ends, np.int64)),
        self.const(np.array(axes, np.int64)),
      ],
    )


class _DFT:
  """Constants and subgraphs for the orthonormal 2-D DFT of (B, H, W) tensors as real matrix
  products."""

  def __init__(self, g: _Graph, height: int, width: int):
    self.g, self.h, self.w = g, height, width
    ar, ai = dft_matrix(height)
    br, bi = dft_matrix(width)
    f32 = np.float32
    self.right = g.const(np.concatenate([br, bi], 1).astype(f32), "dft_w")  # (W, 2W)
    self.left = g.const(np.concatenate([ar, ai], 0).astype(f32), "dft_h")  # (2H, H)
    self.left_inv = g.const(np.block([[ar, ai], [-ai, ar]]).astype(f32), "idft_h")  # (2H, 2H)
    self.br, self.bi = g.const(br.astype(f32), "idft_wr"), g.const(bi.astype(f32), "idft_wi")

  def forward(self, x: str) -> tuple[str, str]:
    """Real x (B, H, W) -> (Re, Im) of F_H x F_W."""
    g, h, w = self.g, self.h, self.w
    p = g.op("MatMul", [x, self.right])  # [x Br | x Bi]            (B, H, 2W)
    q = g.op("MatMul", [self.left, p])  # [[Ar P], [Ai P]]         (B, 2H, 2W)
    big = 1 << 30
    rr = g.slice(q, [0, 0], [h, w], [1, 2])
    ii = g.slice(q, [h, w], [big, big], [1, 2])
    ir = g.slice(q, [h, 0], [big, w], [1, 2])
    ri = g.slice(q, [0, w], [h, big], [1, 2])
    return g.op("Sub", [rr, ii]), g.op("Add", [ir, ri])

  def inverse_real(self, real: str, imag: str) -> str:
    """Re(conj(F_H) K conj(F_W)) for K = real + i·imag (B, H, W)."""
    g, h = self.g, self.h
    stacked = g.op("Concat", [real, imag], axis=1)  # (B, 2H, W)
    z = g.op("MatMul", [self.left_inv, stacked])  # [Zr; Zi]
    big = 1 << 30
    zr = g.slice(z, [0], [h], [1])
    zi = g.slice(z, [h], [big], [1])
    return g.op("Add", [g.op("MatMul", [zr, self.br]), g.op("MatMul", [zi, self.bi])])


class _OnnxOps:
  """`structure.forward`'s ops as ONNX nodes: values are tensor names, activations NCHW,
  convolutions `Conv` with the OIHW weights of `params`, data consistency as real matrix products
  (`_DFT`)."""

  def __init__(self, g: _Graph, params: Any, height: int, width: int):
    self.g, self.params, self.height, self.width = g, params, height, width
    self.axis = g.const(np.array([1], np.int64))

  def channels(self, image: str) -> str:
    return self.g.op("Unsqueeze", [image, self.axis])

  def image(self, x: str) -> str:
    return self.g.op("Squeeze", [x, self.axis])

  def conv(self, conv: layout.Conv, x: str) -> str:
    """A `Conv` node (zero padding 1, bias) with the weights of `conv`."""
    weights = layout.conv_params(self.params, conv)
    weight = np.asarray(weights["kernel"], np.float32).transpose(3, 2, 0, 1)  # HWIO -> OIHW
    bias = np.asarray(weights["bias"], np.float32)
    return self.g.op(
      "Conv",
      [x, self.g.const(weight, "w"), self.g.const(bias, "b")],
      "conv",
      kernel_shape=[3, 3],
      pads=[1, 1, 1, 1],
    )

  def relu(self, x: str) -> str:
    return self.g.op("Relu", [x])

  def add(self, x: str, y: str) -> str:
    return self.g.op("Add", [x, y])

  def data_consistency(self, kspace: str, mask: str):
    """x ↦ x0 + Re(IFFT2((1−m)·FFT2(x))), with x0 = Re(IFFT2(m·k0)) built once."""
    g, dft = self.g, _DFT(self.g, self.height, self.width)
    sampled = g.op(
      "Cast", [g.op("Greater", [mask, g.const(np.float32(0.0))])], to=TensorProto.FLOAT
    )
    unsampled = g.op("Sub", [g.const(np.float32(1.0)), sampled])
    k_real = g.op("Gather", [kspace, g.const(np.int64(0))], axis=3)
    k_imag = g.op("Gather", [kspace, g.const(np.int64(1))], axis=3)
    x0 = dft.inverse_real(g.op("Mul", [k_real, sampled]), g.op("Mul", [k_imag, sampled]))

    def consistency(x: str, cascade: int) -> str:
      real, imag = dft.forward(x)
      predicted = dft.inverse_real(g.op("Mul", [real, unsampled]), g.op("Mul", [imag, unsampled]))
      return g.op("Add", [x0, predicted])

    return consistency


def build_onnx(model: Any, params: Any, batch: int, height: int, width: int) -> onnx.ModelProto:
  """The inference graph of `model` (a `kdmri_jax.models` DCCNN or VDSR) with `params` baked in:
  `structure.forward` on `_OnnxOps`."""
  if not inference.plain_structure(model):
    raise NotImplementedError(
      "ONNX export covers the paper's DC-CNN (real images, hard DC, no residual)."
    )
  g = _Graph()
  shape = [batch, height, width]
  inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)]
  if models.is_reconstruction(model):
    inputs += [
      helper.make_tensor_value_info("kspace", TensorProto.FLOAT, shape + [2]),
      helper.make_tensor_value_info("mask", TensorProto.FLOAT, shape),
    ]
  ops = _OnnxOps(g, params, height, width)
  x, _ = structure.forward(ops, model, "image", "kspace", "mask")
  g.nodes.append(helper.make_node("Identity", [x], ["reconstruction"], name="output_node"))
  output_info = helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, shape)
  graph = helper.make_graph(
    g.nodes, type(model).__name__.lower(), inputs, [output_info], g.initializers
  )
  proto = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="kdmri_jax"
  )
  proto.ir_version = min(proto.ir_version, 9)  # readable by older onnxruntime releases too
  onnx.checker.check_model(proto)
  return proto


def onnx_inputs(
  model: Any, image: Any, kspace: Any = None, mask: Any = None
) -> dict[str, np.ndarray]:
  """The feed dict for `build_onnx`'s graph from the JAX-side arrays (complex k-space -> (...,
  2))."""
  feed = {"image": np.asarray(image, np.float32)}
  if models.is_reconstruction(model):
    kspace = np.asarray(kspace)
    feed["kspace"] = np.ascontiguousarray(
      np.stack([kspace.real, kspace.imag], -1).astype(np.float32)
    )
    mask = np.broadcast_to(np.asarray(mask, np.float32), feed["image"].shape)
    feed["mask"] = np.ascontiguousarray(mask)
  return feed


def session(
  model: onnx.ModelProto | str | bytes, threads: int = 0, optimize: bool = True, spin: bool = True
):
  """An ONNX Runtime CPU session; `threads` 0 lets ORT pick (one per physical core).

  `spin=False` makes idle worker threads sleep instead of busy-waiting: slower on a dedicated
  machine, much faster on one shared with other processes (a spinning thread holds a core another
  one needs).
  """
  import onnxruntime as ort

  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
  options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
  options.graph_optimization_level = (
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimize
    else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
  )
  if isinstance(model, onnx.ModelProto):
    model = model.SerializeToString()
  return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
