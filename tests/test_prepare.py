"""Tests of `python -m kdmri_jax.prepare` (kdmri_jax.prepare + kdmri_jax.data.writer)."""

import json
import os
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pytest

from kdmri_jax import masks, prepare
from kdmri_jax.data import reference
from kdmri_jax.errors import run_cli


def _inputs(tmp_path, count=3, shape=(16, 16), slices=2):
  folder = tmp_path / "in"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(count):
    np.save(folder / f"vol{i}.npy", rng.random((slices,) + shape).astype(np.float32) * (i + 2))
  return folder


def _run(*args):
  return run_cli(prepare.main, [str(a) for a in args])


def _run_input(inputs, out, *extra, dataset="brain", acc="4x"):
  """`prepare` of the `inputs` folder as a `dataset` dataset at `acc` into `out`."""
  return _run("--input", inputs, "--dataset", dataset, "--acc", acc, "--out", out, *extra)


def test_round_trip_zero_filled_and_kspace(tmp_path):
  out = tmp_path / "root"
  assert (
    _run(
      "--input",
      _inputs(tmp_path),
      "--dataset",
      "cardiac",
      "--acc",
      "4x",
      "8x",
      "--out",
      out,
      "--split",
      "0.67",
      "--seed",
      "3",
      "--mask-seed",
      "5",
    )
    == 0
  )
  manifest = json.loads((out / "manifest.json").read_text())
  assert (
    manifest["seed"] == 3
    and manifest["mask_seed"] == 5
    and manifest["counts"]["train"] == {"volumes": 2, "slices": 4}
  )
  assert manifest["counts"]["validation"]["volumes"] == 1 and set(manifest["masks"]) == {"4x", "8x"}
  for acc in ("4x", "8x"):
    mask = masks.load_mask(out / "masks" / f"mask_{acc}.npy", (16, 16))
    np.testing.assert_array_equal(
      mask, masks.cartesian_mask((16, 16), acc, seed=5, direction="rows")
    )
    for split in ("train", "validation"):
      for path in reference.list_volumes(str(out), split, acc):
        volume = reference.read_volume(path, acc, require_target=True)
        assert volume.target.max() == pytest.approx(1.0)  # per-volume max normalisation
        kspace = np.fft.fft2(volume.target, norm="ortho") * mask
        np.testing.assert_allclose(volume.kspace, kspace, atol=1e-5)
        np.testing.assert_allclose(
          volume.input, np.abs(np.fft.ifft2(kspace, norm="ortho")), atol=1e-5
        )
  assert sorted(manifest["sources"]) == ["vol0", "vol1", "vol2"]


def test_split_is_seeded_by_volume(tmp_path):
  inputs = _inputs(tmp_path, count=5)
  names = {}
  for seed in (1, 1, 2):
    out = tmp_path / f"r{seed}{len(names)}"
    _run_input(inputs, out, "--seed", seed)
    names[out] = sorted(os.listdir(out / "validation" / "acc_4x"))
  values = list(names.values())
  assert values[0] == values[1] and len(values[0]) == 1


