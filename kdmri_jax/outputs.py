"""What the stages of a workdir have written, checked before a run uses it.

Record. When a stage starts from nothing it writes `<stage folder>/stage_config.json`: the config
fields that decide what it makes (`record_fields`):
  data       dataset, task, data.max_slices; acc (reconstruction) or sr.keep (super-resolution);
             for the embedded brain (no data.root) data.image_size and data.seed, and for
             reconstruction data.mask_family and data.mask_seed
  model      models.teacher or models.student (the preset the stage trains; feature and kd also
             name the teacher they distil from), models.num_cascades, models.features, and for the
             student models.student_features
  objective  train.loss (teacher, student, kd); kd.feature_loss, kd.layer_pairs,
             kd.feature_weight, kd.feature_best (feature); kd.imitation, kd.alpha (only where the
             objective uses it), kd.kd_feature_weight, kd.init_from, and kd.feature_loss and
             kd.layer_pairs when kd.kd_feature_weight is set (kd); evaluate.stages (evaluate)
Paths (data.root, data.mask_path, data.cache_dir) are not recorded, so moved data can be used; the
optimisation settings are not either (a changed batch size is refused by the training
checkpoint's steps per epoch). A run whose config differs from the record of a stage it runs or
reads is refused in one sentence naming the field, both values and what to do (`check_record`).
The report has no record: it only lays out the evaluation. A stage started before records existed
has none and gets none; the shapes of its training state and best model are still checked against
the config's model when they are read (`train.restore_or_init`, `pipeline.load_stage_params`).

Damage. What the pipeline reads back from a stage — a trained stage's `best/`, the evaluation's
summary.json, figure_slice.npz and metrics.json files, the report's report.md and figure.png — is
checked before a run (`find_damage`); a damaged item is named in a warning line, moved aside to
`<name>.damaged-<unix time>` and the stage's `done` marker removed, so the stage runs again when
asked (`repair`): a trained stage then rebuilds its best model from its training checkpoints
(`train.rebuild_best`), the evaluation and the report are recomputed.

A command's own output. Before `export` or `prepare` writes its --out, an existing one is checked
(`check_existing`): a damaged output of that command (a file or folder it could not read back) is
named in a warning, moved aside the same way and written again once the inputs have been read
(`move_damaged_aside`); a whole one, or a path that is not the command's output at all, is refused
in one sentence unless --overwrite replaces it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from kdmri_jax import checkpoints, losses, sharding, train
from kdmri_jax.atomic import write_text_atomic
from kdmri_jax.errors import InputError, require

EVALUATE_DIR, REPORT_DIR = "results", "report"
RECORD = "stage_config.json"
SUMMARY, FIGURE_SLICE, METRICS = "summary.json", "figure_slice.npz", "metrics.json"
REPORT_FILES = ("report.md", "figure.png")
SUMMARY_COLUMNS = ("PSNR", "SSIM", "NMSE", "HFN")

_TEACHER = ("models.teacher", "models.num_cascades", "models.features")
_STUDENT = ("models.student", "models.num_cascades", "models.features", "models.student_features")
_FEATURE = (
  "models.teacher",
  "kd.feature_loss",
  "kd.layer_pairs",
  "kd.feature_weight",
  "kd.feature_best",
)
_KD = (
  "models.teacher",
  "kd.imitation",
  "kd.alpha",
  "train.loss",
  "kd.kd_feature_weight",
  "kd.feature_loss",
  "kd.layer_pairs",
  "kd.init_from",
)
SFT_FIELDS = ("sft.enabled", "sft.branch_weight", "sft.agreement_weight", "sft.agreement")
STAGE_FIELDS = {
  "teacher": _TEACHER + ("train.loss",),
  "student": _STUDENT + ("train.loss",),
  "feature": _STUDENT + _FEATURE,
  "kd": _STUDENT + _KD,
  "evaluate": ("evaluate.stages",),
}
_UNSET = "(not used)"


class DamagedOutput(InputError):
  """A file a stage wrote cannot be read back: `path` and `reason` name it."""

  def __init__(self, path: str, reason: str, stage: str):
    super().__init__(
      f"{path} is damaged ({reason}); rerun --config.stages={stage} to write it again."
    )
    self.path, self.reason = path, reason


# --- the workdir's layout -------------------------------------------------------------------------


def stage_dir(workdir: str, stage: str) -> str:
  """A stage's folder: `<workdir>/<stage>`, `results/` for evaluate, `report/` for report."""
  return os.path.join(workdir, {"evaluate": EVALUATE_DIR, "report": REPORT_DIR}.get(stage, stage))


def best_dir(workdir: str, stage: str) -> str:
  return os.path.join(stage_dir(workdir, stage), "best")


