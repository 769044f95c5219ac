"""Tests for kdmri_jax.pipeline: all six stages on tiny in-memory data, skipping, ordering and
helpers."""

from __future__ import annotations

import json
import os
import re

import h5py
import numpy as np
import pytest

from configs import default
from helpers import compilation_cache, tiny_config
from kdmri_jax import checkpoints, pipeline
from kdmri_jax.errors import InputError
from kdmri_jax.train_input import synthetic_source


@pytest.fixture(scope="module", autouse=True)
def _cached_compiles(compile_cache_dir):
  """Every stage jits its steps anew: identical programs are compiled once for the module."""
  with compilation_cache(compile_cache_dir):
    yield


def tiny_pipeline_config():
  return tiny_config(train__num_epochs=1, train__checkpoint_every_steps=0)


@pytest.fixture
def tiny_data(monkeypatch):
  sources = {"train": synthetic_source(6, seed=1), "validation": synthetic_source(3, seed=2)}
  monkeypatch.setattr(pipeline, "load_data", lambda config, split: sources[split])
  return sources


def test_all_stages_run_and_a_rerun_skips_them(tmp_path, tiny_data, capsys):
  config = tiny_pipeline_config()
  assert pipeline.run(config, str(tmp_path), command="test") == 0
  out = capsys.readouterr().out
  assert "kd: student initialised from the best feature checkpoint" in out
  for stage in pipeline.TRAINED_STAGES:
    assert os.path.exists(tmp_path / stage / "done")
    assert (tmp_path / stage / "log.txt").read_text().startswith(f"{stage} epoch 1/1")
    _, params, meta = checkpoints.load_params(tmp_path / stage)  # valid-style loading of best/
    assert meta["stage"] == stage and meta["model"] == (
      "teacher" if stage == "teacher" else "student"
    )
  for method in ("zf", "teacher", "student", "kd"):
    with h5py.File(tmp_path / "results" / method / "validation.h5") as f:
      assert f["reconstruction"].shape == (3, 16, 16)
    assert (
      json.loads((tmp_path / "results" / method / "metrics.json").read_text())["n_volumes"] == 1
    )
  with h5py.File(tmp_path / "results" / "zf" / "validation.h5") as f:
    np.testing.assert_array_equal(f["reconstruction"][1], tiny_data["validation"][1]["input"])
  report = (tmp_path / "report" / "report.md").read_text()
  for row in ("| ZF |", "| Teacher |", "| Student |", "| KD |"):
    assert row in report
  # which objective produced the table: KD's imitation objective and α, the AT stage's criterion
  kd_line = next(line for line in report.splitlines() if line.startswith("- KD: "))
  assert "imitation `paper`: α·L1(x_S, y) + (1 − α)·L1(x_S, x_T)" in kd_line
  assert "α = 0.5" in kd_line
  assert "started from the AT student (feature stage, `attention`" in kd_line
  assert "attention maps (`attention_mse`, the authors' code)" in kd_line
  assert "- Teacher: L1(x, y); best checkpoint by lowest validation MSE to the target." in report
  assert (tmp_path / "report" / "figure.png").stat().st_size > 1000
  recorded = json.loads((tmp_path / "config.json").read_text())
  assert recorded["train"]["batch_size"] == 2 and recorded["models"]["num_cascades"] == 1

  assert pipeline.run(config, str(tmp_path)) == 0
  out = capsys.readouterr().out
  assert out.count("skipping") == len(pipeline.STAGES) and "starting" not in out
  assert not (tmp_path / "config_1.json").exists()  # same config: nothing new recorded
  config.train.num_epochs = 2
  assert pipeline.record_config(config, str(tmp_path)) == str(tmp_path / "config_1.json")
  assert json.loads((tmp_path / "config.json").read_text())["train"]["num_epochs"] == 1


def test_stage_needs_its_inputs(tmp_path, tiny_data):
  config = tiny_pipeline_config()
  config.stages = "kd"
  with pytest.raises(
    InputError, match=r"stage 'kd' needs the teacher checkpoint in .*teacher/best"
  ):
    pipeline.run(config, str(tmp_path))
  config.stages = "evaluate,report"
  with pytest.raises(InputError, match=r"stage 'evaluate' needs the teacher checkpoint"):
    pipeline.run(config, str(tmp_path))
  config.stages = "teacher,kd"
  config.kd.init_from = "scratch"
  assert pipeline.check_prerequisites(config, str(tmp_path), ["teacher", "kd"]) is None
  config.kd.init_from = "nowhere"
  with pytest.raises(InputError, match="init_from"):
    pipeline.run(config, str(tmp_path))


def test_parse_stages_and_workdir():
  assert pipeline.parse_stages("kd, teacher") == ["teacher", "kd"]
  with pytest.raises(InputError, match="unknown stage"):
    pipeline.parse_stages("teacher,distill")
  config = default.get_config()
  config.dataset, config.acc = "knee", "8x"
  assert pipeline.default_workdir(config) == os.path.join("experiments", "knee", "acc_8x")
  config.workdir = "/somewhere"
  assert pipeline.default_workdir(config) == "/somewhere"


def test_model_overrides_and_task_check():
  config = tiny_pipeline_config()
  name, model = pipeline.build_model(config, "teacher")
  assert (
    name == "teacher" and model.num_cascades == 1 and model.num_convs == 5 and model.features == 4
  )
  config.train.compute_dtype = "bfloat16"
  assert pipeline.build_model(config, "student")[1].dtype == np.dtype("bfloat16")
  config.models.teacher = "vdsr_teacher"
  with pytest.raises(InputError, match="super_resolution model"):
    pipeline.build_model(config, "teacher")


