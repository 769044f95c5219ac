"""The sentence a termination signal outside the training loops ends `kdmri_jax.main` with: where
the pipeline was comes from what `pipeline.run` records (`pipeline.Progress` on the `Terminated`),
for each place a signal can come: start-up, a training stage outside its loop, the evaluate and
report stages, between two stages and after the last one. In-process (a `Terminated` raised where
the signal would come) except one real `python -m kdmri_jax.main` stopped by a real SIGTERM between
two stages."""

from __future__ import annotations

import os
import signal
import textwrap

import pytest

from helpers import tiny_config, tiny_main_argv, tree_hash
from kdmri_jax import main, outputs, pipeline, train
from kdmri_jax.errors import Terminated, run_cli
from startup_probe import start_main, wait_until_reached

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "brain_cpu.py")
DONE = train.StageResult(status="done", step=4, best_val_loss=0.5, best_step=3)


def terminate(*args, **kwargs):
  raise Terminated(signal.SIGTERM)


def terminate_for(stage):
  """A stand-in for `outputs.write_record` that a signal interrupts for `stage` only."""
  write_record = outputs.write_record

  def write(config, workdir, name):
    if name == stage:
      terminate()
    return write_record(config, workdir, name)

  return write


@pytest.fixture
def quick_pipeline(monkeypatch):
  """`pipeline.run` without the model checks and with no data (no case reads it)."""
  monkeypatch.setattr(pipeline, "check_stages", lambda config, todo: None)
  monkeypatch.setattr(pipeline, "load_data", lambda config, split: None)
  return monkeypatch


def stopped(tmp_path, stages: str) -> Terminated:
  """The `Terminated` a patched `pipeline.run` of `stages` ends with."""
  config = tiny_config()
  config.stages, config.evaluate.stages = stages, ""
  with pytest.raises(Terminated) as raised:
    pipeline.run(config, str(tmp_path / "run"))
  return raised.value


def test_start_up(quick_pipeline, tmp_path):
  quick_pipeline.setattr(pipeline, "load_data", terminate)
  stop = stopped(tmp_path, "teacher,student")
  assert stop.progress == pipeline.Progress()  # start-up had not chosen the stages yet
  assert main.stopped_sentence(stop) == (
    "stopped by SIGTERM during start-up, before any stage began: no checkpoint or result was "
    "written; rerun the same command to start the run."
  )
  assert main.stopped_sentence(Terminated(signal.SIGTERM)) == main.stopped_sentence(stop)


def test_inside_a_training_stage_outside_its_loop(quick_pipeline, tmp_path):
  quick_pipeline.setattr(pipeline, "build_model", terminate)  # the stage runner's first step
  stop = stopped(tmp_path, "student")
  assert stop.progress.running == "student"
  assert main.stopped_sentence(stop) == (
    "stopped by SIGTERM in the student stage outside its training loop: the checkpoints it saved "
    "are kept; rerun the same command to resume it."
  )


@pytest.mark.parametrize("stage, runner", [("evaluate", "run_evaluate"), ("report", "run_report")])
def test_evaluate_and_report(quick_pipeline, tmp_path, stage, runner):
  quick_pipeline.setattr(pipeline, "check_prerequisites", lambda *args: None)
  quick_pipeline.setattr(pipeline, runner, terminate)
  stop = stopped(tmp_path, stage)
  assert main.stopped_sentence(stop) == (
    f"stopped by SIGTERM during the {stage} stage: it has no `done` marker, so rerun the same "
    f"command to redo it (finished stages are kept)."
  )


def test_between_stages_through_main(quick_pipeline, tmp_path, capsys):
  """After the teacher finished, while the student's record is written: through `main.main`."""
  quick_pipeline.setattr(pipeline, "run_training_stage", lambda stage, *args: DONE)
  quick_pipeline.setattr(outputs, "write_record", terminate_for("student"))
  argv = ["--config", DEMO, "--workdir", str(tmp_path / "run"), "--config.stages=teacher,student"]
  assert run_cli(main.main, argv) == 143
  captured = capsys.readouterr()
  assert "teacher: done at step 4" in captured.out
  assert captured.err.strip().splitlines() == [
    "error: stopped by SIGTERM after the teacher stage finished, before the student stage began: "
    "finished stages are kept (marked done); rerun the same command to go on with the student "
    "stage."
  ]


def test_after_the_last_stage(quick_pipeline, tmp_path):
  quick_pipeline.setattr(pipeline, "run_training_stage", lambda stage, *args: DONE)
  said = pipeline._say

  def say(text):
    if text.startswith("student: done"):
      terminate()
    said(text)

  quick_pipeline.setattr(pipeline, "_say", say)
  stop = stopped(tmp_path, "teacher,student")
  assert stop.progress.finished == ["teacher", "student"]
  assert main.stopped_sentence(stop) == (
    "stopped by SIGTERM after the teacher and student stages finished, the last of this run: "
    "every stage is done."
  )


HELD_BEFORE_REPORT = '''\
"""configs/brain_cpu.py, held when the report's record is written (after evaluate finished) until
{go} exists (tests/test_stop_sentences.py)."""
import os
import time

from configs import brain_cpu


def get_config():
  from kdmri_jax import outputs

  write_record = outputs.write_record

  def held(config, workdir, stage):
    if stage == "report":
      open({reached!r}, "w").close()
      while not os.path.exists({go!r}):
        time.sleep(0.02)
    return write_record(config, workdir, stage)

  outputs.write_record = held
  return brain_cpu.get_config()
'''


def test_a_real_sigterm_between_evaluate_and_report(tmp_path):
  """`python -m kdmri_jax.main` of evaluate (ZF only: nothing to train) and report, stopped by a
  real SIGTERM after evaluate finished: one sentence, 143, the evaluation kept, no report."""
  reached, go = str(tmp_path / "reached"), str(tmp_path / "go")
  config = tmp_path / "held_before_report.py"
  config.write_text(textwrap.dedent(HELD_BEFORE_REPORT).format(reached=reached, go=go))
  workdir = tmp_path / "run"
  argv = tiny_main_argv(workdir, tmp_path / "cache", stages="evaluate,report", evaluate__stages="")
  argv[argv.index("--config") + 1] = str(config)
  proc = start_main(argv)
  wait_until_reached(proc, reached)
  results = tree_hash(workdir / "results")
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, (out, err)
  assert [line for line in err.splitlines() if line.strip()] == [
    "error: stopped by SIGTERM after the evaluate stage finished, before the report stage began: "
    "finished stages are kept (marked done); rerun the same command to go on with the report "
    "stage."
  ], err
  assert (workdir / "results" / "done").exists() and tree_hash(workdir / "results") == results
  assert not (workdir / "report" / "done").exists()
