"""Every command meets bad input with one sentence, a non-zero exit and its existing outputs
untouched.

One table (`CASES`) of bad inputs over `main`, `prepare`, `valid`, `evaluate`, `convert`, `export`
and `benchmark`, run in-process through each module's `main(argv)` via `run_cli` (as `python -m`
does), and a handful again through the real entry points in subprocesses. Each case points the
command's output at a folder that already holds earlier results; the folder's hash must not change.
"""

from __future__ import annotations

import importlib
import os
import shutil

import h5py
import jax
import numpy as np
import pytest

from helpers import (
  assert_entry_points_refuse,
  assert_one_line_error,
  phantom_argv,
  prepare_argv,
  short_main_argv,
  tree_hash,
)
from kdmri_jax import checkpoints, masks, models
from kdmri_jax.data import reference
from kdmri_jax.errors import run_cli

SHAPE = (24, 20)


# --- the good inputs every bad one is made from ---------------------------------------------------


def _write_h5(path, **datasets):
  with h5py.File(path, "w") as f:
    for key, value in datasets.items():
      f.create_dataset(key, data=value)
  return path


def _save_model(path, name, **overrides):
  """A checkpoint of model `name` holding zeros of its parameters' shapes (no case reads the
  values; `jax.eval_shape` spares the initialisation)."""
  model = models.build_model(name, **overrides)
  shapes = jax.eval_shape(lambda: models.init_params(model, jax.random.PRNGKey(0), 8, 8))
  params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
  checkpoints.save_params(path, params, checkpoints.make_meta(name, model))
  return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """Good inputs: reference volumes, their mask, targets and predictions, a prepared data root and
  small teacher/student checkpoints; the bad inputs of the cases are written next to them."""
  root = tmp_path_factory.mktemp("bad_inputs")
  rng = np.random.default_rng(0)
  mask = masks.cartesian_mask(SHAPE, 4, seed=0)
  np.save(root / "mask_4x.npy", mask)
  for name in ("vol_a", "vol_b"):
    target = rng.random((3,) + SHAPE).astype(np.float32)
    kspace = np.fft.fft2(target, norm="ortho") * mask
    reference.write_volume(
      root / "data" / f"{name}.h5", target, np.abs(np.fft.ifft2(kspace, norm="ortho")), kspace, "4x"
    )
    (root / "predictions").mkdir(exist_ok=True)
    _write_h5(root / "predictions" / f"{name}.h5", reconstruction=target * 0.9)
  from kdmri_jax import prepare

  assert run_cli(prepare.main, phantom_argv(root / "root", "--slices", 4)) == 0
  _save_model(root / "student_ckpt", "student", num_cascades=1, features=4)
  _save_model(root / "teacher_ckpt", "teacher", num_cascades=1, features=4)
  (root / "volumes").mkdir()
  np.save(root / "volumes" / "v0.npy", rng.random((2, 16, 16)).astype(np.float32))
  return root


@pytest.fixture
def out(tmp_path):
  """An output folder that already holds earlier results (a report, a reconstruction, a
  checkpoint)."""
  folder = tmp_path / "outputs"
  (folder / "previous").mkdir(parents=True)
  (folder / "report.txt").write_text("HFN = 1 +/- 0 earlier results\n")
  _write_h5(folder / "previous" / "vol_x.h5", reconstruction=np.ones((1, 4, 4), np.float32))
  (folder / "config.json").write_text('{"earlier": "run"}\n')
  return folder


# --- the table ------------------------------------------------------------------------------------
# (id, command, setup(world, tmp) -> argv, fragments the one error line must contain)
# setup gets `w` (the world folder) and `t` (this case's scratch folder); outputs go to `t/outputs`.


def _valid(w, t, **change):
  argv = {
    "--checkpoint": w / "student_ckpt",
    "--data-path": w / "data",
    "--mask": w / "mask_4x.npy",
    "--out-dir": t / "outputs",
  }
  argv.update(change)
  return [str(x) for kv in argv.items() if kv[1] is not None for x in kv]


def _bad_volume(t, **datasets):
  folder = t / "bad_data"
  folder.mkdir(exist_ok=True)
  _write_h5(folder / "vol.h5", **datasets)
  return folder


