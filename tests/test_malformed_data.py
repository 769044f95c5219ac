"""Malformed data that opens (issue 15, class 5): every reader refuses it in one sentence naming the
file and the dataset, through `kdmri_jax.data.h5_read`.

Five faults of an h5 file whose header is fine (a group where a dataset is expected, a volume with
zero slices, a corrupt compressed chunk, booleans, strings) meet every command that reads h5 data:
`valid` (reference volumes), `evaluate` (targets and predictions), `prepare` (plain,
reference-layout, fastMRI and MATLAB v7.3 volumes) and `main` (training data). The table runs
in-process through each module's `main` via `run_cli`; one case per command again through
`python -m`. Each case points the command's output at a folder of earlier results, whose hash must
not change.
"""

from __future__ import annotations

import importlib
import shutil

import h5py
import numpy as np
import pytest

from helpers import (
  REPO,
  assert_entry_points_refuse,
  assert_one_line_error,
  phantom_argv,
  prepare_argv,
  save_unread_checkpoint,
  short_main_argv,
  tree_hash,
)
from kdmri_jax import masks
from kdmri_jax.errors import run_cli

SHAPE = (24, 20)
SLICES = 3
# Each fault and the words the one error line must hold for it.
FAULT_WORDS = {
  "group": "is a group",
  "zero-slices": "empty axis",
  "corrupt-chunk": "damaged",
  "bool": "booleans",
  "string": "strings",
}
FAULTS = tuple(FAULT_WORDS)


# --- faulty files ---------------------------------------------------------------------------------


