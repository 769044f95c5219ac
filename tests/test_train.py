"""Tests for kdmri_jax.train: the step lowers the loss, objectives, schedule, exact resume, NaN and
SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from kdmri_jax import checkpoints, feature_losses, losses, models, pipeline, sharding, train
from kdmri_jax.train_input import Batches, synthetic_source

# `tests.`: test_sharding's subprocesses import this module from the repo root
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def _cached_compiles(compile_cache_dir):
  """Every `fit` jits its steps anew: identical programs are compiled once for the module."""
  with helpers.compilation_cache(compile_cache_dir):
    yield


def tiny_config(**train_fields):
  """`helpers.tiny_config` with these tests' training settings and `train_fields`."""
  fields = {
    "num_epochs": 2,
    "log_every_steps": 1,
    "checkpoint_every_steps": 2,
    "num_image_examples": 2,
    **train_fields,
  }
  return helpers.tiny_config(**{f"train__{key}": value for key, value in fields.items()})


def tiny_model(name="student"):
  return models.build_model(name, num_cascades=1, features=4)


def params_of(model, seed=0):
  return models.init_params(model, jax.random.PRNGKey(seed), 16, 16)


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_train_step_lowers_the_loss():
  config = tiny_config()
  model = tiny_model()
  objective = train.make_objective("student", config, model)
  tx = train.make_optimizer(config.train, steps_per_epoch=10)
  mesh = sharding.make_mesh()
  state = sharding.replicate(train.create_train_state(params_of(model), tx, 0), mesh)
  step = train.make_train_step(objective, tx, mesh)
  batch = sharding.global_batch(Batches(synthetic_source(2), 2).examples([0, 1]), mesh)
  state, first = step(state, batch)
  after_one = float(objective.loss(state.params, None, batch)[0])
  assert after_one < float(first["loss"])  # `first` is the loss before the update
  for _ in range(10):
    state, last = step(state, batch)
  assert int(state.step) == 11
  assert float(last["loss"]) < after_one


def test_step_decay_schedule_matches_steplr():
  config = tiny_config(learning_rate=1e-3, lr_step_epochs=2, lr_gamma=0.1)
  schedule = train.learning_rate_schedule(config.train, steps_per_epoch=5)
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(9)) == pytest.approx(1e-3)  # epoch 1
  assert float(schedule(10)) == pytest.approx(1e-4)  # epoch 2
  assert float(schedule(25)) == pytest.approx(1e-5)  # epoch 5


def test_kd_and_feature_objectives_use_the_frozen_teacher():
  config = tiny_config()
  teacher, student = tiny_model("teacher"), tiny_model("student")
  t_params, s_params = params_of(teacher, 1), params_of(student, 2)
  batch = Batches(synthetic_source(2), 2).examples([0, 1])
  config.kd.alpha = 1.0  # imitation term off: the kd loss is the plain reconstruction loss
  kd = train.make_objective("kd", config, student, teacher)
  baseline = train.make_objective("student", config, student)
  np.testing.assert_allclose(
    kd.loss(s_params, t_params, batch)[0], baseline.loss(s_params, None, batch)[0], rtol=1e-6
  )
  feature = train.make_objective("feature", config, student, teacher)
  grads = jax.grad(lambda t: feature.loss(s_params, t, batch)[0])(t_params)
  assert all(np.all(g == 0) for g in leaves(grads))  # no gradient reaches the teacher
  assert float(feature.loss(s_params, t_params, batch)[0]) > 0


