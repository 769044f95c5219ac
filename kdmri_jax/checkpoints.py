"""Model checkpoints on orbax: what a checkpoint holds, how to write one, and how to load one by
path.

A kdmri_jax checkpoint is an orbax `CheckpointManager` directory whose steps hold two items:
  `params`  the model's parameter pytree (StandardSave);
  `meta`    JSON: {"format", "model" (a `kdmri_jax.models.PRESETS` name), "model_kwargs", ...} —
            enough to rebuild the model, so `valid`, `export` and `benchmark` need no `--model`.
Training keeps its full state (optimizer, RNG, data position) in a separate manager
(`kdmri_jax.train`); this module is the inference side shared by training (`best/`), `convert`,
`valid` and `export`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from kdmri_jax import models
from kdmri_jax.errors import InputError, require

FORMAT = "kdmri_jax/1"
ITEMS = ("params", "meta")


def make_meta(model_name: str, model: nn.Module, **extra: Any) -> dict[str, Any]:
  """The `meta` item for `model` built from preset `model_name`; `extra` adds e.g. stage, dataset,
  acc."""
  return {
    "format": FORMAT,
    "model": model_name,
    "model_kwargs": models.model_kwargs(model),
    **extra,
  }


def manager(
  directory: str | os.PathLike, best: bool = True, max_to_keep: int = 1, create: bool = True
) -> ocp.CheckpointManager:
  """A manager over params+meta; with `best`, it keeps the `max_to_keep` steps of lowest
  `val_loss`."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    create=create,
    best_fn=(lambda metrics: metrics["val_loss"]) if best else None,
    best_mode="min",
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=ITEMS)


def save_args(params: Any, meta: Mapping[str, Any]) -> ocp.args.Composite:
  """The orbax arguments that write one inference checkpoint step."""
  return ocp.args.Composite(
    params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(dict(meta))
  )


def save_params(
  directory: str | os.PathLike,
  params: Any,
  meta: Mapping[str, Any],
  step: int = 0,
  overwrite: bool = False,
) -> str:
  """Writes a one-step checkpoint; refuses to replace an existing one unless `overwrite`."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and os.listdir(directory):
    require(
      overwrite,
      f"output {directory} already exists and is not empty; choose a new --out or remove it.",
    )
    import shutil

    shutil.rmtree(directory)
  with manager(directory, best=False) as mngr:
    mngr.save(step, args=save_args(params, meta))
    mngr.wait_until_finished()
  return directory


def resolve(path: str | os.PathLike) -> tuple[str, int]:
  """(manager directory, step) for `path`: a training stage folder (uses its `best/`), a manager
  directory (its best step if it tracks one, else the latest), or one step folder inside a
  manager."""
  path = os.path.abspath(path)
  require(os.path.exists(path), f"checkpoint {path} does not exist.")
  require(os.path.isdir(path), f"checkpoint {path} is a file; pass the checkpoint directory.")
  if os.path.isdir(os.path.join(path, "best")):
    path = os.path.join(path, "best")
  if os.path.isdir(os.path.join(path, "meta")) and os.path.basename(path).isdigit():
    return os.path.dirname(path), int(os.path.basename(path))
  steps = sorted(
    int(name)
    for name in os.listdir(path)
    if name.isdigit() and os.path.isdir(os.path.join(path, name, "meta"))
  )
  require(
    bool(steps),
    f"checkpoint {path} holds no kdmri_jax checkpoint step (no <step>/meta folder); "
    f"pass a folder written by training, convert or save_params.",
  )
  if not _tracks_metrics(path, steps[-1]):
    return path, steps[-1]
  with manager(path, best=True, max_to_keep=len(steps), create=False) as mngr:
    step = mngr.best_step()
  return path, steps[-1] if step is None else step


def _tracks_metrics(directory: str, step: int) -> bool:
  return os.path.isdir(os.path.join(directory, str(step), "metrics"))


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The `meta` item of the checkpoint at `path` (see `resolve`), validated."""
  directory, step = resolve(path)
  try:
    with manager(directory, best=False, create=False) as mngr:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as error:  # orbax raises many types for a damaged folder
    raise InputError(
      f"checkpoint {directory}/{step} has an unreadable meta item ({type(error).__name__})."
    ) from None
  require(
    isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("model") in models.PRESETS,
    f"checkpoint {directory}/{step} is not a kdmri_jax "
    f"model checkpoint (its meta names no known model).",
  )
  return meta