def _good_volume_arrays(w):
  volume = reference.read_volume(w / "data" / "vol_a.h5")
  layout = lambda a: np.moveaxis(a, 0, -1)  # noqa: E731
  return {
    "volfs": layout(volume.target),
    "img_volus_4x": layout(volume.input),
    "kspace_volus_4x": layout(volume.kspace),
  }


def _without(arrays, key):
  return {k: v for k, v in arrays.items() if k != key}


def _evaluate(w, t, predictions=None, targets=None, **extra):
  argv = [
    "--target-path",
    str(targets or w / "data"),
    "--predictions-path",
    str(predictions or w / "predictions"),
    "--report-path",
    str(t / "outputs" / "new_report"),
  ]
  for key, value in extra.items():
    argv += [f"--{key.replace('_', '-')}", str(value)]
  return argv


def _bad_predictions(w, t, **datasets):
  folder = t / "bad_predictions"
  folder.mkdir(exist_ok=True)
  shutil.copy(w / "predictions" / "vol_a.h5", folder / "vol_a.h5")
  _write_h5(folder / "vol_b.h5", **datasets)
  return folder


def _npy(t, name, array):
  folder = t / "in"
  folder.mkdir(exist_ok=True)
  np.save(folder / name, array)
  return folder / name


def _mask_dir(t, array):
  folder = t / "masks"
  folder.mkdir(exist_ok=True)
  np.save(folder / "mask_4x.npy", array)
  return folder


def _prepare(w, t, *extra, input=None):  # noqa: A002
  return prepare_argv(input or w / "volumes", t / "outputs" / "new_root", *extra)


def _convert(t, torch_checkpoint, out="c"):
  """`convert` arguments: `torch_checkpoint` as a student checkpoint into `t/outputs/<out>` (the
  outputs folder itself for `out=None`)."""
  target = t / "outputs" if out is None else t / "outputs" / out
  return ["--torch-checkpoint", str(torch_checkpoint), "--model", "student", "--out", str(target)]


def _export(t, checkpoint, model="student", shape=(24, 24), out="m.jax"):
  """`export` arguments: `checkpoint` as `model` at `shape` into `t/outputs/<out>`."""
  height, width = shape
  return [
    "--checkpoint",
    str(checkpoint),
    "--model",
    model,
    "--shape",
    str(height),
    str(width),
    "--out",
    str(t / "outputs" / out),
  ]


def _main(w, t, *extra, root=True):
  root_field = [f"--config.data.root={w / 'root'}"] if root else []
  return short_main_argv(t / "outputs", *root_field, *extra)


def _garbage(t, name, content=b"\x00garbage\xff" * 100):
  path = t / name
  path.write_bytes(content)
  return path


def _truncated_checkpoint(w, t):
  """A copy of the student checkpoint whose parameter files are cut to half their length."""
  copy = t / "truncated_ckpt"
  shutil.copytree(w / "student_ckpt", copy)
  for folder, _, files in os.walk(copy):
    if os.sep + "params" in folder:
      for name in files:
        path = os.path.join(folder, name)
        if name not in ("commit_success.txt",):
          with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
  return copy


def _torch_save(t, name, obj):
  import torch

  path = t / name
  torch.save(obj, path)
  return path


