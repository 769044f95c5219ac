"""PyTorch import: parity with the reference PyTorch models, accepted formats, and refused
inputs."""

import argparse
import datetime
import os
import pathlib
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdmri_jax import (  # noqa: E402
  checkpoints,
  convert,
  masks,
  models,
  torch_reference as ref,  # noqa: E402
)
from kdmri_jax.errors import InputError, run_cli  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEV_LOSSES = [0.0123, 0.0101, 0.0117]  # the authors' evaluate() returns np.mean of these
BEST_DEV_LOSS = np.mean(DEV_LOSSES)


def _authors_args(model_type):
  """A real Namespace from a parser shaped like the authors' (paths typed as pathlib.Path)."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--weight-decay", type=float, default=0.0)
  parser.add_argument("--device", default="cuda")
  parser.add_argument("--exp-dir", type=pathlib.Path)
  parser.add_argument("--train-path")
  parser.add_argument("--acceleration_factor")
  parser.add_argument("--model_type")
  return parser.parse_args(
    [
      "--exp-dir",
      "/exp/brain/acc_4x",
      "--train-path",
      "/data/train",
      "--acceleration_factor",
      "4x",
      "--model_type",
      model_type,
    ]
  )


def _one_adam_step(model, args):
  """A real Adam (and the authors' StepLR) after one step: its state_dict holds moments, steps."""
  optimizer = torch.optim.Adam(model.parameters(), args.lr, weight_decay=args.weight_decay)
  torch.optim.lr_scheduler.StepLR(optimizer, 40, 0.1)
  zero_filled, kspace, mask = _inputs((16, 16), seed=3)
  image = torch.from_numpy(zero_filled)[:, None]
  if isinstance(model, ref.DCCNN):
    output = model(image, torch.from_numpy(kspace), torch.from_numpy(mask))[0]
  else:
    output = model(image)[0]
  torch.nn.functional.l1_loss(output, image).backward()
  optimizer.step()
  return optimizer


def _save_authors_checkpoint(path, model, zipfile=True, pickle_module=pickle, args=None):
  """What the authors' save_model writes: epoch, args, model, optimizer, best_dev_loss, exp_dir,
  with best_dev_loss = min(1e9, np.mean(losses)), a numpy float64; `zipfile=False` writes torch's
  legacy format."""
  args = args or _authors_args("teacher")
  optimizer = _one_adam_step(model, args)
  best_dev_loss = min(1e9, np.mean(DEV_LOSSES))
  torch.save(
    {
      "epoch": 3,
      "args": args,
      "model": model.state_dict(),
      "optimizer": optimizer.state_dict(),
      "best_dev_loss": best_dev_loss,
      "exp_dir": args.exp_dir,
    },
    path,
    _use_new_zipfile_serialization=zipfile,
    pickle_module=pickle_module,
  )
  return path


def _pickle_module_naming(renames):
  """A pickle module for torch.save that writes each object in `renames` under the dotted name
  given, as pickles made with numpy 1 (`numpy.core.multiarray.scalar`) or on another OS do."""

  class RenamingPickler(pickle._Pickler):  # the Python pickler, whose save_global can be overridden
    def save_global(self, obj, name=None):
      if obj not in renames:
        return super().save_global(obj, name)
      module, qualname = renames[obj].rsplit(".", 1)
      self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
      self.memoize(obj)

  module = types.ModuleType("renaming_pickle")
  module.Pickler, module.dump = RenamingPickler, pickle.dump
  return module


NUMPY_SCALAR = getattr(np, "_core", np.core).multiarray.scalar  # np.core is numpy 1's name
NUMPY1_PICKLE = _pickle_module_naming({NUMPY_SCALAR: "numpy.core.multiarray.scalar"})


def _run(argv, capsys):
  status = run_cli(convert.main, [str(a) for a in argv])
  return status, capsys.readouterr()


def _cli_subprocess(*argv):
  """`python -m kdmri_jax.convert argv` in a fresh interpreter, as a user runs it."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "kdmri_jax.convert", *map(str, argv)],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
    cwd=REPO,
  )


FORMATS = {"zip": True, "legacy": False}  # torch.save's _use_new_zipfile_serialization


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """{(name, format): (torch model, orbax checkpoint dir)}: the authors' files through the CLI, the
  teacher's zip file in a subprocess."""
  torch.manual_seed(0)
  root = tmp_path_factory.mktemp("convert")
  result = {}
  for name in ("teacher", "student"):
    for fmt, zipfile in FORMATS.items():
      model = ref.build(name)
      pt = _save_authors_checkpoint(root / f"{name}_{fmt}_best_model.pt", model, zipfile)
      argv = ["--torch-checkpoint", pt, "--model", name, "--out", root / f"{name}_{fmt}"]
      if (name, fmt) == ("teacher", "zip"):
        process = _cli_subprocess(*argv)
        assert process.returncode == 0, process.stderr
      else:
        assert run_cli(convert.main, [str(a) for a in argv]) == 0
      result[name, fmt] = (model, root / f"{name}_{fmt}")
  return result


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
  target = 0.6 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.45) ** 2) / 0.05) + 0.1 * rng.random(shape)
  mask = masks.cartesian_mask(shape, 4, seed=seed)
  kspace = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)[None]
  zero_filled = np.abs(np.fft.ifft2(kspace, norm="ortho")).astype(np.float32)
  return zero_filled, kspace, mask