def test_nifti_mask_dir_and_knee_single_slices(tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  for i in range(2):
    nib.save(
      nib.Nifti1Image(np.random.default_rng(i).random((12, 8, 3)).astype(np.float32), np.eye(4)),
      folder / f"k{i}.nii.gz",
    )
  mask_dir = tmp_path / "masks"
  mask_dir.mkdir()
  mask = masks.cartesian_mask((12, 8), 4, seed=9, direction="columns")
  np.save(mask_dir / "mask_4x.npy", mask)
  out = tmp_path / "knee"
  assert _run_input(folder, out, "--mask-dir", mask_dir, "--split", "0.5", dataset="knee") == 0
  files = reference.list_volumes(str(out), "train", "4x")
  assert len(files) == 3  # one file per slice
  with h5py.File(files[0]) as f:
    assert f["volfs"].shape == (12, 8)
  np.testing.assert_array_equal(np.load(out / "masks" / "mask_4x.npy"), mask)


def test_phantom_input(tmp_path):
  out = tmp_path / "ph"
  assert (
    _run(
      "--phantom",
      2,
      "--size",
      20,
      18,
      "--slices",
      3,
      "--dataset",
      "cardiac",
      "--acc",
      "5x",
      "--out",
      out,
    )
    == 0
  )
  assert reference.read_volume(reference.list_volumes(str(out), "train", "5x")[0]).shape == (20, 18)


def test_never_overwrites_unless_asked(tmp_path, capsys):
  inputs, out = _inputs(tmp_path), tmp_path / "root"
  assert _run_input(inputs, out) == 0
  stamp = (out / "manifest.json").read_text()
  assert _run_input(inputs, out) == 2
  assert (
    "already exists" in capsys.readouterr().err and (out / "manifest.json").read_text() == stamp
  )
  assert _run_input(inputs, out, "--overwrite", acc="8x") == 0
  assert os.listdir(out / "train") == ["acc_8x"]
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".root")]


def _nan_input(tmp_path):
  folder = _inputs(tmp_path)
  np.save(folder / "vol1.npy", np.full((2, 16, 16), np.nan, np.float32))
  return folder


def _keyless_h5(tmp_path):
  folder = tmp_path / "h5"
  folder.mkdir()
  with h5py.File(folder / "a.h5", "w") as f:
    f["x"], f["y"] = np.ones((1, 4, 4)), np.ones((1, 4, 4))
  return folder


def _mixed_sizes(tmp_path):
  folder = _inputs(tmp_path)
  np.save(folder / "odd.npy", np.ones((2, 10, 16), np.float32))
  return folder


def _empty(tmp_path):
  (tmp_path / "empty").mkdir()
  return tmp_path / "empty"


@pytest.mark.parametrize(
  "make, extra, message",
  [
    (_empty, [], "holds no volume files"),
    (_nan_input, [], "NaN or Inf"),
    (_keyless_h5, [], "several arrays"),
    (_mixed_sizes, [], "different slice sizes"),
    (_inputs, ["--mask-dir", "/nonexistent"], "does not exist"),
    (_inputs, ["--split", "1.5"], "--split"),
    (_inputs, ["--acc", "fast"], "not a number"),
  ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, extra, message):
  out = tmp_path / "root"
  args = ["--input", make(tmp_path), "--dataset", "brain", "--out", out] + extra
  if "--acc" not in extra:
    args += ["--acc", "4x"]
  assert _run(*args) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and message in err and "\n" not in err
  assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".root")]


def test_module_entry_point(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "kdmri_jax.prepare",
      "--input",
      str(tmp_path / "none"),
      "--dataset",
      "brain",
      "--acc",
      "4x",
      "--out",
      str(tmp_path / "o"),
    ],
    capture_output=True,
    text=True,
    cwd=os.path.dirname(os.path.dirname(__file__)),
  )
  assert result.returncode == 2 and "does not exist" in result.stderr


def test_failure_mid_write_leaves_nothing_and_keeps_the_old_dataset(tmp_path, monkeypatch):
  inputs, out = _inputs(tmp_path), tmp_path / "root"
  assert _run_input(inputs, out) == 0
  before = sorted(os.listdir(out / "train" / "acc_4x"))
  calls = []

  def failing_write(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise OSError("disk full")
    return original(*args, **kwargs)

  original = reference.write_volume
  monkeypatch.setattr(reference, "write_volume", failing_write)
  with pytest.raises(OSError):
    _run_input(inputs, out, "--overwrite", acc="8x")
  assert sorted(os.listdir(out / "train" / "acc_4x")) == before
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".root")]