def test_fitnet_between_differing_widths_trains_its_regressor_and_best_holds_the_plain_student(
  tmp_path,
):
  config = tiny_config(num_epochs=1)
  config.kd.feature_loss = "fitnet"
  config.models.num_cascades, config.models.features, config.models.student_features = 1, 8, 4
  teacher, student = (
    pipeline.build_model(config, "teacher")[1],
    pipeline.build_model(config, "student")[1],
  )
  assert (teacher.features, student.features) == (8, 4)
  s_params = params_of(student, 2)
  # 4/4: no regressor
  same = train.make_objective("feature", config, student, tiny_model("teacher"))
  assert (
    same.init_loss_params is None and same.trainable(s_params, jax.random.PRNGKey(0)) is s_params
  )

  objective = train.make_objective("feature", config, student, teacher)
  t_params = params_of(teacher, 1)
  start = objective.trainable(params_of(student, 2), jax.random.PRNGKey(3))
  assert set(start) == {"student", "feature"}
  assert sorted(x.shape for x in leaves(start["feature"]["0"])) == [(4, 8), (8,)]  # 1×1: C_S -> C_T
  regressor = leaves(start["feature"])
  batch = Batches(synthetic_source(2), 2).examples([0, 1])
  first = float(objective.loss(start, t_params, batch)[0])
  tx = train.make_optimizer(config.train, steps_per_epoch=10)
  mesh = sharding.make_mesh()
  state = sharding.replicate(train.create_train_state(start, tx, 0), mesh)
  step = train.make_train_step(objective, tx, mesh, t_params)
  for _ in range(5):
    state, _ = step(state, sharding.global_batch(batch, mesh))
  assert any(np.any(a != b) for a, b in zip(regressor, leaves(state.params["feature"])))
  assert float(objective.loss(state.params, t_params, batch)[0]) < first

  config.kd.kd_feature_weight = 1.0  # the kd stage's optional feature term gets a regressor too
  train.check_objective(train.make_objective("kd", config, student, teacher))

  data = Batches(synthetic_source(4, seed=1), config.train.batch_size, config.train.seed)
  val = Batches(synthetic_source(2, seed=2), config.train.batch_size)
  result = train.fit(
    str(tmp_path),
    objective,
    s_params,
    data,
    val,
    config,
    teacher_params=t_params,
    meta=checkpoints.make_meta("student", student),
  )
  assert result.status == "done"
  model, best, meta = checkpoints.load_params(tmp_path / "best", expected_model="student")
  assert meta["stage"] == "feature" and model.features == 4
  assert jax.tree.structure(best) == jax.tree.structure(s_params)  # no regressor in best/
  models.apply(model, best, batch)


def test_layer_pairs_parse_and_reject():
  student = tiny_model()
  assert train.parse_layer_pairs("paper", student) == (((0, 2), (0, 1)),)  # cut to the one cascade
  assert train.parse_layer_pairs("0.2:0.1,1.3:1.0", student) == (((0, 2), (0, 1)), ((1, 3), (1, 0)))
  with pytest.raises(train.InputError):
    train.parse_layer_pairs("0.2-0.1", student)


def _fit(stage_dir, config, stop_at_step=None, source=None):
  model = tiny_model()
  objective = train.make_objective("student", config, model)
  data = Batches(source or synthetic_source(7, seed=1), config.train.batch_size, config.train.seed)
  val = Batches(synthetic_source(3, seed=2), config.train.batch_size)
  meta = checkpoints.make_meta("student", model)
  return train.fit(
    str(stage_dir),
    objective,
    params_of(model),
    data,
    val,
    config,
    meta=meta,
    stop_at_step=stop_at_step,
  )


