"""A stage records what it was made with, and what the pipeline reads back is checked (issue 15).

On copies of conftest.py's tiny uninterrupted run (`uninterrupted_runs`: the teacher stage, 2
epochs of 4 steps), through `main.main` in this process (reading the tiny runs' compilation cache)
and, for the refusal of another model, `python -m kdmri_jax.main`:
- a rerun whose model, data or objective differs from a finished or in-progress stage is refused in
  one sentence naming the field, both values and what to do, and changes nothing;
- a damaged best/ is named, moved aside and rebuilt bit-identical from the training checkpoints, or
  refused in one sentence when the checkpoint it needs is gone;
- damaged results and report files are named, moved aside and recomputed (or refused in one
  sentence);
- a stage made before records existed still refuses another model shape in one sentence.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import pytest

from helpers import (
  assert_one_line_error,
  assert_same_state,
  compilation_cache,
  run_module,
  stage_state,
  subprocess_env,
  tiny_main_argv,
  tree_hash,
)


@pytest.fixture(scope="module", autouse=True)
def _cached_compiles(tiny_run_dirs):
  """The in-process runs read the compiles of the tiny runs' persistent cache (the same programs)
  and keep their own there."""
  with compilation_cache(tiny_run_dirs[1]):
    yield


@pytest.fixture
def teacher_run(uninterrupted_runs, tmp_path):
  """A copy of the finished tiny teacher run."""
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted_runs[0], workdir)
  return workdir


def _main(workdir, data_cache, capsys, **overrides):
  """`main.main` in this process: (exit status, stdout, stderr)."""
  from kdmri_jax import main
  from kdmri_jax.errors import run_cli

  capsys.readouterr()
  status = run_cli(main.main, tiny_main_argv(workdir, data_cache, **overrides))
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def _garbage(path):
  """Overwrites every file under `path` (a file or folder) with bytes that are no checkpoint or
  JSON."""
  files = (
    [path]
    if os.path.isfile(path)
    else [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
  )
  for name in files:
    with open(name, "wb") as f:
      f.write(b"\x00not what was written\xff" * 5)


def _best_step(workdir):
  with open(os.path.join(workdir, "teacher", "done")) as f:
    return json.load(f)["best_step"]


def _kept_steps(workdir):
  folder = os.path.join(workdir, "teacher", "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


# --- a config that differs from the record --------------------------------------------------------


def test_a_rerun_with_another_model_is_refused_in_one_sentence_and_changes_nothing(
  teacher_run, tiny_run_dirs
):
  data_cache, xla_cache = tiny_run_dirs
  with open(teacher_run / "teacher" / "stage_config.json") as f:
    fields = json.load(f)["fields"]
  assert (
    fields["models.num_cascades"],
    fields["models.features"],
    fields["data.image_size"],
    fields["acc"],
    fields["train.loss"],
  ) == (1, 4, 32, "4x", "l1")
  before = tree_hash(teacher_run)
  argv = tiny_main_argv(teacher_run, data_cache, models__num_cascades=2)
  result = run_module("kdmri_jax.main", argv, env=subprocess_env(xla_cache))
  assert result.returncode == 2
  assert_one_line_error(
    result.returncode,
    result.stderr,
    "config.models.num_cascades=1",
    "config.models.num_cascades=2",
    "another --workdir",
    f"delete {teacher_run / 'teacher'}",
  )
  assert tree_hash(teacher_run) == before


@pytest.mark.parametrize(
  "field, value, recorded",
  [
    ("models.features", 8, "4"),
    ("data.image_size", 16, "32"),
    ("data.mask_seed", 7, "172"),
    ("data.mask_family", "gaussian", '"dccnn"'),
    ("train.loss", "l2", '"l1"'),
    ("acc", "8x", '"4x"'),
  ],
)
def test_a_stage_in_progress_refuses_another_model_data_or_objective(
  field, value, recorded, teacher_run, tiny_run_dirs, capsys
):
  os.remove(teacher_run / "teacher" / "done")  # checkpoints, no `done`: a stage in progress
  before = tree_hash(teacher_run)
  status, _, err = _main(teacher_run, tiny_run_dirs[0], capsys, **{field.replace(".", "__"): value})
  shown = json.dumps(value)
  assert_one_line_error(
    status,
    err,
    f"stage 'teacher' in {teacher_run / 'teacher'} was made with "
    f"config.{field}={recorded}, but this run has "
    f"config.{field}={shown}",
  )
  assert status == 2 and tree_hash(teacher_run) == before


def test_a_stage_without_a_record_still_refuses_another_model_shape(
  teacher_run, tiny_run_dirs, capsys
):
  """A stage made before records existed: its training state's and best model's shapes are
  checked."""
  os.remove(teacher_run / "teacher" / "stage_config.json")
  before = tree_hash(teacher_run / "teacher", ignore=["done"])
  status, _, err = _main(
    teacher_run,
    tiny_run_dirs[0],
    capsys,
    stages="evaluate",
    evaluate__stages="teacher",
    models__features=8,
  )
  assert_one_line_error(
    status,
    err,
    f"{teacher_run / 'teacher' / 'best'} holds a 'teacher' model "
    f"with features=4, but this config builds features=8",
  )
  assert tree_hash(teacher_run / "teacher", ignore=["done"]) == before
  os.remove(teacher_run / "teacher" / "done")
  status, _, err = _main(teacher_run, tiny_run_dirs[0], capsys, models__features=8)
  assert_one_line_error(
    status,
    err,
    "holds a training state of another model or objective",
    f"{teacher_run / 'teacher' / 'checkpoints'}/",
  )
  assert tree_hash(teacher_run / "teacher", ignore=["done"]) == before
  assert not os.path.exists(teacher_run / "teacher" / "stage_config.json")  # no record guessed


def test_a_damaged_record_is_named_and_moved_aside(teacher_run, tiny_run_dirs, capsys):
  record = teacher_run / "teacher" / "stage_config.json"
  _garbage(record)
  status, out, _ = _main(teacher_run, tiny_run_dirs[0], capsys)
  assert status == 0
  assert f"warning: {record} is damaged" in out and "teacher: already done" in out
  assert len(glob.glob(f"{record}.damaged-*")) == 1 and not record.exists()


# --- a damaged best model -------------------------------------------------------------------------


def test_a_damaged_best_model_is_named_moved_aside_and_rebuilt_bit_identical(
  teacher_run, tiny_run_dirs, uninterrupted_runs, capsys
):
  best, step = teacher_run / "teacher" / "best", _best_step(teacher_run)
  assert step in _kept_steps(teacher_run)
  _garbage(best)
  status, out, err = _main(teacher_run, tiny_run_dirs[0], capsys)
  assert status == 0, out[-2000:] + err[-2000:]
  assert f"warning: {best} is damaged (" in out and "moved it to" in out
  assert (
    f"teacher: resuming in {teacher_run / 'teacher'} from step 8 (the end of epoch 2/2); "
    f"rebuilt best/ from the training checkpoint of step {step}"
  ) in out
  assert len(glob.glob(f"{best}.damaged-*")) == 1 and (teacher_run / "teacher" / "done").exists()
  assert_same_state(stage_state(teacher_run), stage_state(uninterrupted_runs[0]), "rebuilt best/")


def test_a_damaged_best_model_whose_checkpoint_is_gone_is_refused_in_one_sentence(
  teacher_run, tiny_run_dirs, capsys
):
  best, step = teacher_run / "teacher" / "best", _best_step(teacher_run)
  _garbage(best)
  if step in _kept_steps(teacher_run):  # then it resumes from an older step, whose best is gone
    shutil.rmtree(teacher_run / "teacher" / "checkpoints" / str(step))
  status, out, err = _main(teacher_run, tiny_run_dirs[0], capsys)
  assert f"warning: {best} is damaged" in out
  assert_one_line_error(
    status,
    err,
    f"{best} holds no best model",
    "is no longer kept in",
    f"delete {teacher_run / 'teacher'} to train the stage again",
  )


# --- damaged results and report -------------------------------------------------------------------


def test_damaged_results_and_report_are_named_moved_aside_and_recomputed(
  teacher_run, tiny_run_dirs, capsys
):
  data_cache = tiny_run_dirs[0]
  args = {"stages": "evaluate,report", "evaluate__stages": "teacher"}
  assert _main(teacher_run, data_cache, capsys, **args)[0] == 0
  results, report = teacher_run / "results", teacher_run / "report"
  written = {
    name: _content(results / name)
    for name in ("summary.json", "figure_slice.npz", "teacher/metrics.json")
  }
  for name in written:  # each damaged alone: named, moved aside, evaluation redone (same content)
    _garbage(results / name)
    status, out, err = _main(teacher_run, data_cache, capsys, **args)
    assert status == 0, err
    assert f"warning: {results / name} is damaged (" in out, out
    assert "evaluate: starting in" in out and "report: already done" in out
    assert len(glob.glob(f"{results / name}.damaged-*")) == 1
    assert _content(results / name) == written[name], name
  figure = report / "figure.png"
  with open(figure, "r+b") as f:
    f.truncate(os.path.getsize(figure) // 2)
  status, out, err = _main(teacher_run, data_cache, capsys, **args)
  assert status == 0 and f"warning: {figure} is damaged (" in out and "report: wrote" in out, err
  from PIL import Image

  with Image.open(figure) as image:
    image.load()
  # Only the report asked for, it and its evaluation damaged: named, moved aside, then one sentence.
  _garbage(results / "summary.json")
  _garbage(figure)
  status, out, err = _main(
    teacher_run, data_cache, capsys, stages="report", evaluate__stages="teacher"
  )
  assert f"warning: {results / 'summary.json'} is damaged (" in out
  assert_one_line_error(
    status, err, "stage 'report' needs the evaluate results", "--config.stages=evaluate"
  )
  # The evaluation records what it compared.
  status, _, err = _main(
    teacher_run, data_cache, capsys, stages="evaluate", evaluate__stages="teacher,student"
  )
  assert_one_line_error(
    status,
    err,
    'config.evaluate.stages="teacher", but this run has config.evaluate.stages="teacher,student"',
    f"delete {results}",
  )


def _content(path):
  """A file's bytes; an .npz file's arrays (its zip entries carry the time they were written)."""
  if str(path).endswith(".npz"):
    import numpy as np

    with np.load(path) as arrays:
      return {key: arrays[key].tobytes() for key in arrays.files}
  return path.read_bytes()


# --- what is recorded -----------------------------------------------------------------------------


def test_the_record_holds_the_fields_that_decide_a_stage():
  from configs import default, sr_vdsr
  from kdmri_jax import outputs

  config = default.get_config()
  kd = outputs.record_fields(config, "kd")
  assert {
    "models.student",
    "models.teacher",
    "kd.imitation",
    "kd.alpha",
    "kd.init_from",
    "acc",
    "data.mask_seed",
    "data.image_size",
  } <= set(kd)
  assert "kd.feature_loss" not in kd and "train.batch_size" not in kd and "data.root" not in kd
  config.kd.imitation, config.kd.kd_feature_weight = "authors_code", 0.5
  kd = outputs.record_fields(config, "kd")
  assert "kd.alpha" not in kd and kd["kd.feature_loss"] == "attention"
  assert "models.student_features" not in outputs.record_fields(config, "teacher")
  assert outputs.record_fields(config, "report") is None
  config.data.root = "/data/brain"  # given data: the embedded brain's fields decide nothing
  assert "data.image_size" not in outputs.record_fields(config, "student")
  sr = outputs.record_fields(sr_vdsr.get_config(), "teacher")
  assert sr["sr.keep"] == 64 and sr["models.teacher"] == "vdsr_teacher"
  assert "acc" not in sr and "data.mask_seed" not in sr