def write_faulty(path, arrays, victim, fault, slice_axis):
  """Writes `arrays` ({key: array}) as an h5 file whose dataset `victim` has `fault`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w") as f:
    for key, value in arrays.items():
      if key != victim:
        f.create_dataset(key, data=value)
    value = arrays[victim]
    if fault == "group":
      f.create_group(victim).create_dataset("data", data=value)
    elif fault == "zero-slices":
      f.create_dataset(victim, data=np.take(value, [], axis=slice_axis))
    elif fault == "corrupt-chunk":
      f.create_dataset(victim, data=value, chunks=True, compression="gzip")
    elif fault == "bool":
      f.create_dataset(victim, data=np.abs(value) > 0.5)
    else:
      f.create_dataset(victim, data=np.full(value.shape, b"x"))
  if fault == "corrupt-chunk":
    corrupt_first_chunk(path, victim)
  return path


def corrupt_first_chunk(path, key):
  """Overwrites the start of the first compressed chunk of `key`; header and index stay good."""
  with h5py.File(path, "r") as f:
    info = f[key].id.get_chunk_info(0)
  with open(path, "r+b") as handle:
    handle.seek(info.byte_offset)
    handle.write(b"\xff" * min(32, info.size))


def read_all(path):
  with h5py.File(path, "r") as f:
    return {key: f[key][()] for key in f}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """Good inputs: two reference volumes (H×W×S) with their mask and predictions, a prepared data
  root and a student checkpoint; each case writes its faulty file next to copies of them."""
  from kdmri_jax import prepare

  root = tmp_path_factory.mktemp("malformed")
  rng = np.random.default_rng(0)
  mask = masks.cartesian_mask(SHAPE, 4, seed=0)
  np.save(root / "mask_4x.npy", mask)
  for folder in ("data", "predictions"):
    (root / folder).mkdir()
  for name in ("vol_a", "vol_b"):
    target = rng.random((SLICES,) + SHAPE).astype(np.float32)
    kspace = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)
    image = np.abs(np.fft.ifft2(kspace, norm="ortho"))
    with h5py.File(root / "data" / f"{name}.h5", "w") as f:
      for key, value in (("volfs", target), ("img_volus_4x", image), ("kspace_volus_4x", kspace)):
        f.create_dataset(key, data=np.moveaxis(value, 0, -1))
    with h5py.File(root / "predictions" / f"{name}.h5", "w") as f:
      f.create_dataset("reconstruction", data=target * 0.9)
  assert run_cli(prepare.main, phantom_argv(root / "root", "--slices", 4)) == 0
  save_unread_checkpoint(root / "student_ckpt")
  return root


@pytest.fixture
def out(tmp_path):
  """An output folder that already holds earlier results."""
  folder = tmp_path / "outputs"
  folder.mkdir()
  (folder / "report.txt").write_text("HFN = 1 +/- 0 earlier results\n")
  (folder / "config.json").write_text('{"earlier": "run"}\n')
  return folder


# --- the commands, each with one faulty file ------------------------------------------------------


def _valid(w, t, fault, victim="img_volus_4x"):
  arrays = read_all(w / "data" / "vol_a.h5")
  write_faulty(t / "bad_data" / "vol.h5", arrays, victim, fault, slice_axis=-1)
  return [
    "--checkpoint",
    w / "student_ckpt",
    "--data-path",
    t / "bad_data",
    "--mask",
    w / "mask_4x.npy",
    "--out-dir",
    t / "outputs",
  ]


def _evaluate(w, t, fault):
  folder = t / "bad_predictions"
  folder.mkdir()
  shutil.copy(w / "predictions" / "vol_a.h5", folder / "vol_a.h5")
  arrays = read_all(w / "predictions" / "vol_b.h5")
  write_faulty(folder / "vol_b.h5", arrays, "reconstruction", fault, slice_axis=0)
  return [
    "--target-path",
    w / "data",
    "--predictions-path",
    folder,
    "--report-path",
    t / "outputs" / "new",
  ]


def _prepare(w, t, fault, layout="plain"):
  """A plain h5 volume under --key 'data' (S×H×W), a reference-layout file ('volfs', H×W×S), a
  fastMRI file ('reconstruction_esc' next to 'kspace') or a MATLAB v7.3 file ('img', whose h5 axis
  0 is MATLAB's last)."""
  volume = np.random.default_rng(1).random((4, 16, 16)).astype(np.float32) + 0.1
  arrays, victim, axis, extra = {"data": volume}, "data", 0, ["--key", "data"]
  if layout == "reference":
    arrays, victim, axis, extra = {"volfs": np.moveaxis(volume, 0, -1)}, "volfs", -1, []
  elif layout == "fastmri":
    arrays = {"kspace": np.fft.fft2(volume).astype(np.complex64), "reconstruction_esc": volume}
    victim, extra = "reconstruction_esc", []
  elif layout == "mat73":
    arrays, victim, extra = {"img": volume}, "img", []
  name = "vol.mat" if layout == "mat73" else "vol.h5"
  path = write_faulty(t / "bad_volumes" / name, arrays, victim, fault, slice_axis=axis)
  if layout == "mat73":
    with h5py.File(path, "a") as f:
      f[victim].attrs["MATLAB_class"] = np.bytes_("single")
  return prepare_argv(path, t / "outputs" / "new_root", *extra)


def _main(w, t, fault, victim="img_volus_4x"):
  root = t / "root"
  shutil.copytree(w / "root", root)
  train_file = sorted((root / "train" / "acc_4x").glob("*.h5"))[0]
  write_faulty(train_file, read_all(train_file), victim, fault, slice_axis=-1)
  return short_main_argv(t / "outputs", f"--config.data.root={root}")


# MATLAB flags its groups (structs) and logical arrays itself: test_data_volumes refuses those.
H5_FAULTS = ("group", "zero-slices", "corrupt-chunk", "bool")
PREPARE_LAYOUTS = {
  "reference": ("vol.h5", "volfs", H5_FAULTS),
  "fastmri": ("vol.h5", "reconstruction_esc", H5_FAULTS),
  "mat73": ("vol.mat", "img", ("zero-slices", "corrupt-chunk")),
}


def fault_cases(command, setup, fragments, faults=FAULTS, tag="", **setup_kwargs):
  """One case a fault: id '<command><tag>-<fault>', argv `setup(w, t, fault, **setup_kwargs)`, and
  the error line must hold `fragments` and the fault's words."""
  return [
    (
      f"{command}{tag}-{fault}",
      command,
      lambda w, t, f=fault: setup(w, t, f, **setup_kwargs),
      [*fragments, FAULT_WORDS[fault]],
    )
    for fault in faults
  ]


# (id, command, setup(world, tmp) -> argv, fragments the one error line must contain)
CASES = (
  fault_cases("valid", _valid, ["vol.h5", "img_volus_4x"])
  + fault_cases(
    "valid", _valid, ["vol.h5", "kspace_volus_4x"], ("group",), "-kspace", victim="kspace_volus_4x"
  )
  + fault_cases("valid", _valid, ["vol.h5", "volfs"], ("corrupt-chunk",), "-target", victim="volfs")
  + fault_cases("evaluate", _evaluate, ["vol_b.h5", "reconstruction"])
  + fault_cases("prepare", _prepare, ["vol.h5", "data"])
  + [
    case
    for layout, (name, key, faults) in PREPARE_LAYOUTS.items()
    for case in fault_cases("prepare", _prepare, [name, key], faults, f"-{layout}", layout=layout)
  ]
  + fault_cases("main", _main, ["train/acc_4x/", "img_volus_4x"])
  + fault_cases(
    "main",
    _main,
    ["train/acc_4x/", "kspace_volus_4x"],
    ("zero-slices",),
    "-kspace",
    victim="kspace_volus_4x",
  )
)

MODULES = {name: f"kdmri_jax.{name}" for name in ("valid", "evaluate", "prepare", "main")}


def test_the_table_covers_every_reading_command_and_fault():
  assert {case[1] for case in CASES} == set(MODULES)
  for command in MODULES:
    words = {fragment for case in CASES if case[1] == command for fragment in case[3]}
    assert set(FAULT_WORDS.values()) <= words, command
  assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,command,setup,fragments", CASES, ids=[c[0] for c in CASES])
def test_malformed_data_is_one_sentence_and_touches_no_output(
  world, out, tmp_path, capsys, monkeypatch, case_id, command, setup, fragments
):
  monkeypatch.chdir(REPO)
  argv = [str(a) for a in setup(world, tmp_path)]
  before, world_before = tree_hash(out), tree_hash(world)
  capsys.readouterr()
  status = run_cli(importlib.import_module(MODULES[command]).main, argv)
  assert_one_line_error(status, capsys.readouterr().err, *fragments)
  assert status == 2
  assert tree_hash(out) == before, f"{case_id} changed the existing outputs in {out}"
  assert tree_hash(world) == world_before, f"{case_id} changed its inputs"


def test_a_corrupt_chunk_read_slice_by_slice_is_one_sentence(world, tmp_path):
  """A dataset too large for memory is read slice by slice during training: the same sentence."""
  from kdmri_jax.data.sources import ReferenceSource
  from kdmri_jax.errors import InputError

  path = write_faulty(
    tmp_path / "vol.h5",
    read_all(world / "data" / "vol_a.h5"),
    "kspace_volus_4x",
    "corrupt-chunk",
    slice_axis=-1,
  )
  source = ReferenceSource([str(path)], "4x", None, max_memory_bytes=0)  # the header is fine
  sentence = r"vol\.h5: dataset 'kspace_volus_4x' cannot be read .*damaged"
  with pytest.raises(InputError, match=sentence):
    source[0]


SUBPROCESS_CASES = ["valid-corrupt-chunk", "evaluate-bool", "prepare-group", "main-zero-slices"]


def test_real_entry_points_refuse_malformed_data(world, tmp_path):
  """`python -m kdmri_jax.<command>`: one line, status 2, outputs untouched; one case a command."""
  cases = {case[0]: case for case in CASES}
  assert {cases[c][1] for c in SUBPROCESS_CASES} == set(MODULES)
  assert_entry_points_refuse(CASES, SUBPROCESS_CASES, MODULES, world, tmp_path, workers=2)