def has_best(workdir: str, stage: str) -> bool:
  """Whether a trained stage has a best-model checkpoint (at least one committed step in best/)."""
  return checkpoints.has_step(best_dir(workdir, stage))


# --- what a stage was made with -------------------------------------------------------------------


def record_fields(config: Any, stage: str) -> dict[str, Any] | None:
  """{dotted config field: value} that decide what `stage` makes (module doc); None for the
  report."""
  if stage not in STAGE_FIELDS:
    return None
  reconstruction = config.task != "super_resolution"
  names = ["dataset", "task", "data.max_slices", "acc" if reconstruction else "sr.keep"]
  if config.data.root is None:  # the embedded brain, built from these
    names += ["data.image_size", "data.seed"]
    names += ["data.mask_family", "data.mask_seed"] if reconstruction else []
  unused = set()
  if config.kd.imitation not in losses.IMITATION_USES_ALPHA:
    unused.add("kd.alpha")
  if stage == "kd" and not config.kd.kd_feature_weight:
    unused |= {"kd.feature_loss", "kd.layer_pairs"}
  names += [name for name in STAGE_FIELDS[stage] if name not in unused]
  if train.uses_student_branches(stage, config):
    names += ["models.student", *SFT_FIELDS]
  return {name: _normalized(_field(config, name)) for name in dict.fromkeys(names)}


def _field(config: Any, name: str) -> Any:
  if name == "sr.keep":
    from kdmri_jax.data import sr

    return sr.keep_from_config(config)
  node = config
  for part in name.split("."):
    node = node.get(part) if hasattr(node, "get") else None
  return node


def _normalized(value: Any) -> Any:
  """The value as the JSON record reads back (tuples become lists)."""
  return json.loads(json.dumps(value))


def record_path(workdir: str, stage: str) -> str:
  return os.path.join(stage_dir(workdir, stage), RECORD)


def write_record(config: Any, workdir: str, stage: str) -> None:
  """Records what `stage` is made with when it starts from nothing. A trained stage that already has
  checkpoints but no record (written before records existed, or its record was damaged) gets none:
  its training state was made with a config this run cannot know (its array shapes are still
  checked on restore)."""
  fields = record_fields(config, stage)
  path = record_path(workdir, stage)
  folder = stage_dir(workdir, stage)
  started = any(
    checkpoints.has_step(os.path.join(folder, name)) for name in ("checkpoints", "best")
  )
  if fields is None or os.path.exists(path) or (stage != "evaluate" and started):
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  write_text_atomic(path, json.dumps({"stage": stage, "fields": fields}, indent=1) + "\n")


def check_record(config: Any, workdir: str, stage: str, say: Callable[[str], None]) -> None:
  """One sentence when `stage` was made with other values of its recorded fields than `config`'s."""
  recorded = _read_record(record_path(workdir, stage), say)
  current = record_fields(config, stage)
  if recorded is None or current is None:
    return
  folder = stage_dir(workdir, stage)
  for name in dict.fromkeys([*current, *recorded]):
    old, new = recorded.get(name, _UNSET), current.get(name, _UNSET)
    require(
      old == new,
      f"stage {stage!r} in {folder} was made with config.{name}={_shown(old)}, "
      f"but this run has config.{name}={_shown(new)}; keep the recorded value, "
      f"use another --workdir, or delete {folder} to redo the stage with the new "
      f"one.",
    )


def _shown(value: Any) -> str:
  return value if value == _UNSET else json.dumps(value)


def _read_record(path: str, say: Callable[[str], None]) -> dict[str, Any] | None:
  """The recorded fields, or None when there is none; a damaged record is moved aside."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      fields = json.load(f)["fields"]
    require(isinstance(fields, dict), "fields is not a mapping")
    return fields
  except (OSError, ValueError, KeyError, TypeError, InputError) as error:
    if sharding.is_primary():
      aside = checkpoints.move_aside(path)
      say(
        f"warning: {path} is damaged ({type(error).__name__}); moved it to {aside}; what the "
        f"stage was made with is no longer checked, only its model's shapes."
      )
    return None


# --- damage ---------------------------------------------------------------------------------------


def find_damage(workdir: str, stage: str) -> list[tuple[str, str]]:
  """(path, reason) of each item of `stage` that the pipeline reads back and cannot read."""
  folder = stage_dir(workdir, stage)
  try:  # an unfinished evaluation or report is redone whole anyway
    if stage == "evaluate":
      return _results_damage(folder) if train.is_done(folder) else []
    if stage == "report":
      for name in REPORT_FILES if train.is_done(folder) else ():
        _read_report_file(os.path.join(folder, name))
      return []
  except DamagedOutput as error:
    return [(error.path, error.reason)]
  best = best_dir(workdir, stage)
  reason = checkpoints.damage(best) if checkpoints.has_step(best) else None
  return [] if reason is None else [(best, reason)]


def _results_damage(folder: str) -> list[tuple[str, str]]:
  """The evaluation's damaged files: summary.json alone if it is one, else the figure slice and each
  method's metrics.json that cannot be read."""
  methods = read_summary(folder)["methods"]
  reads = [functools.partial(read_figure_slices, folder, methods)]
  reads += [
    functools.partial(_read_json, os.path.join(folder, m, METRICS), "evaluate") for m in methods
  ]
  found = []
  for read in reads:
    try:
      read()
    except DamagedOutput as error:
      found.append((error.path, error.reason))
  return found


