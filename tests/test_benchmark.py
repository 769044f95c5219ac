"""Benchmark smoke test: tiny shapes, one repetition, valid JSON rows (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from kdmri_jax import benchmark, models
from kdmri_jax.errors import run_cli


def test_conv_flops_match_the_issue_counts():
  # ≈18.5 GFLOP (teacher) and ≈6.4 GFLOP (student) per 256×256 slice.
  assert benchmark.conv_flops(models.build_model("teacher"), 1, 256, 256) == pytest.approx(18.5e9, rel=0.01)
  assert benchmark.conv_flops(models.build_model("student"), 1, 256, 256) == pytest.approx(6.4e9, rel=0.01)
  assert benchmark.conv_flops(models.build_model("student"), 2, 256, 256, "train") == pytest.approx(
      6 * benchmark.conv_flops(models.build_model("student"), 1, 256, 256))


def test_smoke_writes_json_rows(tmp_path, capsys):
  out = tmp_path / "speed.json"
  argv = ["--models", "teacher", "student", "--shapes", "16x24", "--batch", "1", "--repeats", "1",
          "--warmup", "0", "--impls", "jax_jit", "onnxruntime", "torch_eager", "--no-peak",
          "--json", str(out)]
  assert run_cli(benchmark.main, argv) == 0
  report = json.loads(out.read_text())
  rows = report["rows"]
  # 2 models × (3 inference impls + 2 training impls)
  assert len(rows) == 10
  keys = {"model", "mode", "impl", "device", "batch", "height", "width", "median_ms", "gflops_per_s"}
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
  argv = ["--models", "student", "--shapes", "16x16", "--batch", "1", "--repeats", "1", "--warmup", "0",
          "--impls", "jax_jit", "jax_export", "onnxruntime", "torch_eager", "--precision", "float32", "bfloat16",
          "--device", "cpu", "--no-peak", "--json", str(out)]
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
  # float32 paths agree with the float32 JAX model to rounding; bf16 costs a little accuracy, not a lot.
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
  assert benchmark.usable_precisions(["float32", "tf32", "float32"], "gpu") == (["float32", "tf32"], [])
  precisions, notes = benchmark.usable_precisions(["tf32", "bfloat16"], "cpu")
  assert precisions == ["bfloat16"] and "NVIDIA GPUs only" in notes[0]
