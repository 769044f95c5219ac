"""experiments/train_step_ab_cpu.py: runs as a module and prints one timed line per case."""

import re

from experiments import train_step_ab_cpu as ab
from helpers import assert_one_line_error, run_module
from kdmri_jax.errors import run_cli

_CASE = re.compile(
  r"^(teacher|student) (jax_xla_grad|jax_jit|torch_eager): "
  r"\d+\.\d ms, x torch_eager \d+\.\d\d$"
)
_LOAD = re.compile(r"^1-min load \d+\.\d\d at start, \d+\.\d\d at end$")


def test_tiny_run_prints_every_case_and_the_load():
  done = run_module(
    "experiments.train_step_ab_cpu", ["--size", 8, "--batch", 1, "--repeats", 1], timeout=300
  )
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert len(lines) == len(ab.MODELS) * len(ab.IMPLS) + 1, lines
  assert all(_CASE.match(line) for line in lines[:-1]), lines
  cases = [tuple(line.split(":")[0].split()) for line in lines[:-1]]
  assert cases == [(name, impl) for name in ab.MODELS for impl in ab.IMPLS]
  assert _LOAD.match(lines[-1]), lines[-1]
  eager = [line for line in lines if " torch_eager: " in line]
  assert all(line.endswith("x torch_eager 1.00") for line in eager), eager


def test_report_lines_name_an_unavailable_case():
  stats = {
    ("student", "jax_jit"): {"status": "ok", "times": [0.002, 0.004, 0.003]},
    ("student", "torch_eager"): {"status": "unavailable: no torch"},
  }
  assert ab.report_lines(stats) == [
    "student jax_jit: 3.0 ms, x torch_eager n/a",
    "student torch_eager: unavailable: no torch",
  ]


def test_bad_arguments_are_one_sentence_and_exit_2(capsys):
  assert run_cli(ab.main, ["--size", "2"]) == 2
  assert_one_line_error(2, capsys.readouterr().err, "--size must be at least 8")
