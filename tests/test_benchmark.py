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