CASES = [
  # --- prepare: paths, ranks, values, masks, accelerations ---
  (
    "prepare-missing-input",
    "prepare",
    lambda w, t: _prepare(w, t, input=t / "nope"),
    ["nope", "does not exist"],
  ),
  (
    "prepare-empty-folder",
    "prepare",
    lambda w, t: (t / "empty").mkdir() or _prepare(w, t, input=t / "empty"),
    ["empty", "no volume files"],
  ),
  (
    "prepare-rank-1",
    "prepare",
    lambda w, t: _prepare(w, t, input=_npy(t, "flat.npy", np.ones(16, np.float32))),
    ["flat.npy", "shape"],
  ),
  (
    "prepare-rank-4",
    "prepare",
    lambda w, t: _prepare(w, t, input=_npy(t, "r4.npy", np.ones((2, 2, 8, 8)))),
    ["r4.npy", "shape"],
  ),
  (
    "prepare-nan",
    "prepare",
    lambda w, t: _prepare(
      w, t, input=_npy(t, "nan.npy", np.where(np.eye(16) > 0, np.nan, 1.0)[None])
    ),
    ["nan.npy", "NaN"],
  ),
  (
    "prepare-all-zero",
    "prepare",
    lambda w, t: _prepare(w, t, input=_npy(t, "zero.npy", np.zeros((2, 8, 8)))),
    ["all zeros"],
  ),
  (
    "prepare-h5-missing-key",
    "prepare",
    lambda w, t: _prepare(
      w, t, "--key", "image", input=_write_h5(t / "k.h5", data=np.ones((2, 8, 8)))
    ),
    ["k.h5", "image"],
  ),
  (
    "prepare-not-h5",
    "prepare",
    lambda w, t: _prepare(w, t, input=_garbage(t, "junk.h5")),
    ["junk.h5"],
  ),
  (
    "prepare-mask-wrong-shape",
    "prepare",
    lambda w, t: _prepare(w, t, "--mask-dir", _mask_dir(t, np.ones((8, 8), np.float32))),
    ["mask", "shape"],
  ),
  (
    "prepare-mask-not-binary",
    "prepare",
    lambda w, t: _prepare(w, t, "--mask-dir", _mask_dir(t, np.full((16, 16), 0.5, np.float32))),
    ["not binary"],
  ),
  (
    "prepare-mask-empty",
    "prepare",
    lambda w, t: _prepare(w, t, "--mask-dir", _mask_dir(t, np.zeros((16, 16), np.float32))),
    ["samples no"],
  ),
  (
    "prepare-bad-acc",
    "prepare",
    lambda w, t: _prepare(w, t)[:5] + ["fourx"] + _prepare(w, t)[6:],
    ["fourx"],
  ),
  (
    "prepare-existing-out",
    "prepare",
    lambda w, t: _prepare(w, t)[:-1] + [str(t / "outputs")],
    ["already exists", "--overwrite"],
  ),
  # --- evaluate: folders, keys, ranks, complex, NaN, shapes, existing report ---
  (
    "evaluate-missing-target",
    "evaluate",
    lambda w, t: _evaluate(w, t, targets=t / "nowhere"),
    ["nowhere"],
  ),
  (
    "evaluate-no-h5",
    "evaluate",
    lambda w, t: (t / "e").mkdir() or _evaluate(w, t, targets=t / "e"),
    ["no .h5 files"],
  ),
  (
    "evaluate-missing-prediction",
    "evaluate",
    lambda w, t: _evaluate(
      w,
      t,
      predictions=_bad_predictions(w, t, reconstruction=np.ones((3,) + SHAPE))
      .joinpath("vol_b.h5")
      .unlink()
      or t / "bad_predictions",
    ),
    ["vol_b.h5", "missing"],
  ),
  (
    "evaluate-missing-key",
    "evaluate",
    lambda w, t: _evaluate(w, t, predictions=_bad_predictions(w, t, recon=np.ones((3,) + SHAPE))),
    ["vol_b.h5", "reconstruction"],
  ),
  (
    "evaluate-wrong-shape",
    "evaluate",
    lambda w, t: _evaluate(
      w, t, predictions=_bad_predictions(w, t, reconstruction=np.ones((3, 20, 24)))
    ),
    ["vol_b.h5", "shape"],
  ),
  (
    "evaluate-wrong-rank",
    "evaluate",
    lambda w, t: _evaluate(
      w, t, predictions=_bad_predictions(w, t, reconstruction=np.ones((1, 3) + SHAPE))
    ),
    ["vol_b.h5", "axes"],
  ),
  (
    "evaluate-complex",
    "evaluate",
    lambda w, t: _evaluate(
      w, t, predictions=_bad_predictions(w, t, reconstruction=np.ones((3,) + SHAPE) * 1j)
    ),
    ["vol_b.h5", "complex"],
  ),
  (
    "evaluate-inf",
    "evaluate",
    lambda w, t: _evaluate(
      w, t, predictions=_bad_predictions(w, t, reconstruction=np.full((3,) + SHAPE, np.inf))
    ),
    ["vol_b.h5", "NaN or inf"],
  ),
  (
    "evaluate-garbage-h5",
    "evaluate",
    lambda w, t: _bad_predictions(w, t, x=0)
    and _garbage(t / "bad_predictions", "vol_b.h5")
    and _evaluate(w, t, predictions=t / "bad_predictions"),
    ["vol_b.h5", "HDF5"],
  ),
  (
    "evaluate-existing-report",
    "evaluate",
    lambda w, t: _evaluate(w, t)[:-1] + [str(t / "outputs")],
    ["report.txt", "already exists"],
  ),
  # --- valid: checkpoints, h5 keys and types, masks, accelerations ---
  (
    "valid-missing-checkpoint",
    "valid",
    lambda w, t: _valid(w, t, **{"--checkpoint": t / "no_ckpt"}),
    ["no_ckpt", "does not exist"],
  ),
  (
    "valid-checkpoint-garbage-folder",
    "valid",
    lambda w, t: (t / "junk_ckpt").mkdir()
    or _garbage(t / "junk_ckpt", "checkpoint.pt")
    and _valid(w, t, **{"--checkpoint": t / "junk_ckpt"}),
    ["junk_ckpt", "no kdmri_jax checkpoint"],
  ),
  (
    "valid-checkpoint-truncated",
    "valid",
    lambda w, t: _valid(w, t, **{"--checkpoint": _truncated_checkpoint(w, t)}),
    ["truncated_ckpt", "unreadable"],
  ),
  (
    "valid-missing-kspace-key",
    "valid",
    lambda w, t: _valid(
      w, t, **{"--data-path": _bad_volume(t, **_without(_good_volume_arrays(w), "kspace_volus_4x"))}
    ),
    ["vol.h5", "kspace_volus_4x"],
  ),
  (
    "valid-mistyped-image",
    "valid",
    lambda w, t: _valid(
      w,
      t,
      **{
        "--data-path": _bad_volume(
          t, **{**_good_volume_arrays(w), "img_volus_4x": np.full(SHAPE + (3,), b"x")}
        )
      },
    ),
    ["vol.h5", "img_volus_4x"],
  ),
  (
    "valid-complex-image",
    "valid",
    lambda w, t: _valid(
      w,
      t,
      **{
        "--data-path": _bad_volume(
          t,
          **{**_good_volume_arrays(w), "img_volus_4x": _good_volume_arrays(w)["img_volus_4x"] * 1j},
        )
      },
    ),
    ["vol.h5", "img_volus_4x"],
  ),
  (
    "valid-real-kspace",
    "valid",
    lambda w, t: _valid(
      w,
      t,
      **{
        "--data-path": _bad_volume(
          t, **{**_good_volume_arrays(w), "kspace_volus_4x": np.ones(SHAPE + (3,), np.float32)}
        )
      },
    ),
    ["vol.h5", "kspace_volus_4x", "real"],
  ),
  (
    "valid-nan-kspace",
    "valid",
    lambda w, t: _valid(
      w,
      t,
      **{
        "--data-path": _bad_volume(
          t,
          **{
            **_good_volume_arrays(w),
            "kspace_volus_4x": np.full(SHAPE + (3,), np.nan, np.complex64),
          },
        )
      },
    ),
    ["vol.h5", "NaN"],
  ),
  (
    "valid-mask-wrong-shape",
    "valid",
    lambda w, t: _valid(w, t, **{"--mask": _npy(t, "m.npy", masks.cartesian_mask((20, 24), 4))}),
    ["m.npy", "shape"],
  ),
  (
    "valid-mask-not-binary",
    "valid",
    lambda w, t: _valid(w, t, **{"--mask": _npy(t, "m.npy", np.full(SHAPE, 0.25, np.float32))}),
    ["m.npy", "not binary"],
  ),
  (
    "valid-mask-empty",
    "valid",
    lambda w, t: _valid(w, t, **{"--mask": _npy(t, "m.npy", np.zeros(SHAPE))}),
    ["m.npy", "samples no"],
  ),
  (
    "valid-mask-not-npy",
    "valid",
    lambda w, t: _valid(w, t, **{"--mask": _garbage(t, "m.npy")}),
    ["m.npy", "not a readable .npy"],
  ),
  ("valid-no-mask", "valid", lambda w, t: _valid(w, t, **{"--mask": None}), ["--mask"]),
  (
    "valid-acc-not-in-data",
    "valid",
    lambda w, t: _valid(w, t, **{"--acc": "8x"}),
    ["img_volus_8x", "4x"],
  ),
  (
    "valid-out-dir-is-file",
    "valid",
    lambda w, t: _valid(w, t, **{"--out-dir": t / "outputs" / "report.txt"}),
    ["report.txt", "is a file"],
  ),
  # --- convert: files that are not PyTorch checkpoints ---
  (
    "convert-missing",
    "convert",
    lambda w, t: _convert(t, t / "none.pt"),
    ["none.pt", "does not exist"],
  ),
  (
    "convert-garbage",
    "convert",
    lambda w, t: _convert(t, _garbage(t, "g.pt")),
    ["g.pt", "not a PyTorch checkpoint"],
  ),
  (
    "convert-npy",
    "convert",
    lambda w, t: _convert(t, _npy(t, "w.npy", np.ones(3))),
    ["w.npy", "not a PyTorch checkpoint"],
  ),
  (
    "convert-no-state-dict",
    "convert",
    lambda w, t: _convert(t, _torch_save(t, "d.pt", {"epoch": 3, "lr": 0.1})),
    ["d.pt", "state_dict"],
  ),
  (
    "convert-wrong-model",
    "convert",
    lambda w, t: _convert(
      t, _torch_save(t, "s.pt", {"model": {"bogus.weight": __import__("torch").ones(3)}})
    ),
    ["s.pt", "student"],
  ),
  (
    "convert-existing-out",
    "convert",
    lambda w, t: _convert(t, _garbage(t, "g.pt"), out=None),
    ["already exists"],
  ),
  # --- export: another model's checkpoint, shapes ---
  (
    "export-other-model",
    "export",
    lambda w, t: _export(t, w / "student_ckpt", model="teacher"),
    ["student_ckpt", "'student'", "'teacher'"],
  ),
  (
    "export-bad-shape",
    "export",
    lambda w, t: _export(t, w / "student_ckpt", shape=(0, 24)),
    ["--shape", "positive"],
  ),
  (
    "export-missing-checkpoint",
    "export",
    lambda w, t: _export(t, t / "gone"),
    ["gone", "does not exist"],
  ),
  (
    "export-existing-out",
    "export",
    lambda w, t: _export(t, w / "student_ckpt", out="report.txt"),
    ["report.txt", "already exists"],
  ),
  # --- benchmark: names and shapes ---
  (
    "benchmark-unknown-model",
    "benchmark",
    lambda w, t: ["--models", "unet", "--json", str(t / "outputs" / "b.json")],
    ["unet"],
  ),
  (
    "benchmark-bad-shape",
    "benchmark",
    lambda w, t: ["--shapes", "24by24", "--no-peak"],
    ["24by24"],
  ),
  ("benchmark-unknown-mode", "benchmark", lambda w, t: ["--modes", "train", "export"], ["export"]),
  (
    "benchmark-existing-json",
    "benchmark",
    lambda w, t: ["--json", str(t / "outputs" / "report.txt"), "--repeats", "1"],
    ["report.txt", "already exists"],
  ),
  # --- main: config files, field typos and types, data, masks, stages, checkpoints ---
  (
    "main-missing-config",
    "main",
    lambda w, t: ["--config", str(t / "nope.py")],
    ["nope.py", "does not exist"],
  ),
  (
    "main-field-typo",
    "main",
    lambda w, t: _main(w, t, "--config.train.num_epoch=2"),
    ["num_epoch"],
  ),
  ("main-wrong-type", "main", lambda w, t: _main(w, t, "--config.train.num_epochs=many"), ["many"]),
  (
    "main-unknown-stage",
    "main",
    lambda w, t: _main(w, t, "--config.stages=teacher,distil"),
    ["distil"],
  ),
  (
    "main-unknown-model",
    "main",
    lambda w, t: _main(w, t, "--config.models.teacher=unet"),
    ["unet"],
  ),
  (
    "main-missing-root",
    "main",
    lambda w, t: _main(w, t, f"--config.data.root={t / 'no_root'}", root=False),
    ["no_root", "does not exist"],
  ),
  ("main-acc-not-in-data", "main", lambda w, t: _main(w, t, "--config.acc=8x"), ["acc_8x", "4x"]),
  (
    "main-mask-wrong-shape",
    "main",
    lambda w, t: _main(
      w, t, f"--config.data.mask_path={_npy(t, 'm.npy', np.ones((8, 8), np.float32))}"
    ),
    ["m.npy", "shape"],
  ),
  (
    "main-knee-without-root",
    "main",
    lambda w, t: _main(w, t, "--config.dataset=knee", root=False),
    ["knee", "config.data.root"],
  ),
  (
    "main-missing-teacher",
    "main",
    lambda w, t: _main(w, t, "--config.stages=feature"),
    ["feature", "teacher"],
  ),
  (
    "main-unknown-feature-loss",
    "main",
    lambda w, t: shutil.copytree(w / "teacher_ckpt", t / "outputs" / "teacher" / "best")
    and _main(w, t, "--config.stages=feature", "--config.kd.feature_loss=cosine"),
    ["cosine"],
  ),
  (
    "main-bad-layer-pairs",
    "main",
    lambda w, t: shutil.copytree(w / "teacher_ckpt", t / "outputs" / "teacher" / "best")
    and _main(w, t, "--config.stages=feature", "--config.kd.layer_pairs=0.2-0.1"),
    ["layer_pairs", "0.2-0.1"],
  ),
]

