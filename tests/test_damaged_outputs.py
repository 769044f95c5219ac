"""A damaged output of `export` and `prepare` (truncated, of the wrong content, half-written by a
killed run) is named in one warning line, moved aside to `<out>.damaged-<unix time>` and written
again (`outputs.check_existing`); a whole one, or a path that is not the command's output, is
refused unless --overwrite; bad input leaves a damaged output where it is. What a killed `prepare`
left beside its --out is cleaned up first (`writer.clear_leftovers`). One real `python -m`
subprocess per command, the other cases in-process."""

from __future__ import annotations

import glob
import os
import re

import h5py
import numpy as np
import pytest

from helpers import phantom_argv, run_module, save_unread_checkpoint, tree_hash
from kdmri_jax import export, prepare
from kdmri_jax.data import writer
from kdmri_jax.errors import run_cli

WARNING = re.compile(
  r"warning: (?P<out>\S+) is damaged \((?P<reason>.+)\); moved it to "
  r"(?P<aside>\S+\.damaged-\d+(-\d+)?); writing it again\."
)


def moved_aside(stdout: str, out) -> tuple[str, str]:
  """(reason, aside path) of the one warning line about `out`."""
  found = [m for m in map(WARNING.fullmatch, stdout.splitlines()) if m]
  assert len(found) == 1 and found[0]["out"] == str(out), stdout
  return found[0]["reason"], found[0]["aside"]


def truncate(path, keep: float = 0.5) -> bytes:
  """Cuts file `path` to `keep` of its length; returns what is left."""
  data = open(path, "rb").read()[: int(os.path.getsize(path) * keep)]
  open(path, "wb").write(data)
  return data


# --- export ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("export") / "student_ckpt"
  save_unread_checkpoint(path)
  return str(path)


def export_argv(checkpoint, out, fmt="jax"):
  return [
    "--checkpoint",
    checkpoint,
    "--model",
    "student",
    "--shape",
    "8",
    "8",
    "--out",
    str(out),
    "--format",
    fmt,
  ]


def assert_whole_export(out, fmt):
  assert export.export_damage(str(out), fmt) is None
  if fmt == "jax":
    assert export.load_jax(out).in_avals[0].shape == (1, 8, 8)


def test_a_truncated_export_is_moved_aside_and_written_again_by_the_real_command(
  checkpoint, tmp_path
):
  out = tmp_path / "student.jax"
  assert run_cli(export.main, export_argv(checkpoint, out)) == 0
  left = truncate(out)
  assert export.export_damage(str(out), "jax") is not None
  result = run_module("kdmri_jax.export", export_argv(checkpoint, out))
  assert result.returncode == 0, result.stderr
  reason, aside = moved_aside(result.stdout, out)
  assert "while reading it" in reason and open(aside, "rb").read() == left
  assert_whole_export(out, "jax")


def _empty(path):
  open(path, "wb").close()


def _garbage(path):
  open(path, "wb").write(np.random.default_rng(0).bytes(300))


@pytest.mark.parametrize(
  "fmt, damage, reason",
  [("jax", _empty, "empty"), ("jax", _garbage, "while reading it"), ("onnx", truncate, "reading")],
)
def test_a_damaged_export_of_either_format(checkpoint, tmp_path, capsys, fmt, damage, reason):
  out = tmp_path / f"student.{fmt}"
  assert run_cli(export.main, export_argv(checkpoint, out, fmt)) == 0
  damage(out)
  before = tree_hash(out)
  capsys.readouterr()
  assert run_cli(export.main, export_argv(checkpoint, out, fmt)) == 0
  said, aside = moved_aside(capsys.readouterr().out, out)
  assert reason in said and tree_hash(aside) == before
  assert_whole_export(out, fmt)
  # The export written again is whole: refused without --overwrite, untouched.
  whole = tree_hash(out)
  assert run_cli(export.main, export_argv(checkpoint, out, fmt)) == 2
  assert "already exists" in capsys.readouterr().err and tree_hash(out) == whole


def test_export_refuses_before_moving_a_damaged_file_aside(checkpoint, tmp_path, capsys):
  """A missing checkpoint is refused with the damaged export where it was; a file not named like an
  export is not the command's: refused, untouched."""
  out = tmp_path / "student.jax"
  _garbage(out)
  before = tree_hash(tmp_path)
  assert run_cli(export.main, export_argv(str(tmp_path / "gone"), out)) == 2
  assert "gone" in capsys.readouterr().err and tree_hash(tmp_path) == before
  notes = tmp_path / "notes.txt"
  notes.write_text("not an export\n")
  assert run_cli(export.main, export_argv(checkpoint, notes)) == 2
  assert "already exists" in capsys.readouterr().err and notes.read_text() == "not an export\n"


# --- prepare --------------------------------------------------------------------------------------


def prepared(tmp_path, name="root"):
  """A whole 3-phantom dataset at tmp_path/name."""
  out = tmp_path / name
  assert run_cli(prepare.main, phantom_argv(out, size=16)) == 0
  assert writer.damage(str(out)) is None
  return out


