"""Benchmark smoke test: tiny shapes, one repetition, valid JSON rows (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from kdmri_jax import benchmark, models, train
from kdmri_jax.errors import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_argv(out, model_names, shape, impls, *extra):
  """Benchmark arguments for one batch of 1, one repetition, no warm-up, JSON written to `out`."""
  return [
    "--models",
    *model_names,
    "--shapes",
    shape,
    "--batch",
    "1",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--impls",
    *impls,
    *extra,
    "--json",
    str(out),
  ]


def test_conv_flops_match_the_issue_counts():
  # ≈18.5 GFLOP (teacher) and ≈6.4 GFLOP (student) per 256×256 slice.
  assert benchmark.conv_flops(models.build_model("teacher"), 1, 256, 256) == pytest.approx(
    18.5e9, rel=0.01
  )
  assert benchmark.conv_flops(models.build_model("student"), 1, 256, 256) == pytest.approx(
    6.4e9, rel=0.01
  )
  assert benchmark.conv_flops(models.build_model("student"), 2, 256, 256, "train") == pytest.approx(
    6 * benchmark.conv_flops(models.build_model("student"), 1, 256, 256)
  )


def test_smoke_writes_json_rows(tmp_path, capsys):
  out = tmp_path / "speed.json"
  argv = tiny_argv(
    out, ["teacher", "student"], "16x24", ["jax_jit", "onnxruntime", "torch_eager"], "--no-peak"
  )
  assert run_cli(benchmark.main, argv) == 0
  report = json.loads(out.read_text())
  rows = report["rows"]
  # 2 models × (3 inference impls + 2 training impls)
  assert len(rows) == 10
  keys = {
    "model",
    "mode",
    "impl",
    "device",
    "batch",
    "height",
    "width",
    "median_ms",
    "gflops_per_s",
  }
  for row in rows:
    assert keys <= row.keys()
    assert row["status"] == "ok", row
    assert row["median_ms"] > 0 and row["gflops_per_s"] > 0
    assert (row["height"], row["width"], row["batch"]) == (16, 24, 1)
  assert {r["impl"] for r in rows if r["mode"] == "train"} == {"jax_jit", "torch_eager"}
  assert report["params"] == {"teacher": 141765, "student": 49285}
  assert len(report["student_speedups"]) == 5
  assert "| teacher | inference | 16×24 |" in capsys.readouterr().out
  # The JSON is never overwritten silently.
  assert run_cli(benchmark.main, argv) == 2


def test_bad_shape_is_one_line_error(capsys):
  assert run_cli(benchmark.main, ["--shapes", "240by240"]) == 2
  assert "--shapes" in capsys.readouterr().err


def test_precisions_side_by_side(tmp_path, capsys):
  import torch

  out = tmp_path / "speed.json"
  impls = ["jax_jit", "jax_export", "onnxruntime", "torch_eager"]
  argv = tiny_argv(
    out,
    ["student"],
    "16x16",
    impls,
    "--precision",
    "float32",
    "bfloat16",
    "--device",
    "cpu",
    "--no-peak",
  )
  # Unusual values (the defaults are True, False): the run must leave them as it found them.
  flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
  torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, True
  try:
    assert run_cli(benchmark.main, argv) == 0
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
  finally:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
  rows = {(r["mode"], r["impl"], r["precision"]): r for r in json.loads(out.read_text())["rows"]}
  # (4 inference impls + 2 training impls) × 2 precisions
  assert len(rows) == 12
  assert rows[("inference", "onnxruntime", "bfloat16")]["status"].startswith("unavailable: ")
  for (mode, impl, precision), row in rows.items():
    if (impl, precision) != ("onnxruntime", "bfloat16"):
      assert row["status"] == "ok", row
    if mode == "train":
      assert row["max_abs_diff_vs_fp32"] is None
  diff = {key: row["max_abs_diff_vs_fp32"] for key, row in rows.items() if row["status"] == "ok"}
  # float32 paths agree with the float32 JAX model to rounding; bf16 costs a little accuracy, not a
  # lot.
  for impl in ("jax_jit", "jax_export", "onnxruntime", "torch_eager"):
    assert diff[("inference", impl, "float32")] < 1e-5
  for impl in ("jax_jit", "jax_export", "torch_eager"):
    assert 1e-5 < diff[("inference", impl, "bfloat16")] < 0.05
  table = capsys.readouterr().out
  assert "| student | inference | 16×16 | 1 | jax_jit | bfloat16 |" in table
  assert "max abs diff vs fp32" in table


def test_bad_precision_is_one_line_error(capsys):
  assert run_cli(benchmark.main, ["--precision", "float32", "fp16"]) == 2
  err = capsys.readouterr().err
  assert "--precision 'fp16'" in err and len(err.strip().splitlines()) == 1
  # tf32 alone on the CPU has nothing to time: one sentence, before any work.
  assert run_cli(benchmark.main, ["--device", "cpu", "--precision", "tf32", "--no-peak"]) == 2
  assert "NVIDIA GPUs only" in capsys.readouterr().err


def test_tf32_is_skipped_on_cpu_with_a_note():
  assert benchmark.usable_precisions(["float32", "tf32", "float32"], "gpu") == (
    ["float32", "tf32"],
    [],
  )
  precisions, notes = benchmark.usable_precisions(["tf32", "bfloat16"], "cpu")
  assert precisions == ["bfloat16"] and "NVIDIA GPUs only" in notes[0]


def test_the_jax_train_row_runs_the_projects_train_step(monkeypatch):
  made = []
  make_train_step = train.make_train_step

  def spy(objective, *args):
    made.append(objective.stage)
    return make_train_step(objective, *args)

  monkeypatch.setattr(train, "make_train_step", spy)
  model = models.build_model("student", num_cascades=1)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  before = jax.tree.map(np.array, params)
  batch = benchmark.make_batch(model, 2, 8, 8)
  step = benchmark.jax_train_step("student", model, params, batch, jax.devices("cpu")[0])
  first, second = float(step()), float(step())
  assert made == ["student"]
  # Its loss is the stage objective's before the update, and the update lowers it.
  config = ConfigDict({"train": benchmark.TRAIN_SETTINGS})
  objective = train.make_objective("student", config, model)
  assert first == pytest.approx(float(objective.loss(params, None, batch)[0]), rel=1e-5)
  assert second < first
  # The donated state never shared the caller's parameters (the other rows use them).
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, params), before)


def test_without_torch_the_torch_rows_say_why_and_the_rest_run(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as without torch
  out = tmp_path / "speed.json"
  argv = tiny_argv(out, ["student"], "16x16", ["jax_jit", "torch_eager"], "--device", "cpu")
  assert run_cli(benchmark.main, argv) == 0
  report = json.loads(out.read_text())
  rows = {(r["mode"], r["impl"]): r for r in report["rows"]}
  assert set(rows) == {(m, i) for m in ("inference", "train") for i in ("jax_jit", "torch_eager")}
  for mode in ("inference", "train"):
    assert rows[mode, "jax_jit"]["status"] == "ok"
    assert rows[mode, "torch_eager"]["status"].startswith("unavailable: torch is not installed")
  assert report["versions"]["torch"] is None and report["threads"]["torch"] is None
  peak = report["peak_gflops_per_s"]
  assert "torch_eager" not in peak and "jax_jit" in peak
  assert "unavailable: torch is not installed" in capsys.readouterr().out


def test_the_package_imports_without_torch():
  code = (
    "import sys\nsys.modules['torch'] = None\n"
    "import kdmri_jax.benchmark, kdmri_jax.convert, kdmri_jax.export, kdmri_jax.inference, "
    "kdmri_jax.onnx_export, kdmri_jax.pipeline, kdmri_jax.valid\n"
    "try:\n  import kdmri_jax.torch_reference\n"
    "except ImportError:\n  print('no torch_reference')\n"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  process = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
  )
  assert process.returncode == 0, process.stderr
  assert process.stdout.strip() == "no torch_reference"