def test_restart_reproduces_an_uninterrupted_run_exactly(tmp_path):
  config = tiny_config(num_epochs=3)  # 3 steps per epoch (7 slices, batch 2), 9 steps
  full = _fit(tmp_path / "full", config)
  assert full.status == "done" and full.step == 9
  stopped = _fit(tmp_path / "resumed", config, stop_at_step=3)  # an epoch's end: validated first
  assert stopped.status == "interrupted" and stopped.step == 3
  assert (tmp_path / "resumed" / "log.txt").read_text().startswith("student epoch 1/3 step 3")
  stopped = _fit(tmp_path / "resumed", config, stop_at_step=5)  # mid-epoch 2
  assert stopped.status == "interrupted" and stopped.step == 5
  assert not train.is_done(str(tmp_path / "resumed"))
  resumed = _fit(tmp_path / "resumed", config)
  assert resumed.status == "done" and resumed.step == 9
  assert resumed.best_step == full.best_step
  _, a, meta = checkpoints.load_params(tmp_path / "full")
  _, b, _ = checkpoints.load_params(tmp_path / "resumed")
  assert meta["stage"] == "student" and meta["step"] == full.best_step
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  log = (tmp_path / "full" / "log.txt").read_text().splitlines()
  assert len(log) == 3 and log[-1].startswith("student epoch 3/3 step 9")
  assert os.listdir(tmp_path / "full" / "tensorboard")
  # Epoch 2's training loss averages all its steps, before and after the restart at step 5, as the
  # uninterrupted run's does; the log says where each restart took over.
  resumed_log = (tmp_path / "resumed" / "log.txt").read_text().splitlines()
  assert epoch_lines(resumed_log, "student") == epoch_lines(log, "student")
  assert [line for line in resumed_log if ": resuming in " in line] == [
    f"student: resuming in {tmp_path / 'resumed'} from step 3 (the end of epoch 1/3)",
    f"student: resuming in {tmp_path / 'resumed'} from step 5 (step 2/3 of epoch 2/3)",
  ]


def epoch_lines(lines, stage):
  """{epoch: the last log line of that epoch, without its wall time}."""
  return {
    line.split()[2]: line.rsplit(" time ", 1)[0]
    for line in lines
    if line.startswith(f"{stage} epoch ")
  }


def test_epoch_log_reports_the_validation_psnr_of_the_trained_model(tmp_path):
  config = tiny_config(num_epochs=1)  # one epoch: the best checkpoint holds the logged parameters
  result = _fit(tmp_path / "stage", config)
  line = (tmp_path / "stage" / "log.txt").read_text().splitlines()[-1]
  logged = float(line.split(" val_psnr ")[1].split()[0])
  _, params, _ = checkpoints.load_params(tmp_path / "stage")
  model, psnrs = tiny_model(), []
  for batch, weight in Batches(synthetic_source(3, seed=2), config.train.batch_size).evaluation():
    image = np.asarray(models.apply(model, params, batch)[0])
    for target, prediction, w in zip(batch["target"], image, weight):
      if w:
        psnrs.append(10 * np.log10(target.max() ** 2 / np.mean((target - prediction) ** 2)))
  assert result.best_step == 3 and len(psnrs) == 3
  assert logged == pytest.approx(np.mean(psnrs), abs=0.006)  # logged with 2 decimals


class _NaNAfter:
  """A source whose targets turn NaN after `reads` examples were read (data is read in order)."""

  def __init__(self, source, reads):
    self.source, self.reads, self.mask = source, reads, source.mask

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    example = dict(self.source[i])
    self.reads -= 1
    if self.reads < 0:
      example["target"] = np.full_like(example["target"], np.nan)
    return example


def test_nan_loss_stops_with_stage_and_step_and_keeps_good_checkpoint(tmp_path):
  config = tiny_config(num_epochs=3, checkpoint_every_steps=1)
  source = _NaNAfter(synthetic_source(7, seed=1), reads=6)  # epoch 1 (3 steps of 2) is clean
  with pytest.raises(
    train.TrainingStopped,
    match=r"stage student: the loss is NaN/Inf at step 4 \(epoch 2\); kept the last good "
    r"checkpoint \(step 3\)",
  ):
    _fit(tmp_path, config, source=source)
  steps = sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit())
  assert max(steps) == 3
  assert not train.is_done(str(tmp_path))


SIGTERM_SCRIPT = textwrap.dedent("""
    from tests.test_train import _fit, tiny_config
    config = tiny_config(num_epochs=10000, checkpoint_every_steps=0)
    result = _fit({workdir!r}, config)
    print("result", result.status, result.step)
""")


