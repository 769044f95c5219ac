"""`valid`: one h5 per volume with `reconstruction` S×H×W float32, and one-line refusals of bad
input."""

import concurrent.futures
import os
import shutil
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from kdmri_jax import checkpoints, masks, models, valid
from kdmri_jax.data import reference, sr
from kdmri_jax.errors import run_cli

SHAPE = (24, 20)


def _save_model(path, name, **overrides):
  model = models.build_model(name, **overrides)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  checkpoints.save_params(path, params, checkpoints.make_meta(name, model))
  return model, params


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Two 3-slice volumes at 4x, their mask, and a small student checkpoint."""
  root = tmp_path_factory.mktemp("valid")
  mask = masks.cartesian_mask(SHAPE, 4, seed=0)
  np.save(root / "mask_4x.npy", mask)
  rng = np.random.default_rng(0)
  for name in ("vol_a", "vol_b"):
    target = rng.random((3,) + SHAPE).astype(np.float32)
    kspace = np.fft.fft2(target, norm="ortho") * mask
    reference.write_volume(
      root / "data" / f"{name}.h5", target, np.abs(np.fft.ifft2(kspace, norm="ortho")), kspace, "4x"
    )
  model, params = _save_model(root / "ckpt", "student", num_cascades=2)
  return root, model, params, mask


def _argv(root, out, *extra):
  return [
    "--checkpoint",
    str(root / "ckpt"),
    "--data-path",
    str(root / "data"),
    "--mask",
    str(root / "mask_4x.npy"),
    "--out-dir",
    str(out),
    *map(str, extra),
  ]


def _argv_with(root, out, flag, value):
  """`_argv(root, out)` with `value` for `flag`."""
  argv = _argv(root, out)
  argv[argv.index(flag) + 1] = str(value)
  return argv


def _run_valid_subprocess(argv):
  """`python -m kdmri_jax.valid argv...` on the CPU from the repository root."""
  return subprocess.run(
    [sys.executable, "-m", "kdmri_jax.valid", *argv],
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    timeout=120,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )


def test_writes_one_readable_file_per_volume_matching_the_model(setup, tmp_path, capsys):
  root, model, params, mask = setup
  # 3 slices: padded batch
  assert run_cli(valid.main, _argv(root, tmp_path / "out", "--batch-size", 2)) == 0
  assert sorted(os.listdir(tmp_path / "out")) == ["vol_a.h5", "vol_b.h5"]
  volume = reference.read_volume(root / "data" / "vol_b.h5")
  expected, _ = models.apply(
    model, params, {"input": volume.input, "kspace": volume.kspace, "mask": mask}
  )
  with h5py.File(tmp_path / "out" / "vol_b.h5", "r") as h5file:  # a plain reader, not ours
    assert list(h5file.keys()) == ["reconstruction"]
    data = h5file["reconstruction"][()]
    assert h5file.attrs["model"] == "student" and h5file.attrs["acc"] == "4x"
  assert data.shape == (3,) + SHAPE and data.dtype == np.float32
  np.testing.assert_allclose(data, np.asarray(expected), atol=1e-5)
  assert "wrote 2 reconstruction(s)" in capsys.readouterr().out


def test_refuses_to_overwrite_unless_asked(setup, tmp_path, capsys):
  root = setup[0]
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "vol_a.h5").write_bytes(b"keep me")
  _assert_one_line_error(
    run_cli(valid.main, _argv(root, tmp_path / "out")), capsys, "already exists"
  )
  assert (tmp_path / "out" / "vol_a.h5").read_bytes() == b"keep me"
  assert run_cli(valid.main, _argv(root, tmp_path / "out", "--overwrite", "--acc", "4")) == 0
  with h5py.File(tmp_path / "out" / "vol_a.h5", "r") as h5file:
    assert h5file["reconstruction"].shape == (3,) + SHAPE


def _assert_one_line_error(status, capsys, *fragments):
  err = capsys.readouterr().err
  assert status == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def test_missing_inputs_are_named(setup, tmp_path, capsys):
  root = setup[0]
  cases = [
    (["--checkpoint", tmp_path / "nope"], "does not exist"),
    (["--data-path", tmp_path / "nodata"], "--data-path"),
    (["--mask", tmp_path / "nomask.npy"], "nomask.npy does not exist"),
  ]
  for change, fragment in cases:
    argv = _argv_with(root, tmp_path / "out", *change)
    _assert_one_line_error(run_cli(valid.main, argv), capsys, fragment)
  argv = _argv(root, tmp_path / "out")
  del argv[argv.index("--mask") : argv.index("--mask") + 2]
  _assert_one_line_error(run_cli(valid.main, argv), capsys, "--mask")
  assert not (tmp_path / "out").exists()


def test_missing_h5_key_and_unknown_acceleration_are_named(setup, tmp_path, capsys):
  root = setup[0]
  data = tmp_path / "data"
  data.mkdir()
  with h5py.File(data / "broken.h5", "w") as h5file:
    h5file["volfs"] = np.zeros(SHAPE + (2,), np.float32)
    h5file["img_volus_4x"] = np.zeros(SHAPE + (2,), np.float32)
  argv = _argv_with(root, tmp_path / "out", "--data-path", data)
  _assert_one_line_error(run_cli(valid.main, argv), capsys, "broken.h5", "kspace_volus_4x")
  _assert_one_line_error(
    run_cli(valid.main, _argv(root, tmp_path / "out", "--acc", "8x")), capsys, "img_volus_8x"
  )
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
  "mask, fragment",
  [
    (np.ones((20, 24), np.float32), "shape (20, 24)"),
    (np.full(SHAPE, 0.5, np.float32), "not binary"),
  ],
)
def test_bad_masks_are_refused(setup, tmp_path, capsys, mask, fragment):
  root = setup[0]
  np.save(tmp_path / "bad.npy", mask)
  argv = _argv_with(root, tmp_path / "out", "--mask", tmp_path / "bad.npy")
  _assert_one_line_error(run_cli(valid.main, argv), capsys, "bad.npy", fragment)
  assert not (tmp_path / "out").exists()


def test_vdsr_checkpoint_uses_the_low_resolution_target(setup, tmp_path):
  root = setup[0]
  # 32 features: the student's parameter shapes, so JAX reuses the initialisers compiled for it.
  model, params = _save_model(tmp_path / "vdsr", "vdsr_student", num_layers=3, features=32)
  argv = [
    "--checkpoint",
    tmp_path / "vdsr",
    "--data-path",
    root / "data" / "vol_a.h5",
    "--out-dir",
    tmp_path / "out",
    "--sr-keep",
    8,
  ]
  assert run_cli(valid.main, [str(a) for a in argv]) == 0
  target = reference.read_volume(root / "data" / "vol_a.h5").target
  expected, _ = models.apply(model, params, {"input": sr.low_resolution(target, 8)})
  with h5py.File(tmp_path / "out" / "vol_a.h5", "r") as h5file:
    np.testing.assert_allclose(h5file["reconstruction"][()], np.asarray(expected), atol=1e-5)
    assert h5file.attrs["sr_keep"] == 8


# The masks each `python -m kdmri_jax.valid` refusal below is given (the runs start side by side).
CLI_MASKS = {
  "wrong-shape": ("mask_small.npy", lambda: masks.cartesian_mask((16, 16), 4)),
  "not-the-datas": ("other.npy", lambda: masks.cartesian_mask(SHAPE, 4, seed=0, family="gaussian")),
}


@pytest.fixture(scope="module")
def cli_refusals(setup, tmp_path_factory):
  """{case: (completed `python -m kdmri_jax.valid`, its scratch folder)} of CLI_MASKS, run
  concurrently."""
  root = setup[0]
  folders = {case: tmp_path_factory.mktemp(f"cli_{case}") for case in CLI_MASKS}
  argvs = {}
  for case, folder in folders.items():
    name, make_mask = CLI_MASKS[case]
    np.save(folder / name, make_mask())
    argvs[case] = _argv_with(root, folder / "out", "--mask", folder / name)
  with concurrent.futures.ThreadPoolExecutor(len(argvs)) as pool:
    results = dict(zip(argvs, pool.map(_run_valid_subprocess, argvs.values())))
  return {case: (results[case], folders[case]) for case in argvs}


def test_cli_subprocess_reports_a_mask_of_the_wrong_shape_in_one_line(cli_refusals):
  result, tmp_path = cli_refusals["wrong-shape"]
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert result.stderr.startswith("error: mask file") and "(16, 16)" in result.stderr
  assert not (tmp_path / "out").exists()


def test_a_mask_that_is_not_the_datas_own_is_refused_in_one_sentence(setup, tmp_path, capsys):
  root = setup[0]
  np.save(tmp_path / "other.npy", masks.cartesian_mask(SHAPE, 4, seed=7))
  assert not np.array_equal(np.load(tmp_path / "other.npy"), setup[3])
  argv = _argv_with(root, tmp_path / "out", "--mask", tmp_path / "other.npy")
  expected = (
    f"{root / 'data' / 'vol_a.h5'} has k-space samples where the mask {tmp_path / 'other.npy'} is 0"
  )
  _assert_one_line_error(run_cli(valid.main, argv), capsys, "other.npy", expected)
  assert not (tmp_path / "out").exists()


def test_cli_subprocess_refuses_a_mask_the_data_was_not_made_with(cli_refusals):
  result, tmp_path = cli_refusals["not-the-datas"]
  assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert (
    "vol_a.h5 has k-space samples where the mask" in result.stderr and "other.npy" in result.stderr
  )
  assert "pass the mask the data was made with" in result.stderr
  assert not (tmp_path / "out").exists()


def test_a_later_volume_undersampled_with_another_mask_is_refused(setup, tmp_path, capsys):
  root, _, _, mask = setup
  data = tmp_path / "data"
  shutil.copytree(root / "data", data)
  target = np.random.default_rng(1).random((3,) + SHAPE).astype(np.float32)
  kspace = np.fft.fft2(target, norm="ortho") * masks.cartesian_mask(SHAPE, 4, seed=7)
  reference.write_volume(
    data / "vol_b.h5", target, np.abs(np.fft.ifft2(kspace, norm="ortho")), kspace, "4x"
  )
  argv = _argv_with(root, tmp_path / "out", "--data-path", data)
  expected = f"{data / 'vol_b.h5'} has k-space samples where the mask {root / 'mask_4x.npy'} is 0"
  _assert_one_line_error(run_cli(valid.main, argv), capsys, "vol_b.h5", expected)
