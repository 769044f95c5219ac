"""PyTorch import: parity with the reference PyTorch models, accepted formats, and refused inputs."""

import argparse
import datetime
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments import pytorch_reference as ref  # noqa: E402
from kdmri_jax import checkpoints, convert, masks, models  # noqa: E402
from kdmri_jax.errors import InputError, run_cli  # noqa: E402


def _save_authors_checkpoint(path, model):
  """What the authors' train_*.py writes: epoch, args, model, optimizer, best_dev_loss, exp_dir."""
  optimizer = torch.optim.Adam(model.parameters(), 1e-3)
  args = argparse.Namespace(device="cuda", lr=1e-3, exp_dir=pathlib.Path("/exp/brain/acc_4x"),
                            acceleration_factor="4x", model_type="teacher")
  torch.save({"epoch": 3, "args": args, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
              "best_dev_loss": 0.01, "exp_dir": args.exp_dir}, path)
  return path


def _run(argv, capsys):
  status = run_cli(convert.main, [str(a) for a in argv])
  return status, capsys.readouterr()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """{name: (torch model, orbax checkpoint dir)} for teacher and student, through the CLI."""
  torch.manual_seed(0)
  root = tmp_path_factory.mktemp("convert")
  result = {}
  for name in ("teacher", "student"):
    model = ref.build(name)
    pt = _save_authors_checkpoint(root / f"{name}_best_model.pt", model)
    assert run_cli(convert.main, ["--torch-checkpoint", str(pt), "--model", name, "--out", str(root / name)]) == 0
    result[name] = (model, root / name)
  return result


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:shape[0], :shape[1]] / max(shape)
  target = (0.6 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.45) ** 2) / 0.05) + 0.1 * rng.random(shape))
  mask = masks.cartesian_mask(shape, 4, seed=seed)
  kspace = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)[None]
  zero_filled = np.abs(np.fft.ifft2(kspace, norm="ortho")).astype(np.float32)
  return zero_filled, kspace, mask


@pytest.mark.parametrize("name", ["teacher", "student"])
@pytest.mark.parametrize("shape", [(240, 240), (150, 150)])
def test_converted_dccnn_matches_pytorch(converted, name, shape):
  torch_model, out = converted[name]
  model, params, meta = checkpoints.load_params(out, expected_model=name)
  assert meta["model"] == name and meta["source"] == "pytorch"
  zero_filled, kspace, mask = _inputs(shape)
  jax_out, _ = models.apply(model, params, {"input": zero_filled, "kspace": kspace, "mask": mask})
  with torch.inference_mode():
    torch_out, _ = torch_model(torch.from_numpy(zero_filled)[:, None], torch.from_numpy(kspace),
                               torch.from_numpy(mask))
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
  status, captured = _run(["--torch-checkpoint", tmp_path / "bare.pt", "--model", "student",
                           "--out", tmp_path / "ck"], capsys)
  assert status == 0, captured.err
  _, params, _ = checkpoints.load_params(tmp_path / "ck")
  np.testing.assert_array_equal(params["cascade_2"]["conv_1"]["kernel"],
                                torch_model.cascade3.conv2.weight.detach().numpy().transpose(2, 3, 1, 0))


def _assert_one_line_error(status, captured, *fragments):
  assert status == 2
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
  assert "Traceback" not in captured.err
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def test_student_weights_as_teacher_name_the_missing_key_and_the_real_model(tmp_path, capsys):
  pt = _save_authors_checkpoint(tmp_path / "student.pt", ref.build("student"))
  status, captured = _run(["--torch-checkpoint", pt, "--model", "teacher", "--out", tmp_path / "ck"], capsys)
  _assert_one_line_error(status, captured, "'teacher'", "cascade1.conv4.weight", "--model student")
  assert not (tmp_path / "ck").exists()


def test_teacher_weights_as_student_name_the_unexpected_key(tmp_path, capsys):
  pt = _save_authors_checkpoint(tmp_path / "teacher.pt", ref.build("teacher"))
  status, captured = _run(["--torch-checkpoint", pt, "--model", "student", "--out", tmp_path / "ck"], capsys)
  _assert_one_line_error(status, captured, "'student'", "cascade1.conv4.weight", "unexpected")
  assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("content", [b"hello\n", b"", np.arange(4).tobytes()])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys, content):
  (tmp_path / "x.pt").write_bytes(content)
  status, captured = _run(["--torch-checkpoint", tmp_path / "x.pt", "--model", "student",
                           "--out", tmp_path / "ck"], capsys)
  _assert_one_line_error(status, captured, "is not a PyTorch checkpoint")
  assert not (tmp_path / "ck").exists()


def test_npy_file_and_missing_file_are_refused(tmp_path, capsys):
  np.save(tmp_path / "mask.npy", np.ones((4, 4)))
  for path, fragment in [(tmp_path / "mask.npy", "is not a PyTorch checkpoint"),
                         (tmp_path / "nope.pt", "does not exist")]:
    status, captured = _run(["--torch-checkpoint", path, "--model", "student", "--out", tmp_path / "ck"], capsys)
    _assert_one_line_error(status, captured, fragment)
  assert not (tmp_path / "ck").exists()


def test_existing_output_needs_overwrite(tmp_path, capsys):
  pt = _save_authors_checkpoint(tmp_path / "s.pt", ref.build("student"))
  argv = ["--torch-checkpoint", pt, "--model", "student", "--out", tmp_path / "ck"]
  assert _run(argv, capsys)[0] == 0
  _assert_one_line_error(*_run(argv, capsys), "already exists", "--overwrite")
  assert _run(argv + ["--overwrite"], capsys)[0] == 0


def test_untrusted_python_objects_need_trust_pickle(tmp_path, capsys):
  torch.save({"model": ref.build("vdsr_student").state_dict(), "when": datetime.datetime(2020, 1, 1)},
             tmp_path / "odd.pt")
  argv = ["--torch-checkpoint", tmp_path / "odd.pt", "--model", "vdsr_student", "--out", tmp_path / "ck"]
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
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "kdmri_jax.convert", "--torch-checkpoint",
                           str(tmp_path / "vdsr.pt"), "--model", "vdsr_teacher", "--out", str(tmp_path / "ck")],
                          capture_output=True, text=True, env=env, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
  assert result.stderr.startswith("error: ") and "'conv8.weight' is missing" in result.stderr
  assert "--model vdsr_student" in result.stderr and not (tmp_path / "ck").exists()