def load_params(
  path: str | os.PathLike, expected_model: str | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
  """Loads (model, params, meta) from `path`; with `expected_model`, refuses a checkpoint of another
  model."""
  meta = load_meta(path)
  directory, step = resolve(path)
  if expected_model is not None:
    require(
      meta["model"] == expected_model,
      f"checkpoint {directory} holds a {meta['model']!r} "
      f"model, not the {expected_model!r} asked for.",
    )
  kwargs = dict(meta["model_kwargs"])
  if "dtype" in kwargs:
    kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
  model = models.build_model(meta["model"], **kwargs)
  try:
    with manager(directory, best=False, create=False) as mngr:
      params = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore())).params
  except Exception as error:
    raise InputError(
      f"checkpoint {directory}/{step} has unreadable parameters ({type(error).__name__}); "
      f"it may be truncated — retrain or re-convert it."
    ) from None
  expected = jax.eval_shape(lambda: models.init_params(model, jax.random.PRNGKey(0), 8, 8))
  _check_structure(expected, params, f"{directory}/{step}")
  return model, params, meta


def _check_structure(expected: Any, params: Any, where: str) -> None:
  want = {
    jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(expected)
  }
  got = {
    jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)
  }
  require(
    want == got,
    f"checkpoint {where} has parameters that do not fit its model "
    f"({len(got)} arrays, {len(want)} expected).",
  )


def restore_newest_good(
  mngr: ocp.CheckpointManager,
  restore: Callable[[int], Any],
  say: Callable[[str], None] = print,
  moved: list[int] | None = None,
) -> tuple[int | None, Any]:
  """(step, restored) of the newest step of `mngr` that `restore(step)` reads; (None, None) if none
  does.

  A step folder that cannot be read (truncated by a full disk, overwritten with garbage, emptied) is
  named in one line through `say`, moved aside to `<step>.corrupt-<unix time>` (kept for inspection;
  orbax ignores the name, so the step can be written again; the step is appended to `moved`) and the
  next older step is tried. An `InputError` from `restore` (a readable checkpoint that does not
  fit) is raised as is. Orbax's own writes are atomic (a `<step>.orbax-checkpoint-tmp` folder
  renamed when complete), so a crash mid-write leaves no such folder; this is for damage after the
  fact.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return step, restore(step)
    except InputError:
      raise  # the checkpoint is readable but does not fit the config: not damage
    except Exception as error:  # orbax/tensorstore raise many types for a damaged folder
      folder = os.path.join(os.fspath(mngr.directory), str(step))
      aside = move_aside(folder, "corrupt")
      say(
        f"warning: checkpoint {folder} is unreadable ({type(error).__name__}); "
        f"moved it to {aside} and trying the previous one."
      )
      if moved is not None:
        moved.append(step)
      mngr.reload()
  return None, None


def move_aside(path: str | os.PathLike, label: str = "damaged") -> str:
  """Renames file or folder `path` to `<path>.<label>-<unix time>` (kept for inspection, out of
  every reader's way); returns the new name (`path` itself when it is already gone)."""
  path = os.fspath(path)
  if not os.path.lexists(path):
    return path
  stamp = int(time.time())
  aside, n = f"{path}.{label}-{stamp}", 1
  while os.path.lexists(aside):
    aside, n = f"{path}.{label}-{stamp}-{n}", n + 1
  os.replace(path, aside)
  return aside


def has_step(directory: str | os.PathLike) -> bool:
  """Whether `directory` holds at least one committed checkpoint step (a `<step>` folder)."""
  directory = os.fspath(directory)
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def damage(path: str | os.PathLike) -> str | None:
  """Why the inference checkpoint at `path` cannot be loaded (a phrase), or None when it loads."""
  try:
    load_params(path)
  except InputError as error:
    return str(error).rstrip(".")
  except Exception as error:  # orbax raises many types for a damaged folder
    return f"{type(error).__name__} while reading it"
  return None