MODULES = {
  name: f"kdmri_jax.{name}"
  for name in ("main", "prepare", "valid", "evaluate", "convert", "export", "benchmark")
}


def test_the_table_covers_every_command_and_at_least_25_inputs():
  assert {case[1] for case in CASES} == set(MODULES)
  assert len(CASES) >= 25 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,command,setup,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_and_touches_no_output(
  world, out, tmp_path, capsys, monkeypatch, case_id, command, setup, fragments
):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  argv = setup(world, tmp_path)
  before, world_before = tree_hash(out), tree_hash(world)
  capsys.readouterr()
  status = run_cli(importlib.import_module(MODULES[command]).main, [str(a) for a in argv])
  captured = capsys.readouterr()
  assert_one_line_error(status, captured.err, *fragments)
  assert tree_hash(out) == before, f"{case_id} changed the existing outputs in {out}"
  assert tree_hash(world) == world_before, f"{case_id} changed its inputs"


MAIN_CASES = [
  case
  for case in CASES
  if case[0] in ("main-unknown-model", "main-missing-root", "main-acc-not-in-data")
]


@pytest.mark.parametrize(
  "case_id,command,setup,fragments", MAIN_CASES, ids=[c[0] for c in MAIN_CASES]
)
def test_main_refusal_keeps_the_earlier_config_json(
  world, out, tmp_path, capsys, monkeypatch, case_id, command, setup, fragments
):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  argv = setup(world, tmp_path)
  before = (out / "config.json").read_text()
  from kdmri_jax import main

  assert run_cli(main.main, [str(a) for a in argv]) == 2
  assert (out / "config.json").read_text() == before