def _start(script, log, lines, committed=False, compile_cache=None):
  """Starts the training script; returns once log.txt has more than `lines` lines (and, with
  `committed`, a finished checkpoint exists). `compile_cache`: a persistent XLA cache (same
  programs, same results; it only skips XLA's compile time)."""
  env = helpers.subprocess_env(compile_cache)  # CPU, `tests.` importable
  process = subprocess.Popen(
    [sys.executable, str(script)],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env=env,
    cwd=REPO,
  )
  checkpoints_dir = log.parent / "checkpoints"
  deadline = time.time() + 90
  while time.time() < deadline:
    assert process.poll() is None, process.stdout.read()
    ready = log.exists() and log.read_text().count("\n") > lines
    if ready and (not committed or any(n.isdigit() for n in os.listdir(checkpoints_dir))):
      return process
    time.sleep(0.2)
  process.kill()
  raise AssertionError("training did not reach the expected point in time")


def test_sigkill_resumes_and_sigterm_saves_and_exits_cleanly(tmp_path, compile_cache_dir):
  script = tmp_path / "run.py"
  script.write_text(SIGTERM_SCRIPT.format(workdir=str(tmp_path / "stage")))
  # the module's cache: `_fit`'s programs do not depend on the number of epochs
  log, cache = tmp_path / "stage" / "log.txt", compile_cache_dir
  process = _start(script, log, 0, committed=True, compile_cache=cache)
  process.kill()  # SIGKILL: no chance to save
  process.communicate(timeout=30)
  killed_lines = log.read_text().count("\n")
  process = _start(script, log, killed_lines + 1, compile_cache=cache)  # resume line, an epoch
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 0, output
  assert "stopped by SIGTERM at step" in output and "result interrupted" in output
  resumed, first_epoch = log.read_text().splitlines()[killed_lines : killed_lines + 2]
  # continued from the checkpoint, and says so
  assert resumed.startswith(f"student: resuming in {tmp_path / 'stage'} from step "), resumed
  assert first_epoch.startswith("student epoch ") and not first_epoch.startswith("student epoch 1/")
  step = int(output.split("result interrupted ")[1].split()[0])
  assert os.path.isdir(tmp_path / "stage" / "checkpoints" / str(step))


@pytest.mark.parametrize("name", sorted(losses.IMITATION_OBJECTIVES))
def test_kd_stage_loss_follows_config_kd_imitation(name):
  config = tiny_config()
  config.kd.imitation, config.kd.alpha = name, 0.3
  teacher, student = tiny_model("teacher"), tiny_model("student")
  t_params, s_params = params_of(teacher, 1), params_of(student, 2)
  batch = Batches(synthetic_source(2), 2).examples([0, 1])
  s_image = np.asarray(models.apply(student, s_params, batch)[0], np.float64)
  t_image = np.asarray(models.apply(teacher, t_params, batch)[0], np.float64)
  to_target = np.mean(np.abs(s_image - batch["target"]))
  to_teacher = np.mean(np.abs(s_image - t_image))
  want = {
    "paper": 0.3 * to_target + 0.7 * to_teacher,
    "authors_code": to_target + to_teacher / s_image.size,
    "authors_script": to_target,
    "authors_sr": to_target + to_teacher,
  }[name]
  loss, aux = train.make_objective("kd", config, student, teacher).loss(s_params, t_params, batch)
  assert float(loss) == pytest.approx(want, rel=1e-5) and float(aux["imitation"]) == float(loss)
  assert to_teacher > 1e-3 and abs(to_target - to_teacher) > 1e-3  # the objectives really differ


def test_unknown_kd_objective_or_feature_criterion_is_one_sentence():
  config = tiny_config()
  teacher, student = tiny_model("teacher"), tiny_model("student")
  config.kd.imitation = "authors"
  with pytest.raises(
    train.InputError, match=r"^config\.kd\.imitation='authors' is not one of \[.*'paper'\]\.$"
  ):
    train.make_objective("kd", config, student, teacher)
  config.kd.feature_best = "val_loss"
  with pytest.raises(
    train.InputError,
    match=r"^config\.kd\.feature_best='val_loss' is not one of "
    r"\['attention_mse', 'objective'\]\.$",
  ):
    train.make_objective("feature", config, student, teacher)


