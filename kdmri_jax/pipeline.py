"""The whole KD-MRI experiment (the paper's Algorithm 1) as stages run in order from one config.

  teacher   train the teacher on L1(x_T, target)
  student   train the student baseline on L1(x_S, target)
  feature   train a fresh student by attention transfer from the frozen teacher
  kd        from `feature`'s best parameters (config.kd.init_from), config.kd.imitation: the paper's
            α·L1(x_S, y) + (1 − α)·L1(x_S, x_T) or one of the authors' code's objectives
  evaluate  ZF, teacher, student and KD on the validation set: per-volume and per-slice metrics, and
            the reconstructions as `results/<model>/<volume>.h5` (key 'reconstruction', S×H×W)
  report    report/report.md with the paper's table and the objective behind each row, and
            report/figure.png

Each stage has its own folder in the workdir (`teacher/{checkpoints,best,tensorboard,log.txt,done}`,
..., `results/`, `report/`); a stage whose `done` marker exists is skipped, so rerunning the same
command resumes where the last run stopped. Each stage records the config fields it was made with,
and a rerun that differs from what it would run or read is refused; what it reads back is checked
first, and a damaged item is moved aside and its stage redone (`kdmri_jax.outputs`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any, Sequence

import jax
import numpy as np

from kdmri_jax import (
  checkpoints,
  losses,
  models,
  outputs,
  pretrained,
  sharding,
  stages as stages_lib,
  train,
)
from kdmri_jax.atomic import write_atomic, write_text_atomic
from kdmri_jax.data.pipeline import shard_bounds
from kdmri_jax.errors import InputError, Terminated, require, require_writable_dir

STAGES, TRAINED_STAGES = stages_lib.STAGES, stages_lib.TRAINED_STAGES
DISPLAY_NAMES = {
  "zf": "ZF",
  "teacher": "Teacher",
  "student": "Student",
  "feature": "AT student",
  "kd": "KD",
}
EVALUATE_DIR, REPORT_DIR = outputs.EVALUATE_DIR, outputs.REPORT_DIR
SPLITS_NEEDED = {
  **{s: ("train", "validation") for s in TRAINED_STAGES},
  "evaluate": ("validation",),
}


def parse_stages(spec: str | Sequence[str]) -> list[str]:
  """Stage names from 'teacher,student' (any order, run in the paper's order); one sentence if
  unknown."""
  names = split_names(spec)
  unknown = [s for s in names if s not in STAGES]
  require(
    not unknown and names,
    f"config.stages={spec!r} names unknown stage(s) {unknown}; choose from {','.join(STAGES)}.",
  )
  return [s for s in STAGES if s in names]


def split_names(spec: str | Sequence[str]) -> list[str]:
  """The names of 'a, b' (or of a sequence), stripped, empty ones dropped."""
  return [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]


def evaluated_stages(config: Any) -> list[str]:
  """The trained stages the `evaluate` stage compares with ZF (config.evaluate.stages), in order."""
  return split_names(config.evaluate.stages)


def default_workdir(config: Any) -> str:
  """config.workdir, or experiments/{dataset}/acc_{acc} (experiments/{dataset}/sr for
  super-resolution)."""
  if config.workdir:
    return config.workdir
  if config.task == "super_resolution":
    return os.path.join("experiments", config.dataset, "sr")
  return os.path.join("experiments", config.dataset, f"acc_{config.acc}")


# --- models ---------------------------------------------------------------------------------------


def build_model(config: Any, role: str):
  """(preset name, model) of `role` ('teacher' | 'student') with the config's overrides and compute
  dtype."""
  name = getattr(config.models, role)
  require(
    name in models.PRESETS, f"config.models.{role}={name!r} is not one of {sorted(models.PRESETS)}."
  )
  cls, _ = models.PRESETS[name]
  fields = cls.__dataclass_fields__
  overrides = {}
  student_features = config.models.get("student_features") if role == "student" else None
  for key in ("num_cascades", "features"):
    value = (
      student_features
      if key == "features" and student_features is not None
      else config.models.get(key)
    )
    if value is not None and key in fields:
      overrides[key] = int(value)
  dtypes = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16}
  require(
    config.train.compute_dtype in dtypes,
    f"config.train.compute_dtype={config.train.compute_dtype!r} is not one of {sorted(dtypes)}.",
  )
  if config.train.compute_dtype != "float32":
    overrides["dtype"] = dtypes[config.train.compute_dtype]
  model = models.build_model(name, **overrides)
  task = "reconstruction" if models.is_reconstruction(model) else "super_resolution"
  require(
    task == config.task,
    f"config.models.{role}={name!r} is a {task} model but config.task="
    f"{config.task!r}; use DC-CNN presets for reconstruction, VDSR for super_resolution.",
  )
  return name, model


def stage_key(seed: int, stage: str) -> jax.Array:
  """Initialisation key of a stage: the same for `student` and `feature`, so both start alike."""
  role = train.role_of(stage)
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(role.encode()))


def load_stage_params(workdir: str, stage: str, model_name: str, model, needed_by: str):
  """Best parameters of a finished (or at least once validated) stage, for `model` built from preset
  `model_name`; one sentence if there are none or they were trained for another model shape."""
  folder = outputs.best_dir(workdir, stage)
  require(
    outputs.has_best(workdir, stage),
    f"stage {needed_by!r} needs the {stage} checkpoint in {folder}, which does not exist; "
    f"run --config.stages={stage} first (or point --workdir at a run that has it).",
  )
  _, params, meta = checkpoints.load_params(folder, expected_model=model_name)
  saved, wanted = meta["model_kwargs"], models.model_kwargs(model)
  fields = model.__dataclass_fields__  # a field newer than the checkpoint: its default
  saved = {k: saved.get(k, fields[k].default) for k in wanted}
  differing = [k for k in wanted if k != "dtype" and saved[k] != wanted[k]]
  if differing:
    had = ", ".join(f"{k}={saved[k]!r}" for k in differing)
    builds = ", ".join(f"{k}={wanted[k]!r}" for k in differing)
    raise InputError(
      f"{folder} holds a {model_name!r} model with {had}, but this config builds "
      f"{builds} (config.models); rerun with the config it was trained with, use "
      f"another --workdir, or delete {os.path.dirname(folder)} to retrain it."
    )
  return params, meta


# --- data -----------------------------------------------------------------------------------------


def volume_ranges(source: Any) -> list[tuple[str, range]]:
  """(volume name, example indices) per volume; the whole set as one volume if the source has no
  volumes."""
  if hasattr(source, "volume_ranges"):
    return list(source.volume_ranges())
  return [("validation", range(len(source)))]


def load_data(config: Any, split: str):
  """The split's source (`kdmri_jax.data.load_split`; cut to config.data.max_slices there)."""
  from kdmri_jax import data

  return data.load_split(config, split)


# --- stages ---------------------------------------------------------------------------------------


def run_training_stage(
  stage: str, config: Any, workdir: str, mesh, train_source, val_source
) -> train.StageResult:
  name, model = build_model(config, train.role_of(stage))
  teacher, teacher_params = None, None
  if stage in ("feature", "kd"):
    teacher_name, teacher = build_model(config, "teacher")
    teacher_params, _ = load_stage_params(workdir, "teacher", teacher_name, teacher, stage)
  height, width = np.shape(train_source[0]["target"])
  init = models.init_params(model, stage_key(config.train.seed, stage), height, width)
  described = train.describe_objective(stage, config)
  if stage == "kd" and config.kd.init_from != "scratch":
    init, init_meta = load_stage_params(workdir, config.kd.init_from, name, model, stage)
    described["init"] = init_meta.get("objective")  # how the starting point was trained and chosen
    _say(f"kd: student initialised from the best {config.kd.init_from} checkpoint")
  _, student = build_model(config, "student")  # the branches of an SFT teacher stage
  objective = train.make_objective(stage, config, model, teacher, student)
  batches = train.Batches(
    train_source, config.train.batch_size, config.train.seed, config.data.num_workers
  )
  val_batches = train.Batches(
    val_source, config.train.batch_size, config.train.seed, config.data.num_workers
  )
  meta = checkpoints.make_meta(
    name,
    model,
    stage=stage,
    dataset=config.dataset,
    acc=config.acc,
    task=config.task,
    objective=described,
  )
  if teacher_params is not None:
    teacher_params = sharding.replicate(teacher_params, mesh)
  return train.fit(
    os.path.join(workdir, stage),
    objective,
    init,
    batches,
    val_batches,
    config,
    mesh,
    teacher_params=teacher_params,
    meta=meta,
  )


def predict_all(model, params, source, batch_size: int, mesh) -> np.ndarray:
  """Predictions (N, H, W) for every example of `source`, in order, on every process."""
  batches = train.Batches(source, batch_size)
  predict = train.make_predict(model, mesh)
  params = sharding.replicate(params, mesh)
  outputs = []
  for local, _ in batches.evaluation():
    outputs.append(
      np.asarray(sharding.to_host(predict(params, sharding.global_batch(local, mesh))))
    )
  return ordered_predictions(len(source), np.concatenate(outputs), batch_size, jax.process_count())


def ordered_predictions(
  num_examples: int, predictions: np.ndarray, batch_size: int, count: int
) -> np.ndarray:
  """Undoes the evaluation batching's layout over `count` processes (each global batch holds every
  process's next rows of its contiguous shard): rows back in example order, padding dropped."""
  if count == 1:
    return predictions[:num_examples]
  local = batch_size // count
  bounds = shard_bounds(num_examples, count)
  steps = predictions.shape[0] // batch_size
  per_host = predictions.reshape(steps, count, local, *predictions.shape[1:]).transpose(
    1, 0, 2, 3, 4
  )
  per_host = per_host.reshape(count, steps * local, *predictions.shape[1:])
  return np.concatenate([per_host[h][: bounds[h + 1] - bounds[h]] for h in range(count)])


def run_evaluate(config: Any, workdir: str, mesh, val_source) -> dict[str, Any]:
  """ZF and the trained models on the validation set: metrics per volume and per slice, and the
  reconstructions, under workdir/results/<model>/; returns the per-volume summary."""
  out_dir = os.path.join(workdir, EVALUATE_DIR)
  sharding.check_batch_size(config.evaluate.batch_size, mesh)
  targets = _stacked(val_source, "target")
  methods = evaluated_images(config, workdir, mesh, val_source)
  summary = {"dataset": config.dataset, "acc": config.acc, "task": config.task, "methods": {}}
  ranges = volume_ranges(val_source)
  for method, (images, num_params, objective) in methods.items():
    result = _evaluate_method(config, out_dir, method, images, num_params, targets, ranges)
    summary["methods"][method] = {
      "name": DISPLAY_NAMES.get(method, method),
      "params": num_params,
      "objective": objective,
      "volumes": result["volumes"],
    }
  if sharding.is_primary():
    _write_evaluation(out_dir, summary, targets, methods, ranges[0][1])
  return summary


def _stacked(source: Any, key: str) -> np.ndarray:
  return np.stack([np.asarray(source[i][key], np.float32) for i in range(len(source))])


def evaluated_images(config: Any, workdir: str, mesh, val_source) -> dict[str, tuple]:
  """{method: (images (N, H, W), parameter count, recorded objective)}: ZF and every evaluated
  stage's best model on the validation set."""
  methods = {"zf": (_stacked(val_source, "input"), None, None)}
  for stage in evaluated_stages(config):
    name, model = build_model(config, train.role_of(stage))
    params, meta = load_stage_params(workdir, stage, name, model, "evaluate")
    methods[stage] = (
      predict_all(model, params, val_source, config.evaluate.batch_size, mesh),
      models.count_params(params),
      meta.get("objective"),
    )
  return methods


def _evaluate_method(config, out_dir, method, images, num_params, targets, ranges) -> dict:
  """One method's metrics per volume and slice, written under out_dir/<method>/ (primary only)."""
  from kdmri_jax import evaluate, valid

  volumes = [(name, targets[r.start : r.stop], images[r.start : r.stop]) for name, r in ranges]
  result = evaluate.evaluate_volumes(volumes, per_slice=True)
  folder = os.path.join(out_dir, method)
  if sharding.is_primary():
    evaluate.write_outputs(
      folder, result, {"method": DISPLAY_NAMES.get(method, method), "params": num_params}
    )
    if config.evaluate.save_reconstructions:
      for name, r in ranges:
        valid.write_reconstruction(os.path.join(folder, f"{name}.h5"), images[r.start : r.stop])
  return result


def _write_evaluation(out_dir: str, summary: dict, targets, methods: dict, first: range) -> None:
  """The report's figure slices (the middle slice of the first volume), summary.json, `done`."""
  from kdmri_jax import evaluate

  middle = first.start + len(first) // 2
  slices = {"target": targets[middle], **{m: images[middle] for m, (images, *_) in methods.items()}}
  write_atomic(os.path.join(out_dir, outputs.FIGURE_SLICE), lambda tmp: _write_npz(tmp, slices))
  write_text_atomic(
    os.path.join(out_dir, outputs.SUMMARY), json.dumps(evaluate.json_safe(summary), indent=1)
  )
  write_text_atomic(os.path.join(out_dir, train.DONE), "evaluated\n")


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  with open(path, "wb") as f:  # a file object: np.savez would add '.npz' to a path
    np.savez_compressed(f, **arrays)


def run_report(config: Any, workdir: str, command: str | None = None) -> str:
  """report/report.md (the paper's table) and report/figure.png from the evaluate stage's
  outputs."""
  from kdmri_jax import report

  results = os.path.join(workdir, EVALUATE_DIR)
  path = os.path.join(results, outputs.SUMMARY)
  require(
    os.path.exists(path),
    f"the report needs the evaluation in {path}, which does not exist; run "
    f"--config.stages=evaluate first.",
  )
  summary = outputs.read_summary(results)
  rows = {}
  for method in summary["methods"].values():
    columns = {
      key: [np.nan if v[key] is None else v[key] for v in method["volumes"]]
      for key in ("PSNR", "SSIM", "NMSE", "HFN")
    }
    rows[method["name"]] = {**columns, "params": method["params"]}
  out = os.path.join(workdir, REPORT_DIR)
  os.makedirs(out, exist_ok=True)
  figure = os.path.join(out, "figure.png")
  slices = outputs.read_figure_slices(results, summary["methods"])
  images = {DISPLAY_NAMES.get(m, m): slices[m] for m in summary["methods"]}
  setting = experiment_setting(config)
  report.qualitative_figure(
    figure, images, slices["target"], title=f"{config.dataset} {setting}, validation slice"
  )
  objectives = {
    method["name"]: recorded_objective(config, key, method.get("objective"))
    for key, method in summary["methods"].items()
    if key != "zf"
  }
  written = report.write_report(
    os.path.join(out, "report.md"),
    report.results_table(rows),
    {
      "title": f"KD-MRI: {config.dataset} {setting}",
      "dataset": config.dataset,
      "acc": "none (super-resolution)" if config.task == "super_resolution" else config.acc,
      "command": command,
      "figure": figure,
      "objectives": report.objectives_section(objectives),
    },
  )
  write_text_atomic(os.path.join(out, train.DONE), "reported\n")
  return str(written)


def recorded_objective(config: Any, stage: str, recorded: dict | None) -> dict:
  """A stage's objective as its checkpoint recorded it; for a checkpoint from before that record,
  the config's, marked as such."""
  if recorded is not None:
    return recorded
  described = {**train.describe_objective(stage, config), "from_config": True}
  if stage == "kd" and config.kd.init_from != "scratch":
    described["init"] = train.describe_objective(config.kd.init_from, config)
  return described


def experiment_setting(config: Any) -> str:
  """'4x' for reconstruction; for super-resolution, which ignores config.acc, the k-space window
  kept."""
  if config.task == "super_resolution":
    from kdmri_jax.data import sr

    keep = sr.keep_from_config(config)
    return f"super-resolution (central {keep}×{keep} k-space)"
  return config.acc


def prerequisites(config: Any, stage: str) -> list[str]:
  """Stages whose best checkpoint `stage` reads."""
  if stage == "feature":
    return ["teacher"]
  if stage == "kd":
    return ["teacher"] + (
      [config.kd.init_from] if config.kd.init_from in ("feature", "student") else []
    )
  if stage == "evaluate":
    return evaluated_stages(config)
  if stage == "report":
    return ["evaluate"]
  return []


def check_prerequisites(config: Any, workdir: str, todo: Sequence[str]) -> None:
  """Fails in one sentence before any work when a stage needs a checkpoint no stage will produce."""
  require(
    config.kd.init_from in ("feature", "student", "scratch"),
    f"config.kd.init_from={config.kd.init_from!r} is not one of 'feature', 'student', 'scratch'.",
  )
  needs_init = losses.IMITATION_INIT_FROM.get(config.kd.imitation)
  require(
    "kd" not in todo or needs_init in (None, config.kd.init_from),
    f"config.kd.imitation={config.kd.imitation!r} is the authors' script, which starts from "
    f"the {needs_init} stage; set config.kd.init_from={needs_init} "
    f"(not {config.kd.init_from!r}).",
  )
  for i, stage in enumerate(todo):
    for needed in prerequisites(config, stage):
      require(
        needed in STAGES,
        f"config.evaluate.stages names unknown stage "
        f"{needed!r}; choose from {','.join(TRAINED_STAGES)}.",
      )
      if needed in todo[:i]:
        continue
      if needed == "evaluate":
        what, where, ready = "results", outputs.stage_dir(workdir, needed), _done(workdir, needed)
      else:
        what, where = "checkpoint", outputs.best_dir(workdir, needed)
        ready = outputs.has_best(workdir, needed)
      require(
        ready,
        f"stage {stage!r} needs the {needed} {what} in {where}, which does not exist; "
        f"run --config.stages={needed} first (or point --workdir at a run that has "
        f"it).",
      )


def check_stages(config: Any, todo: Sequence[str]) -> None:
  """Builds the models and traces the objectives of the stages to run (no compute), so a wrong model
  name, feature loss or layer pair fails at start-up rather than after hours of teacher training."""
  built = {role: build_model(config, role)[1] for role in ("teacher", "student")}
  for stage in todo:
    if stage in TRAINED_STAGES:
      model = built[train.role_of(stage)]
      teacher = built["teacher"] if stage in ("feature", "kd") else None
      objective = train.make_objective(stage, config, model, teacher, built["student"])
      train.check_objective(objective)
  require(
    config.evaluate.batch_size >= 1,
    f"config.evaluate.batch_size={config.evaluate.batch_size} must be at least 1.",
  )


def record_config(config: Any, workdir: str) -> str:
  """Writes the full config as workdir/config.json; a rerun with a different config adds
  config_<n>.json instead of replacing the record of what produced the existing outputs."""
  text = config.to_json_best_effort(indent=1, sort_keys=True) + "\n"
  path, n = os.path.join(workdir, "config.json"), 1
  while os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return path
    path, n = os.path.join(workdir, f"config_{n}.json"), n + 1
  write_text_atomic(path, text)
  return path


def _done(workdir: str, stage: str) -> bool:
  return train.is_done(outputs.stage_dir(workdir, stage))


def stages_read(config: Any, stages: Sequence[str]) -> list[str]:
  """The stages a run of `stages` runs or reads the outputs of, in the paper's order."""
  needed = {s for stage in stages for s in prerequisites(config, stage)} | set(stages)
  return [s for s in STAGES if s in needed]


def check_workdir(config: Any, workdir: str, stages: Sequence[str]) -> list[str]:
  """Before anything runs: refuses a config that differs from what a stage it runs or reads was
  made with; moves aside what such a stage left damaged (and un-marks it done). Returns the stages
  to run."""
  involved = stages_read(config, stages)
  for stage in involved:
    outputs.check_record(config, workdir, stage, _say)
  damaged = {stage: outputs.find_damage(workdir, stage) for stage in involved}
  _sync("kdmri_jax.pipeline: workdir checked")  # every process looked before anything moves
  if sharding.is_primary():
    for stage, found in damaged.items():
      outputs.repair(workdir, stage, found, _say)
  todo = [s for s in stages if damaged.get(s) or not _done(workdir, s)]
  for stage in stages:
    if stage not in todo:
      _say(
        f"{stage}: already done in {outputs.stage_dir(workdir, stage)}; "
        f"skipping (delete that folder to redo it)."
      )
  return todo


def _sync(name: str) -> None:
  """A barrier over all processes (nothing with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


@dataclasses.dataclass
class Progress:
  """Where `run` is, for the sentence a termination signal ends it with (`main.stopped_sentence`):
  the stages it runs (None until start-up chose them), those it finished and the one running (None
  between stages: while a record is written or a finished stage's result is said)."""

  todo: list[str] | None = None
  finished: list[str] = dataclasses.field(default_factory=list)
  running: str | None = None

  def next_stage(self) -> str | None:
    """The first stage of `todo` not yet finished."""
    return next((s for s in self.todo or () if s not in self.finished), None)


def run(config: Any, workdir: str | None = None, command: str | None = None) -> int:
  """Runs the configured stages in order; returns 0 when they all finished or the run was stopped by
  a signal in a training loop (rerun to resume). Raises InputError for bad input and TrainingStopped
  for a NaN loss; a termination signal elsewhere (`errors.Terminated`) leaves with its `progress`
  set to a `Progress`: where the run was."""
  progress = Progress()
  try:
    workdir, mesh, source = _start(config, workdir, progress)
    for stage in progress.todo:
      if sharding.is_primary():
        outputs.write_record(config, workdir, stage)
      progress.running = stage
      said = _run_stage(stage, config, workdir, mesh, source, command)
      progress.running = None
      if said is None:  # its training loop stopped on a signal and saved: a rerun resumes it
        return 0
      progress.finished.append(stage)
      for line in said:
        _say(line)
    return 0
  except Terminated as stop:
    stop.progress = progress
    raise


def _start(config: Any, workdir: str | None, progress: Progress):
  """Start-up: the processes, the workdir, a pretrained teacher, every check and the data; sets
  `progress.todo`. Returns (workdir, mesh, source(split) -> that split's data)."""
  dist = config.distributed
  sharding.initialize_distributed(
    dist.coordinator_address, dist.num_processes, dist.process_id, dist.auto
  )
  stages = parse_stages(config.stages)
  workdir = require_writable_dir(workdir or default_workdir(config), "--workdir")
  mesh = sharding.make_mesh()
  if sharding.is_primary():  # a teacher trained beforehand becomes this workdir's finished teacher
    installed = pretrained.install(config.pretrained_teacher, workdir)
    if installed:
      _say(installed)
  _sync("kdmri_jax.pipeline: pretrained teacher")
  # Everything that can be checked is checked before anything is written or trained.
  todo = check_workdir(config, workdir, stages)
  check_prerequisites(config, workdir, todo)
  check_stages(config, todo)
  sources = {}

  def source(split):
    if split not in sources:
      sources[split] = load_data(config, split)
    return sources[split]

  for split in sorted({split for stage in todo for split in SPLITS_NEEDED.get(stage, ())}):
    source(split)
  if sharding.is_primary():
    record_config(config, workdir)
  progress.todo = list(todo)
  return workdir, mesh, source


def _run_stage(stage: str, config: Any, workdir: str, mesh, source, command) -> list[str] | None:
  """Runs one stage; returns the lines that say how it ended, or None when a signal stopped its
  training loop (it saved; a rerun resumes it)."""
  if stage in TRAINED_STAGES:  # train.fit says whether the stage starts or resumes, and where
    result = run_training_stage(stage, config, workdir, mesh, source("train"), source("validation"))
    if result.status == "interrupted":
      return None
    return [
      f"{stage}: done at step {result.step}; best val_loss "
      f"{result.best_val_loss:.6g} at step {result.best_step}"
    ]
  _say(f"{stage}: starting in {workdir}")
  if stage == "evaluate":
    summary = run_evaluate(config, workdir, mesh, source("validation"))
    said = []
    for method in summary["methods"].values():
      psnr = np.mean([v["PSNR"] for v in method["volumes"] if v["PSNR"] is not None])
      said.append(f"evaluate: {method['name']:<8} PSNR {psnr:.2f} dB")
    return said
  if stage == "report" and sharding.is_primary():
    return [f"report: wrote {run_report(config, workdir, command)}"]
  return []


def _say(text: str) -> None:
  if sharding.is_primary():
    print(text, flush=True)