def test_main_checks_the_feature_loss_before_training_anything(
  world, out, tmp_path, capsys, monkeypatch
):
  from kdmri_jax import main, train

  def no_training(*args, **kwargs):
    raise AssertionError("a stage started training before the config was checked")

  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  monkeypatch.setattr(train, "fit", no_training)
  status = run_cli(
    main.main,
    _main(world, tmp_path, "--config.stages=teacher,feature", "--config.kd.feature_loss=cosine"),
  )
  assert_one_line_error(status, capsys.readouterr().err, "cosine")


def test_debug_flag_shows_the_traceback(world, tmp_path):
  from kdmri_jax import evaluate
  from kdmri_jax.errors import InputError

  with pytest.raises(InputError, match="nowhere"):
    run_cli(evaluate.main, _evaluate(world, tmp_path, targets=tmp_path / "nowhere") + ["--debug"])


SUBPROCESS_CASES = [
  "main-field-typo",
  "prepare-nan",
  "evaluate-complex",
  "valid-mask-wrong-shape",
  "convert-garbage",
  "export-other-model",
  "benchmark-unknown-model",
]


def test_real_entry_points_print_one_line_and_exit_2(world, tmp_path):
  """`python -m kdmri_jax.<command>`: the same refusals from the real entry points, one line, status
  2."""
  assert_entry_points_refuse(
    CASES, SUBPROCESS_CASES, MODULES, world, tmp_path, workers=len(SUBPROCESS_CASES)
  )