def _hand_attention_mse(t_map, s_map):
  """Per example: mean over pixels of (Q_T − Q_S)², Q = Σ_c F² flattened, L2-normalised."""

  def q(f):
    a = np.sum(np.asarray(f, np.float64) ** 2, axis=-1).reshape(f.shape[0], -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)

  return np.mean((q(t_map) - q(s_map)) ** 2, axis=1)


@pytest.mark.parametrize("feature_loss", ["attention", "sp"])
def test_feature_stage_keeps_the_epoch_with_the_lowest_attention_mse(tmp_path, feature_loss):
  import orbax.checkpoint as ocp

  config = tiny_config(
    num_epochs=4, checkpoint_every_steps=0, keep_checkpoints=4, learning_rate=3e-2
  )
  config.kd.feature_loss, config.kd.feature_best = feature_loss, "attention_mse"
  teacher, student = tiny_model("teacher"), tiny_model("student")
  t_params = params_of(teacher, 1)
  objective = train.make_objective("feature", config, student, teacher)
  data = Batches(synthetic_source(4, seed=1), 2, config.train.seed)
  val = Batches(synthetic_source(3, seed=2), 2)  # the last validation batch is padded
  result = train.fit(
    str(tmp_path),
    objective,
    params_of(student, 2),
    data,
    val,
    config,
    teacher_params=t_params,
    meta=checkpoints.make_meta("student", student),
  )
  examples = val.examples(range(3))
  t_map = models.apply(teacher, t_params, examples)[1][0][2]  # the paper's pair: teacher conv 3
  mse = {}
  with ocp.CheckpointManager(str(tmp_path / "checkpoints"), item_names=("state", "meta")) as mngr:
    for step in mngr.all_steps():
      state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
      s_map = models.apply(student, state["params"], examples)[1][0][1]  # student conv 2
      mse[step] = float(np.mean(_hand_attention_mse(t_map, s_map)))
  assert sorted(mse) == [2, 4, 6, 8]
  assert result.best_step == min(mse, key=mse.get)
  assert result.best_val_loss == pytest.approx(mse[result.best_step], rel=1e-4)
  logged = [
    float(line.split(" val_loss ")[1].split()[0])
    for line in (tmp_path / "log.txt").read_text().splitlines()
  ]
  # logged with 6 significant digits
  np.testing.assert_allclose(logged, [mse[s] for s in sorted(mse)], rtol=1e-4)


def test_feature_best_objective_validates_on_the_feature_loss():
  config = tiny_config()
  teacher, student = tiny_model("teacher"), tiny_model("student")
  t_params, s_params = params_of(teacher, 1), params_of(student, 2)
  batch = Batches(synthetic_source(2), 2).examples([0, 1])
  config.kd.feature_best = "objective"
  by_objective = train.make_objective("feature", config, student, teacher)
  np.testing.assert_allclose(
    by_objective.eval_loss(s_params, t_params, batch),
    float(by_objective.loss(s_params, t_params, batch)[0]),
    rtol=1e-6,
  )
  config.kd.feature_best = "attention_mse"
  by_maps_objective = train.make_objective("feature", config, student, teacher)
  by_maps = by_maps_objective.eval_loss(s_params, t_params, batch)
  t_map = models.apply(teacher, t_params, batch)[1][0][2]
  s_map = models.apply(student, s_params, batch)[1][0][1]
  np.testing.assert_allclose(by_maps, _hand_attention_mse(t_map, s_map), rtol=1e-5)