def repair(
  workdir: str, stage: str, damaged: list[tuple[str, str]], say: Callable[[str], None]
) -> None:
  """Moves each damaged item aside, says so, and removes the stage's `done` marker."""
  trained = stage not in ("evaluate", "report")
  redo = "rebuilds it from its training checkpoints" if trained else "writes it again"
  for path, reason in damaged:
    aside = checkpoints.move_aside(path)
    say(
      f"warning: {path} is damaged ({reason}); moved it to {aside}; stage {stage!r} {redo} "
      f"when it runs (--config.stages={stage})."
    )
  done = os.path.join(stage_dir(workdir, stage), train.DONE)
  if damaged and os.path.exists(done):
    os.remove(done)


# --- reading results back -------------------------------------------------------------------------


def _read_json(path: str, stage: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise DamagedOutput(path, "missing", stage) from None
  except (OSError, ValueError) as error:
    raise DamagedOutput(path, f"{type(error).__name__}: not readable JSON", stage) from None


def read_summary(folder: str) -> dict[str, Any]:
  """The evaluation's summary.json, checked for every field the report reads."""
  path = os.path.join(folder, SUMMARY)
  summary = _read_json(path, "evaluate")
  try:
    methods = summary["methods"]
    require(isinstance(methods, dict) and methods, "no methods")
    for method in methods.values():
      require(isinstance(method["name"], str) and "params" in method, "a method lacks a field")
      for volume in method["volumes"]:
        for column in SUMMARY_COLUMNS:
          require(volume[column] is None or np.isfinite(float(volume[column])), f"bad {column}")
  except (KeyError, TypeError, ValueError, AttributeError, InputError) as error:
    raise DamagedOutput(path, f"{type(error).__name__} {error}", "evaluate") from None
  return summary


def read_figure_slices(folder: str, methods: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{'target', method...: the report figure's slice} from figure_slice.npz."""
  path = os.path.join(folder, FIGURE_SLICE)
  if not os.path.exists(path):
    raise DamagedOutput(path, "missing", "evaluate")
  try:
    with np.load(path) as slices:
      images = {key: np.asarray(slices[key]) for key in ["target", *methods]}
  except Exception as error:  # zipfile, zlib and numpy raise many types for a damaged file
    raise DamagedOutput(path, f"{type(error).__name__} while reading it", "evaluate") from None
  shapes = {image.shape for image in images.values()}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise DamagedOutput(path, f"slices of shapes {sorted(shapes)}", "evaluate")
  return images


def _read_report_file(path: str) -> None:
  """report.md must be non-empty text, figure.png a whole PNG image."""
  if not os.path.exists(path):
    raise DamagedOutput(path, "missing", "report")
  try:
    if path.endswith(".png"):
      from PIL import Image

      with Image.open(path) as image:
        image.load()
    else:
      with open(path, encoding="utf-8") as f:
        require(f.read().strip() != "", "empty")
  except Exception as error:  # PIL and decoding raise many types for a damaged file
    raise DamagedOutput(path, f"{type(error).__name__} while reading it", "report") from None


# --- a command's own output (export, prepare) ----------------------------------------------------


def check_existing(
  path: str, what: str, damage: Callable[[str], str | None], overwrite: bool
) -> str | None:
  """Before a command writes output `path` (its flag `what`): why it is a damaged output of the
  command (`damage(path)`; None for a whole one and for a path that is not the command's output),
  to be moved aside by `move_damaged_aside`; any other existing `path` is refused in one sentence
  unless `overwrite` replaces it. None when `path` does not exist."""
  if not os.path.lexists(path):
    return None
  reason = damage(path)
  require(
    reason is not None or overwrite,
    f"{what} {path} already exists; choose another {what} or pass --overwrite to replace it.",
  )
  return reason


def move_damaged_aside(path: str, reason: str, say: Callable[[str], None]) -> str:
  """Moves the damaged output `path` aside (`checkpoints.move_aside`) and says so; returns where."""
  aside = checkpoints.move_aside(path)
  say(f"warning: {path} is damaged ({reason}); moved it to {aside}; writing it again.")
  return aside