@pytest.mark.parametrize(
  "name, fmt, shape",
  [
    ("teacher", "zip", (240, 240)),
    ("teacher", "zip", (150, 150)),
    ("teacher", "legacy", (150, 150)),
    ("student", "zip", (240, 240)),
    ("student", "legacy", (240, 240)),
    ("student", "legacy", (150, 150)),
  ],
)
def test_converted_dccnn_matches_pytorch(converted, name, fmt, shape):
  torch_model, out = converted[name, fmt]
  model, params, meta = checkpoints.load_params(out, expected_model=name)
  assert meta["model"] == name and meta["source"] == "pytorch"
  assert meta["torch_epoch"] == 3 and meta["torch_best_dev_loss"] == float(BEST_DEV_LOSS)
  zero_filled, kspace, mask = _inputs(shape)
  jax_out, _ = models.apply(model, params, {"input": zero_filled, "kspace": kspace, "mask": mask})
  with torch.inference_mode():
    torch_out, _ = torch_model(
      torch.from_numpy(zero_filled)[:, None], torch.from_numpy(kspace), torch.from_numpy(mask)
    )
  jax_out, torch_out = np.asarray(jax_out), torch_out[:, 0].numpy()
  assert jax_out.shape == (1,) + shape
  assert np.abs(jax_out - torch_out).max() <= 1e-4
  assert np.abs(torch_out - zero_filled).max() > 1e-2  # the network did something measurable


@pytest.mark.parametrize("name", ["vdsr_teacher", "vdsr_student"])
def test_converted_vdsr_matches_pytorch(tmp_path, capsys, name):
  torch.manual_seed(1)
  torch_model = ref.build(name)
  pt = _save_authors_checkpoint(tmp_path / "best_model.pt", torch_model)
  status, _ = _run(["--torch-checkpoint", pt, "--model", name, "--out", tmp_path / "ck"], capsys)
  assert status == 0
  model, params, _ = checkpoints.load_params(tmp_path / "ck", expected_model=name)
  image = np.random.default_rng(2).random((2, 24, 20)).astype(np.float32)
  jax_out, _ = models.apply(model, params, {"input": image})
  with torch.inference_mode():
    torch_out = torch_model(torch.from_numpy(image)[:, None])[0][:, 0].numpy()
  assert np.abs(np.asarray(jax_out) - torch_out).max() <= 1e-4


def test_bare_state_dict_with_dataparallel_prefix_is_accepted(tmp_path, capsys):
  torch_model = ref.build("student")
  torch.save({f"module.{k}": v for k, v in torch_model.state_dict().items()}, tmp_path / "bare.pt")
  status, captured = _run(
    ["--torch-checkpoint", tmp_path / "bare.pt", "--model", "student", "--out", tmp_path / "ck"],
    capsys,
  )
  assert status == 0, captured.err
  _, params, _ = checkpoints.load_params(tmp_path / "ck")
  np.testing.assert_array_equal(
    params["cascade_2"]["conv_1"]["kernel"],
    torch_model.cascade3.conv2.weight.detach().numpy().transpose(2, 3, 1, 0),
  )


def _assert_one_line_error(status, captured, *fragments):
  assert status == 2
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
  assert "Traceback" not in captured.err
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def _assert_refused_as(tmp_path, capsys, saved, model, *fragments):
  """The authors' checkpoint of preset `saved`, converted as `model`: one error line holding
  `fragments`, and no output written."""
  pt = _save_authors_checkpoint(tmp_path / f"{saved}.pt", ref.build(saved))
  status, captured = _run(
    ["--torch-checkpoint", pt, "--model", model, "--out", tmp_path / "ck"], capsys
  )
  _assert_one_line_error(status, captured, *fragments)
  assert not (tmp_path / "ck").exists()