def first(out, pattern):
  return sorted(glob.glob(os.path.join(out, pattern)))[0]


def test_a_truncated_h5_file_is_named_and_the_dataset_prepared_again_by_the_real_command(tmp_path):
  out = prepared(tmp_path)
  volume = first(out, "train/acc_4x/*.h5")
  truncate(volume)
  damaged = tree_hash(out)
  result = run_module("kdmri_jax.prepare", phantom_argv(out, size=16))
  assert result.returncode == 0, result.stderr
  reason, aside = moved_aside(result.stdout, out)
  assert reason == f"{os.path.relpath(volume, out)} is not readable: OSError"
  assert tree_hash(aside) == damaged and writer.damage(str(out)) is None


def _no_manifest(out):  # half-written: the folders, no manifest
  os.remove(os.path.join(out, "manifest.json"))
  return "it has no manifest.json"


def _truncated_manifest(out):
  truncate(os.path.join(out, "manifest.json"))
  return "manifest.json is not readable: JSONDecodeError"


def _missing_volume(out):
  volume = first(out, "validation/acc_4x/*.h5")
  os.remove(volume)
  return f"{os.path.relpath(volume, out)} is missing"


def _wrong_content(out):  # an h5 file of another shape, without the zero-filled image
  volume = first(out, "train/acc_4x/*.h5")
  with h5py.File(volume, "w") as h5file:
    h5file["volfs"] = np.zeros((4, 4, 1), np.float32)
  return f"{os.path.relpath(volume, out)} has no 'volfs' dataset of shape"


def _truncated_mask(out):
  truncate(os.path.join(out, "masks", "mask_4x.npy"))
  return "masks/mask_4x.npy is not readable"


@pytest.mark.parametrize(
  "damage", [_no_manifest, _truncated_manifest, _missing_volume, _wrong_content, _truncated_mask]
)
def test_a_damaged_dataset_is_moved_aside_and_prepared_again(tmp_path, capsys, damage):
  out = prepared(tmp_path)
  expected = damage(str(out))
  before = tree_hash(out)
  capsys.readouterr()
  assert run_cli(prepare.main, phantom_argv(out, size=16)) == 0
  reason, aside = moved_aside(capsys.readouterr().out, out)
  assert reason.startswith(expected) and tree_hash(aside) == before
  assert writer.damage(str(out)) is None


def test_prepare_refuses_bad_input_before_moving_a_damaged_dataset(tmp_path, capsys):
  out = prepared(tmp_path)
  _truncated_manifest(str(out))
  before = tree_hash(tmp_path)
  assert run_cli(prepare.main, phantom_argv(out, "--split", "1.5", size=16)) == 2
  assert "--split" in capsys.readouterr().err and tree_hash(tmp_path) == before


def killed_staging(out) -> str:
  """The staging folder a prepare run killed while writing `out` leaves (its lock released)."""
  staging, _, fd = writer._stage(os.path.abspath(out))
  os.makedirs(os.path.join(staging, "train", "acc_4x"))
  open(os.path.join(staging, "train", "acc_4x", "half.h5"), "wb").write(b"\x89HDF")
  os.close(fd)  # the process died: the kernel drops its lock
  return staging


def test_what_a_killed_prepare_left_is_cleaned_up(tmp_path, capsys):
  """A half-written staging folder is removed; one whose run still lives is left alone."""
  out = tmp_path / "root"
  staging = killed_staging(out)
  living, living_lock, fd = writer._stage(str(out))
  try:
    assert run_cli(prepare.main, phantom_argv(out, size=16)) == 0
    said = capsys.readouterr().out
    assert (
      f"warning: removed {staging}, a half-written dataset of a prepare run that was killed."
      in said.splitlines()
    )
    assert not os.path.exists(staging) and not os.path.exists(staging + ".lock")
    assert os.path.isdir(living) and os.path.exists(living_lock) and living not in said
    assert writer.damage(str(out)) is None
  finally:
    os.close(fd)


@pytest.mark.parametrize("published", [False, True])
def test_a_prepare_killed_while_replacing_a_dataset(tmp_path, capsys, published):
  """Killed between its renames (`published=False`): the dataset it replaced is put back; killed
  after (`True`): the replaced one is removed. Either way the dataset at --out is then whole, so
  refused without --overwrite."""
  old = prepared(tmp_path, "previous")
  whole = tree_hash(old)
  out = tmp_path / "root"
  staging = killed_staging(out)
  os.rename(old, staging + ".old")
  if published:
    os.rename(prepared(tmp_path, "new"), out)
  now = tree_hash(out)
  capsys.readouterr()
  assert run_cli(prepare.main, phantom_argv(out, size=16)) == 2
  captured = capsys.readouterr()
  assert "already exists" in captured.err
  assert not os.path.exists(staging + ".old") and not os.path.exists(staging)
  if published:
    assert f"warning: removed {staging}.old" in captured.out and tree_hash(out) == now
  else:
    assert f"put the dataset it was replacing back there from {staging}.old" in captured.out
    assert tree_hash(out) == whole