@pytest.mark.parametrize("feature_loss", sorted(feature_losses.FEATURE_LOSSES))
def test_attention_mse_criterion_works_for_every_feature_method(feature_loss):
  """Every method's feature stage can be judged on the attention maps of its layers (for `fsp`, the
  end of each section); `attention_code` normalises them over the batch as the authors' code."""
  config = tiny_config()
  config.kd.feature_loss = feature_loss
  teacher, student = tiny_model("teacher"), tiny_model("student")
  t_params, s_params = params_of(teacher, 1), params_of(student, 2)
  objective = train.make_objective("feature", config, student, teacher)
  trained = objective.trainable(s_params, jax.random.PRNGKey(0))
  batch = Batches(synthetic_source(2), 2).examples([0, 1])
  got = np.asarray(objective.eval_loss(trained, t_params, batch))
  t_map = np.asarray(models.apply(teacher, t_params, batch)[1][0][2], np.float64)
  s_map = np.asarray(models.apply(student, s_params, batch)[1][0][1], np.float64)
  if feature_loss == "attention_code":
    q_t, q_s = (np.sum(f**2, -1).reshape(2, -1) for f in (t_map, s_map))

    def over_batch(q):  # a pixel that is 0 in the whole batch stays 0, as F.normalize's eps does
      return q / np.maximum(np.linalg.norm(q, axis=0), 1e-12)

    want = np.mean((over_batch(q_t) - over_batch(q_s)) ** 2, axis=1)
  else:
    want = _hand_attention_mse(t_map, s_map)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_describe_objective_records_alpha_only_where_the_objective_uses_it():
  config = tiny_config()
  config.kd.alpha = 0.3
  assert train.describe_objective("kd", config)["alpha"] == 0.3  # 'paper'
  config.kd.imitation = "authors_code"
  assert train.describe_objective("kd", config)["alpha"] is None
  with pytest.raises(train.InputError, match="unknown training stage 'evaluate'"):
    train.describe_objective("evaluate", config)


def test_restore_or_init_starts_fresh_then_resumes_and_refuses_other_data(tmp_path):
  config = tiny_config(num_epochs=1)  # 3 steps per epoch (7 slices, batch 2), checkpoints at 2, 3
  model = tiny_model()
  objective = train.make_objective("student", config, model)
  tx = train.make_optimizer(config.train, steps_per_epoch=3)
  folder = str(tmp_path / "checkpoints")

  def restore(steps_per_epoch, objective=objective, model=model):
    mngr = train._state_manager(folder, 2)  # pylint: disable=protected-access
    try:
      return train.restore_or_init(
        mngr, folder, objective, params_of(model), tx, config.train, steps_per_epoch
      )
    finally:
      mngr.close()

  state, progress = restore(3)
  assert int(state.step) == 0 and progress == {
    "best_val_loss": float("inf"),
    "best_step": -1,
    "epoch_loss_sum": 0.0,
    "epoch_loss_count": 0,
  }
  result = _fit(tmp_path, config)
  state, progress = restore(3)
  assert int(state.step) == result.step == 3
  assert progress == {
    "best_val_loss": result.best_val_loss,
    "best_step": result.best_step,
    "epoch_loss_sum": 0.0,
    "epoch_loss_count": 0,
  }  # an epoch's end: the next at 0
  with pytest.raises(
    train.InputError,
    match=rf"^{folder} was written with 3 steps per epoch but "
    r"the data now gives 4; .* or a new --workdir\.$",
  ):
    restore(4)
  # Another model shape is refused in one sentence, and the good checkpoint stays where it is.
  wider = models.build_model("student", num_cascades=1, features=8)
  with pytest.raises(
    train.InputError,
    match=rf"^{folder}/3 holds a training state of another "
    r"model or objective than this config \(.*delete the "
    r"stage folder to retrain\.$",
  ):
    restore(3, train.make_objective("student", config, wider), wider)
  assert sorted(os.listdir(folder)) == ["2", "3"]
  # Mid-epoch, the running loss of the epoch's steps so far is restored with the state.
  import shutil

  shutil.rmtree(os.path.join(folder, "3"))
  state, progress = restore(3)
  assert int(state.step) == 2 and progress["epoch_loss_count"] == 2
  assert np.isfinite(progress["epoch_loss_sum"]) and progress["epoch_loss_sum"] > 0


def test_the_epoch_log_reads_the_learning_rate_from_the_schedule(tmp_path):
  config = tiny_config(num_epochs=2, lr_step_epochs=1, lr_gamma=0.1, learning_rate=1e-3)
  _fit(tmp_path, config)
  lines = (tmp_path / "log.txt").read_text().splitlines()
  rates = [line.split(" lr ")[1].split()[0] for line in lines]
  assert rates == ["1.0e-03", "1.0e-04"]  # the rate of each epoch's last step