def test_ordered_predictions_undo_the_host_layout():
  # 5 examples, 2 processes, global batch 4: host 0 has examples 0-1, host 1 has 2-4 (+ padding).
  batches = [[0, 1, 2, 3], [-1, -1, 4, -1]]  # each global batch: host 0's rows, then host 1's
  predictions = np.asarray(batches, np.float32).reshape(-1, 1, 1)
  ordered = pipeline.ordered_predictions(5, predictions, 4, count=2)
  np.testing.assert_array_equal(ordered.ravel(), [0, 1, 2, 3, 4])


@pytest.mark.parametrize(
  "field, value, phrase",
  [
    ("feature_loss", "cosine", "unknown feature loss 'cosine'"),
    ("layer_pairs", "0.2:0.7", "the student has no feature layer (0, 7)"),
    ("imitation", "authors", "config.kd.imitation='authors' is not one of"),
    (
      "feature_best",
      "loss",
      "config.kd.feature_best='loss' is not one of ['attention_mse', 'objective'].",
    ),
  ],
)
def test_bad_distillation_settings_fail_before_any_training(
  field, value, phrase, tmp_path, tiny_data, monkeypatch
):
  from kdmri_jax import train

  monkeypatch.setattr(
    train, "fit", lambda *a, **k: pytest.fail("training started before the config check")
  )
  config = tiny_pipeline_config()
  setattr(config.kd, field, value)
  with pytest.raises(InputError, match=re.escape(phrase)):
    pipeline.run(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()  # refused input writes nothing


def test_super_resolution_pipeline_runs_every_stage(tmp_path, monkeypatch):
  """configs/sr_demo.py's VDSR teacher/student through all six stages on tiny low-resolution data:
  AT on the paper's VDSR layers (teacher 6 : student 4), KD from it, evaluation and a report that
  names the super-resolution setting rather than an acceleration."""
  from configs import sr_demo
  from kdmri_jax.data.sr import SuperResolutionSource

  config = tiny_config(sr_demo.get_config(), train__num_epochs=1)  # (VDSR has no cascades)
  config.sr.keep = 4  # 16×16 targets, 4× lower resolution per axis as the paper's 256 -> 64
  sources = {
    split: SuperResolutionSource(synthetic_source(count, seed=seed), config)
    for split, count, seed in (("train", 4, 1), ("validation", 2, 2))
  }
  monkeypatch.setattr(pipeline, "load_data", lambda config, split: sources[split])
  assert pipeline.run(config, str(tmp_path), command="test") == 0
  for stage in pipeline.TRAINED_STAGES:
    _, _, meta = checkpoints.load_params(tmp_path / stage)
    assert meta["model"] == ("vdsr_teacher" if stage == "teacher" else "vdsr_student")
  # ZF: the low-resolution input
  with h5py.File(tmp_path / "results" / "zf" / "validation.h5") as f:
    np.testing.assert_array_equal(f["reconstruction"][1], sources["validation"][1]["input"])
  report = (tmp_path / "report" / "report.md").read_text()
  assert report.startswith("# KD-MRI: brain super-resolution (central 4×4 k-space)")
  assert "acceleration none (super-resolution)" in report and "| KD |" in report


def test_authors_script_objective_needs_the_feature_start(tmp_path, tiny_data):
  config = tiny_pipeline_config()
  config.kd.imitation, config.kd.init_from = "authors_script", "student"
  with pytest.raises(
    InputError,
    match=r"config\.kd\.imitation='authors_script' is the authors' "
    r"script, which starts from the feature stage; set "
    r"config\.kd\.init_from=feature \(not 'student'\)\.$",
  ):
    pipeline.run(config, str(tmp_path))
  config.kd.init_from = "feature"
  assert pipeline.check_prerequisites(config, str(tmp_path), ["teacher", "feature", "kd"]) is None


def test_kd_records_its_objective_and_the_report_states_it(tmp_path, tiny_data):
  """A second KD run with the authors' code's objective, from the same teacher and AT student: its
  checkpoint, summary and report name that objective, not the paper's."""
  config = tiny_pipeline_config()
  config.stages = "teacher,feature"
  config.kd.feature_best = "objective"
  assert pipeline.run(config, str(tmp_path)) == 0
  config.stages, config.evaluate.stages = "kd,evaluate,report", "kd"
  config.kd.imitation = "authors_code"
  assert pipeline.run(config, str(tmp_path), command="test") == 0
  _, _, meta = checkpoints.load_params(tmp_path / "kd")
  assert meta["objective"]["imitation"] == "authors_code"
  assert meta["objective"]["init"]["best"] == "objective"
  summary = json.loads((tmp_path / "results" / "summary.json").read_text())
  assert summary["methods"]["kd"]["objective"]["imitation"] == "authors_code"
  kd_line = next(
    line
    for line in (tmp_path / "report" / "report.md").read_text().splitlines()
    if line.startswith("- KD: ")
  )
  assert "imitation `authors_code`: L1(x_S, y) + L1(x_S, x_T) / N" in kd_line
  assert "(α not used)" in kd_line
  assert "lowest validation value of its own feature loss (`objective`)" in kd_line


def test_recorded_objective_falls_back_to_the_config():
  config = tiny_pipeline_config()
  recorded = {"imitation": "authors_sr"}
  assert pipeline.recorded_objective(config, "kd", recorded) is recorded
  described = pipeline.recorded_objective(config, "kd", None)
  assert described["from_config"] and (described["imitation"], described["alpha"]) == ("paper", 0.5)
  assert described["init"]["best"] == "attention_mse"
