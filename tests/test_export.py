"""Export round-trips: the `.jax` artifact and the ONNX graph reproduce the jitted model to 1e-4."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from onnx import numpy_helper

from kdmri_jax import checkpoints, export, inference, models, onnx_export
from kdmri_jax.errors import run_cli
from kdmri_jax.models import layout

SHAPE = (2, 32, 24)  # batch, H, W: non-square catches a transposed DFT
# the preset's layers with fewer cascades: same code paths, a third of the compile time
CASCADES = 2


@pytest.fixture(scope="module")
def student():
  model = models.build_model("student", num_cascades=CASCADES)
  return model, models.init_params(model, jax.random.PRNGKey(1), *SHAPE[1:])


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory, student):
  model, params = student
  path = tmp_path_factory.mktemp("ckpt") / "student"
  checkpoints.save_params(path, params, checkpoints.make_meta("student", model))
  return str(path)


@pytest.mark.parametrize(
  "name, overrides",
  [
    ("student", {"num_cascades": CASCADES}),
    ("student", {"num_cascades": CASCADES, "first_cascade": 1}),
    ("vdsr_student", {"num_layers": 4}),
  ],
)
def test_fast_forward_matches_model(name, overrides):
  model = models.build_model(name, **overrides)
  params = models.init_params(model, jax.random.PRNGKey(3), *SHAPE[1:])
  inputs = export.example_inputs(model, *SHAPE)
  reference = export.reference_output(model, params, inputs)
  assert inference.has_fast_path(model)
  fast = np.asarray(jax.jit(inference.image_function(model, params))(*inputs))
  assert np.max(np.abs(fast - reference)) <= 1e-5
  assert np.std(reference) > 1e-3  # a non-trivial output


def test_dft_matrix_is_the_orthonormal_fft():
  real, imag = onnx_export.dft_matrix(12)
  x = np.random.default_rng(0).random((12, 12))
  np.testing.assert_allclose(
    (real + 1j * imag) @ x @ (real + 1j * imag).T, np.fft.fft2(x, norm="ortho"), atol=1e-12
  )


@pytest.mark.parametrize("fmt", ["jax", "onnx"])
def test_cli_round_trip(tmp_path, student_checkpoint, student, fmt):
  model, params = student
  out = tmp_path / f"student.{fmt}"
  argv = [
    "--checkpoint",
    student_checkpoint,
    "--model",
    "student",
    "--shape",
    str(SHAPE[1]),
    str(SHAPE[2]),
    "--batch",
    str(SHAPE[0]),
    "--out",
    str(out),
    "--format",
    fmt,
  ]
  assert run_cli(export.main, argv) == 0
  inputs = export.example_inputs(model, *SHAPE, seed=7)
  reference = export.reference_output(model, params, inputs)
  if fmt == "jax":
    output = export.load_jax(out).call(*inputs)  # no model code needed to run it
  else:
    session = onnx_export.session(str(out))
    output = session.run(None, onnx_export.onnx_inputs(model, *inputs))[0]
  assert export.max_abs_error(output, reference) <= 1e-4
  # A second export to the same file is refused and leaves it untouched.
  before = out.read_bytes()
  assert run_cli(export.main, argv) == 2
  assert out.read_bytes() == before
  assert run_cli(export.main, argv + ["--overwrite"]) == 0


def test_vdsr_onnx_round_trip(tmp_path):
  model = models.build_model("vdsr_student", num_layers=3, features=8)
  params = models.init_params(model, jax.random.PRNGKey(2), 16, 16)
  error = export.export(model, params, 1, 16, 16, str(tmp_path / "v.onnx"), "onnx")
  assert error <= 1e-4


def test_wrong_model_exits_2_with_one_line(tmp_path, student_checkpoint, capsys):
  argv = [
    "--checkpoint",
    student_checkpoint,
    "--model",
    "teacher",
    "--shape",
    "16",
    "16",
    "--out",
    str(tmp_path / "t.jax"),
  ]
  assert run_cli(export.main, argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error:") and "student" in err and len(err.splitlines()) == 1
  assert not (tmp_path / "t.jax").exists()


def _conv_weights(proto):
  """The OIHW weight of every `Conv` node, in graph order."""
  initializers = {t.name: t for t in proto.graph.initializer}
  return [
    numpy_helper.to_array(initializers[node.input[1]])
    for node in proto.graph.node
    if node.op_type == "Conv"
  ]


@pytest.mark.parametrize(
  "name, overrides",
  [
    ("student", {"num_cascades": CASCADES}),
    ("student", {"num_cascades": 3, "first_cascade": 1}),
    ("vdsr_student", {"num_layers": 3, "features": 8}),
  ],
)
def test_onnx_graph_has_the_layouts_convs_in_order(name, overrides):
  model = models.build_model(name, **overrides)
  params = models.init_params(model, jax.random.PRNGKey(4), 8, 8)
  weights = _conv_weights(onnx_export.build_onnx(model, params, 1, 8, 8))
  # Independent of models.layout: the Flax tree's own names, in the order the model calls them.
  if models.is_reconstruction(model):
    expected = [
      params[f"cascade_{c}"][f"conv_{j}"]
      for c in range(model.first_cascade, model.num_cascades)
      for j in range(model.num_convs)
    ]
  else:
    expected = [params[f"conv_{j}"] for j in range(model.num_layers)]
  assert len(weights) == len(expected) == sum(len(s) for s in layout.conv_stacks(model))
  for weight, layer in zip(weights, expected):
    np.testing.assert_array_equal(weight, np.asarray(layer["kernel"]).transpose(3, 2, 0, 1))


@pytest.mark.parametrize(
  "overrides",
  [{"residual": True}, {"noise_lambda": 0.1}, {"complex_images": True}, {"learn_lambda": True}],
)
def test_variants_outside_the_inference_structure_use_the_flax_model(overrides):
  model = models.build_model("student", num_cascades=1, **overrides)
  params = models.init_params(model, jax.random.PRNGKey(5), 8, 8)
  assert not inference.has_fast_path(model)
  with pytest.raises(NotImplementedError, match="ONNX export covers"):
    onnx_export.build_onnx(model, params, 1, 8, 8)
  if not model.complex_images:  # a complex model takes a complex image
    inputs = export.example_inputs(model, 1, 8, 8)
    np.testing.assert_allclose(
      np.asarray(inference.image_function(model, params)(*inputs)),
      export.reference_output(model, params, inputs),
      atol=1e-6,
    )