def test_fastmri_and_reference_inputs(tmp_path):
  folder = tmp_path / "fastmri"
  folder.mkdir()
  image = np.random.default_rng(1).random((2, 24, 16)).astype(np.float32)
  for i in range(2):
    with h5py.File(folder / f"file{i}.h5", "w") as f:
      f["kspace"] = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
      ).astype(np.complex64)
      f["reconstruction_esc"] = image[:, 4:20, :]
  out = tmp_path / "knee"
  assert (
    _run_input(
      folder,
      out,
      "--fastmri-target",
      "kspace",
      "--size",
      20,
      16,
      "--split",
      "0.5",
      "--no-per-slice",
      dataset="knee",
    )
    == 0
  )
  volume = reference.read_volume(
    reference.list_volumes(str(out), "train", "4x")[0], require_target=True
  )
  np.testing.assert_allclose(volume.target, image[:, 2:22] / image[:, 2:22].max(), atol=1e-5)
  mask = np.load(out / "masks" / "mask_4x.npy")
  assert mask[:, 0].all() and not mask[0].all()  # knee: whole columns
  again = tmp_path / "again"  # a reference-layout root is re-prepared from its 'volfs' targets
  assert _run_input(out / "train", again, "--split", "1", dataset="knee", acc="8x") == 0
  redone = reference.read_volume(
    reference.list_volumes(str(again), "train", "8x")[0], require_target=True
  )
  np.testing.assert_allclose(redone.target, volume.target[:1], atol=1e-6)


def test_mask_family_option_and_manifest(tmp_path, capsys):
  inputs = _inputs(tmp_path, shape=(48, 48))
  for family in ("dccnn", "gaussian"):
    out = tmp_path / family
    extra = [] if family == "dccnn" else ["--mask-family", family]  # dccnn is the default
    assert _run_input(inputs, out, *extra) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mask_family"] == family and manifest["masks"]["4x"]["family"] == family
    mask = np.load(out / "masks" / "mask_4x.npy")
    np.testing.assert_array_equal(
      mask, masks.cartesian_mask((48, 48), "4x", seed=masks.DEFAULT_MASK_SEED, family=family)
    )
    stats = masks.mask_statistics(mask)
    assert manifest["masks"]["4x"]["sampled_lines"] == stats["lines"] == 12
    printed = capsys.readouterr().out
    assert (
      f"masks ({family})" in printed and "12/48 rows, 4.00x" in printed and "mean |ky|" in printed
    )
  assert _run_input(inputs, tmp_path / "x", "--mask-family", "fastmri") == 2
  assert "--mask-family 'fastmri' is not one of" in capsys.readouterr().err
  assert (
    _run_input(
      inputs,
      tmp_path / "x",
      "--mask-family",
      "gaussian",
      "--mask-dir",
      tmp_path / "dccnn" / "masks",
    )
    == 2
  )
  assert "exclude each other" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_training_data_loading_refuses_a_mask_the_data_was_not_made_with(tmp_path):
  from configs import default
  from kdmri_jax import data
  from kdmri_jax.errors import InputError

  out = tmp_path / "root"
  assert (
    _run("--phantom", 3, "--size", 32, 32, "--dataset", "cardiac", "--acc", "4x", "--out", out) == 0
  )
  other = tmp_path / "other_mask.npy"
  np.save(other, masks.cartesian_mask((32, 32), "4x", seed=0, family="gaussian"))
  config = default.get_config()
  config.dataset, config.acc, config.data.root = "cardiac", "4x", str(out)
  assert len(data.load_split(config, "train")) > 0  # the data's own mask
  config.data.mask_path = str(other)
  first = reference.list_volumes(str(out), "train", "4x")[0]
  with pytest.raises(InputError) as error:
    data.load_split(config, "train")
  message = str(error.value)
  assert message.startswith(f"{first} has k-space samples where the mask {other} is 0")
  assert "pass the mask the data was made with" in message and "\n" not in message
  superset = np.load(out / "masks" / "mask_4x.npy")
  superset[1::2] = 1  # more sampled lines than the data's: no sample is lost, so it is accepted
  np.save(other, superset)
  assert len(data.load_split(config, "validation")) > 0