def test_student_weights_as_teacher_name_the_missing_key_and_the_real_model(tmp_path, capsys):
  _assert_refused_as(
    tmp_path, capsys, "student", "teacher", "'teacher'", "cascade1.conv4.weight", "--model student"
  )


def test_teacher_weights_as_student_name_the_unexpected_key(tmp_path, capsys):
  _assert_refused_as(
    tmp_path, capsys, "teacher", "student", "'student'", "cascade1.conv4.weight", "unexpected"
  )


@pytest.mark.parametrize("content", [b"hello\n", b"", np.arange(4).tobytes()])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys, content):
  (tmp_path / "x.pt").write_bytes(content)
  status, captured = _run(
    ["--torch-checkpoint", tmp_path / "x.pt", "--model", "student", "--out", tmp_path / "ck"],
    capsys,
  )
  _assert_one_line_error(status, captured, "is not a PyTorch checkpoint")
  assert not (tmp_path / "ck").exists()


def test_npy_file_and_missing_file_are_refused(tmp_path, capsys):
  np.save(tmp_path / "mask.npy", np.ones((4, 4)))
  for path, fragment in [
    (tmp_path / "mask.npy", "is not a PyTorch checkpoint"),
    (tmp_path / "nope.pt", "does not exist"),
  ]:
    status, captured = _run(
      ["--torch-checkpoint", path, "--model", "student", "--out", tmp_path / "ck"], capsys
    )
    _assert_one_line_error(status, captured, fragment)
  assert not (tmp_path / "ck").exists()


def test_existing_output_needs_overwrite(tmp_path, capsys):
  pt = _save_authors_checkpoint(tmp_path / "s.pt", ref.build("student"))
  argv = ["--torch-checkpoint", pt, "--model", "student", "--out", tmp_path / "ck"]
  assert _run(argv, capsys)[0] == 0
  _assert_one_line_error(*_run(argv, capsys), "already exists", "--overwrite")
  assert _run(argv + ["--overwrite"], capsys)[0] == 0


def test_untrusted_python_objects_need_trust_pickle(tmp_path, capsys):
  torch.save(
    {"model": ref.build("vdsr_student").state_dict(), "when": datetime.datetime(2020, 1, 1)},
    tmp_path / "odd.pt",
  )
  argv = [
    "--torch-checkpoint",
    tmp_path / "odd.pt",
    "--model",
    "vdsr_student",
    "--out",
    tmp_path / "ck",
  ]
  _assert_one_line_error(*_run(argv, capsys), "--trust-pickle")
  assert _run(argv + ["--trust-pickle"], capsys)[0] == 0


def test_wrong_shape_and_nan_values_are_named():
  state = ref.build("vdsr_student").state_dict()
  bad = dict(state, **{"conv3.weight": torch.zeros(64, 64, 5, 5)})
  with pytest.raises(InputError, match=r"'conv3.weight' has shape \(64, 64, 5, 5\)"):
    convert.torch_state_dict_to_params("vdsr_student", bad)
  nan = dict(state, **{"conv2.bias": torch.full((64,), float("nan"))})
  with pytest.raises(InputError, match="'conv2.bias' contains NaN"):
    convert.torch_state_dict_to_params("vdsr_student", nan)


def test_missing_torch_gives_the_install_command(tmp_path, monkeypatch):
  (tmp_path / "x.pt").write_bytes(b"x")
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(InputError, match=r"pip install torch==2\.13\.0"):
    convert.load_torch_checkpoint(tmp_path / "x.pt")


def test_cli_subprocess_reports_wrong_model_in_one_line(tmp_path):
  torch.save(ref.build("vdsr_student").state_dict(), tmp_path / "vdsr.pt")
  result = _cli_subprocess(
    "--torch-checkpoint", tmp_path / "vdsr.pt", "--model", "vdsr_teacher", "--out", tmp_path / "ck"
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
  assert result.stderr.startswith("error: ") and "'conv8.weight' is missing" in result.stderr
  assert "--model vdsr_student" in result.stderr and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_authors_objects_load_as_themselves_in_both_formats(tmp_path, fmt):
  pt = _save_authors_checkpoint(tmp_path / "model.pt", ref.build("vdsr_student"), FORMATS[fmt])
  with pytest.raises(pickle.UnpicklingError):  # a real file needs the allow-list ...
    torch.load(pt, weights_only=True)
  checkpoint = convert.read_torch_checkpoint(pt)  # ... which convert supplies only while loading
  assert not set(convert.authors_pickle_globals()) & set(torch.serialization.get_safe_globals())
  args = checkpoint["args"]
  assert isinstance(args, argparse.Namespace) and args.model_type == "teacher" and args.lr == 1e-3
  assert type(checkpoint["exp_dir"]) is type(pathlib.Path())
  assert args.exp_dir == checkpoint["exp_dir"] == pathlib.Path("/exp/brain/acc_4x")
  loss = checkpoint["best_dev_loss"]
  assert type(loss) is np.float64 and loss == BEST_DEV_LOSS
  adam = checkpoint["optimizer"]
  assert adam["param_groups"][0]["initial_lr"] == 1e-3
  assert len(adam["state"]) == len(checkpoint["model"])
  assert all(float(state["exp_avg_sq"].abs().sum()) > 0 for state in adam["state"].values())


@pytest.mark.parametrize("fmt", FORMATS)
def test_numpy1_era_checkpoint_converts(tmp_path, capsys, fmt):
  torch.manual_seed(4)
  torch_model = ref.build("vdsr_teacher")
  pt = _save_authors_checkpoint(tmp_path / "old.pt", torch_model, FORMATS[fmt], NUMPY1_PICKLE)
  raw = pt.read_bytes()  # torch stores the pickle uncompressed, so its GLOBAL names can be read
  assert b"numpy.core.multiarray\nscalar" in raw and b"numpy._core" not in raw
  loss = convert.read_torch_checkpoint(pt)["best_dev_loss"]
  assert type(loss) is np.float64 and loss == BEST_DEV_LOSS
  argv = ["--torch-checkpoint", pt, "--model", "vdsr_teacher", "--out", tmp_path / "ck"]
  status, captured = _run(argv, capsys)
  assert status == 0, captured.err
  model, params, meta = checkpoints.load_params(tmp_path / "ck", expected_model="vdsr_teacher")
  assert meta["torch_best_dev_loss"] == float(loss)
  image = np.random.default_rng(5).random((1, 20, 24)).astype(np.float32)
  with torch.inference_mode():
    torch_out = torch_model(torch.from_numpy(image)[:, None])[0][:, 0].numpy()
  jax_out = np.asarray(models.apply(model, params, {"input": image})[0])
  assert np.abs(jax_out - torch_out).max() <= 1e-4


@pytest.mark.skipif(os.name == "nt", reason="reads a WindowsPath where it cannot be created")
def test_exp_dir_saved_on_windows_loads_as_a_pure_windows_path(tmp_path, capsys):
  windows = _pickle_module_naming({pathlib.PureWindowsPath: "pathlib.WindowsPath"})
  args = _authors_args("student")
  args.exp_dir = pathlib.PureWindowsPath(r"C:\exp\brain")  # `type=pathlib.Path` on Windows
  pt = _save_authors_checkpoint(
    tmp_path / "win.pt", ref.build("student"), pickle_module=windows, args=args
  )
  assert b"pathlib\nWindowsPath" in pt.read_bytes()
  assert convert.read_torch_checkpoint(pt)["exp_dir"] == pathlib.PureWindowsPath(r"C:\exp\brain")
  argv = ["--torch-checkpoint", pt, "--model", "student", "--out", tmp_path / "ck"]
  assert _run(argv, capsys)[0] == 0


def _touch(path):
  """Stands for any code a pickle could run: leaves `path` behind when called."""
  pathlib.Path(path).touch()


class _RunsShell:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


class _CallsFunction(_RunsShell):
  def __reduce__(self):
    return _touch, (str(self.marker),)


@pytest.mark.parametrize(
  "payload, refused", [(_RunsShell, f"{os.name}.system"), (_CallsFunction, "._touch")]
)
def test_a_file_that_would_run_code_is_refused_unrun(tmp_path, capsys, payload, refused):
  marker = tmp_path / "ran"
  model = ref.build("vdsr_student")
  torch.save({"model": model.state_dict(), "best_dev_loss": payload(marker)}, tmp_path / "evil.pt")
  status, captured = _run(
    [
      "--torch-checkpoint",
      tmp_path / "evil.pt",
      "--model",
      "vdsr_student",
      "--out",
      tmp_path / "ck",
    ],
    capsys,
  )
  _assert_one_line_error(status, captured, refused, "none of the types", "--trust-pickle")
  assert not marker.exists() and not (tmp_path / "ck").exists()
  convert.read_torch_checkpoint(tmp_path / "evil.pt", trust_pickle=True)  # the payload is real:
  assert marker.exists()  # trusting the file runs it
