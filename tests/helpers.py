"""Shared test helpers: folder hashes, one-line error checks, tiny configs and tiny `main` runs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import subprocess
import sys
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_hash(path: str | os.PathLike, ignore: Sequence[str] = ()) -> str:
  """SHA-256 over every file's relative path and bytes and every folder's name under `path` ('' if
  absent); files named in `ignore` (relative paths) are left out."""
  path = os.fspath(path)
  if not os.path.exists(path):
    return ""
  digest = hashlib.sha256()
  if os.path.isfile(path):
    with open(path, "rb") as f:
      digest.update(f.read())
    return digest.hexdigest()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    rel = os.path.relpath(root, path)
    digest.update(f"D {rel}\n".encode())
    for name in sorted(files):
      if os.path.normpath(os.path.join(rel, name)) in ignore:
        continue
      digest.update(f"F {os.path.join(rel, name)}\n".encode())
      with open(os.path.join(root, name), "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()


def assert_one_line_error(status: int, stderr: str, *fragments: str) -> str:
  """A refused input: non-zero status, exactly one stderr line 'error: ...' naming each fragment."""
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert status != 0, f"exit status 0; stderr: {stderr!r}"
  assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{stderr}"
  assert lines[0].startswith("error: "), lines[0]
  assert "Traceback" not in stderr
  for fragment in fragments:
    assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"
  return lines[0]


def subprocess_env(compile_cache: str | os.PathLike | None = None, **extra: str) -> dict[str, str]:
  """Environment of a CLI subprocess: CPU JAX, the repository importable, an optional persistent
  compilation cache (same programs, so the same results; it only skips XLA's compile time)."""
  env = dict(os.environ)
  env.update(
    JAX_PLATFORMS="cpu",
    PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
    PYTHONUNBUFFERED="1",
    TF_CPP_MIN_LOG_LEVEL="3",
  )
  if compile_cache is not None:
    env.update(
      JAX_COMPILATION_CACHE_DIR=os.fspath(compile_cache),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
  env.update(extra)
  return env


_CACHE_FLAGS = (
  "jax_compilation_cache_dir",
  "jax_persistent_cache_min_compile_time_secs",
  "jax_persistent_cache_min_entry_size_bytes",
)


@contextlib.contextmanager
def compilation_cache(path: str | os.PathLike, min_compile_seconds: float = 0.2):
  """Within: this process keeps its XLA compiles of at least `min_compile_seconds` in the
  persistent cache at `path` and reads them back (same programs, so the same results, as
  `subprocess_env`'s cache); after: the settings before, cache uninitialised again."""
  import jax
  from jax.experimental.compilation_cache import compilation_cache as cache

  before = {name: getattr(jax.config, name) for name in _CACHE_FLAGS}
  values = (os.fspath(path), min_compile_seconds, 0)
  for name, value in zip(_CACHE_FLAGS, values):
    jax.config.update(name, value)
  cache.reset_cache()
  try:
    yield
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
    cache.reset_cache()


def run_module(
  module: str, argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
  """`python -m module argv...` from the repository root; text output captured."""
  return subprocess.run(
    [sys.executable, "-m", module, *map(str, argv)],
    cwd=REPO,
    env=env or subprocess_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


# What every tiny test run shares: a one-cascade DC-CNN, 4 features, batches of 2, no progress bar.
TINY_FIELDS = {
  "models.num_cascades": 1,
  "models.features": 4,
  "train.batch_size": 2,
  "evaluate.batch_size": 2,
  "train.progress_bar": False,
}


def tiny_fields(**overrides: object) -> dict[str, object]:
  """TINY_FIELDS and `overrides` (keyword `train__num_epochs` stands for 'train.num_epochs')."""
  return {**TINY_FIELDS, **{key.replace("__", "."): value for key, value in overrides.items()}}


def tiny_config(base=None, **overrides: object):
  """`base` (default: configs/default.py's config) with `tiny_fields(**overrides)` set."""
  from configs import default

  config = default.get_config() if base is None else base
  config.update_from_flattened_dict(tiny_fields(**overrides))
  return config


def tiny_main_argv(
  workdir: str | os.PathLike,
  cache_dir: str | os.PathLike,
  stages: str = "teacher",
  epochs: int = 2,
  **overrides: object,
) -> list[str]:
  """`kdmri_jax.main` arguments for a seconds-long run of configs/brain_cpu.py: `tiny_fields`, the
  embedded brain at 32×32, 8 training slices (4 steps an epoch), a checkpoint after every step (many
  crash points; the parameters do not depend on it)."""
  fields = tiny_fields(
    **{
      "data__image_size": 32,
      "data__max_slices": 8,
      "data__cache_dir": os.fspath(cache_dir),
      "train__num_epochs": epochs,
      "train__log_every_steps": 1,
      "train__checkpoint_every_steps": 1,
      "stages": stages,
      **overrides,
    }
  )
  return [
    "--config",
    os.path.join(REPO, "configs", "brain_cpu.py"),
    "--workdir",
    os.fspath(workdir),
    *[f"--config.{k}={v}" for k, v in fields.items()],
  ]


def short_main_argv(workdir: str | os.PathLike, *extra: object) -> list[str]:
  """`kdmri_jax.main` arguments (from the repository root) for one epoch of 4 slices a volume of
  configs/brain_cpu.py with a one-cascade, 4-feature model, then `extra`."""
  return [
    "--config",
    "configs/brain_cpu.py",
    "--workdir",
    str(workdir),
    "--config.data.max_slices=4",
    "--config.train.num_epochs=1",
    "--config.models.num_cascades=1",
    "--config.models.features=4",
    "--config.train.batch_size=2",
    "--config.train.progress_bar=false",
    *map(str, extra),
  ]


def stage_state(workdir: str | os.PathLike, stage: str = "teacher") -> dict[str, object]:
  """{'step': newest training-state step, 'state/<path>': array, 'best/<path>': array} of a stage,
  read back with orbax from `<stage>/checkpoints` (params, optimizer state, RNG, step) and
  `<stage>/best`."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  from kdmri_jax import checkpoints

  out: dict[str, object] = {}
  folder = os.path.join(os.fspath(workdir), stage, "checkpoints")
  with ocp.CheckpointManager(folder, item_names=("state", "meta")) as mngr:
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  out["step"] = step
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    out["state" + jax.tree_util.keystr(path)] = np.asarray(leaf)
  _, params, _ = checkpoints.load_params(os.path.join(os.fspath(workdir), stage, "best"))
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    out["best" + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return out


def assert_same_state(got: dict, want: dict, what: str = "") -> None:
  """Bit-identical: same step, same leaves, every array equal (dtype and bytes)."""
  import numpy as np

  assert got["step"] == want["step"], (what, got["step"], want["step"])
  assert sorted(got) == sorted(want), what
  different = [
    key
    for key in want
    if key != "step"
    and not (got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]))
  ]
  assert not different, f"{what}: {len(different)} arrays differ, e.g. {different[:3]}"


def save_unread_checkpoint(path: str | os.PathLike) -> None:
  """A student checkpoint whose values no case reads (each fails before the model is loaded):
  zeros of the shapes `jax.eval_shape` gives, so no initialisation runs."""
  import jax
  import numpy as np

  from kdmri_jax import checkpoints, models

  model = models.build_model("student", num_cascades=1, features=4)
  shapes = jax.eval_shape(lambda: models.init_params(model, jax.random.PRNGKey(0), 8, 8))
  params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
  checkpoints.save_params(path, params, checkpoints.make_meta("student", model))


def phantom_argv(
  out: str | os.PathLike, *extra: object, size: int = 24, dataset: str = "brain"
) -> list[str]:
  """`kdmri_jax.prepare` arguments for 3 phantom volumes of size×size at 4x into `out`."""
  argv = ["--phantom", 3, "--size", size, size, "--dataset", dataset, "--acc", "4x", "--out", out]
  return [str(a) for a in (*argv, *extra)]


def prepare_argv(
  input_path: str | os.PathLike, out: str | os.PathLike, *extra: object
) -> list[str]:
  """`kdmri_jax.prepare` arguments: `input_path` as a brain dataset at 4x, split 1, into `out`."""
  argv = ["--input", input_path, "--dataset", "brain", "--acc", "4x", "--split", 1, "--out", out]
  return [str(a) for a in (*argv, *extra)]


def assert_entry_points_refuse(cases, case_ids, modules, world, tmp_path, workers: int = 2) -> None:
  """Runs the `cases` (id, command, setup(world, scratch) -> argv, fragments) named in `case_ids`
  through `python -m <modules[command]>`, `workers` at a time, each with an output folder of
  earlier results: status 2, one error line holding the fragments, the folder unchanged."""
  by_id = {case[0]: case for case in cases}
  jobs = {}
  for case_id in case_ids:
    _, command, setup, fragments = by_id[case_id]
    scratch = tmp_path / case_id
    (scratch / "outputs").mkdir(parents=True)
    (scratch / "outputs" / "report.txt").write_text("earlier\n")
    jobs[case_id] = (setup(world, scratch), modules[command], fragments, scratch / "outputs")
  hashes = {case_id: tree_hash(job[3]) for case_id, job in jobs.items()}
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = dict(zip(jobs, pool.map(lambda job: run_module(job[1], job[0]), jobs.values())))
  for case_id, result in results.items():
    assert result.returncode == 2, (case_id, result.stderr[-2000:])
    assert_one_line_error(result.returncode, result.stderr, *jobs[case_id][2])
    assert tree_hash(jobs[case_id][3]) == hashes[case_id], case_id


def line_mask_strategies(lines: tuple[int, int], other: tuple[int, int], acc: tuple[float, float]):
  """Hypothesis strategies of a line mask's (lines, other side, acceleration, seed, direction)."""
  from hypothesis import strategies as st

  from kdmri_jax import masks

  return (
    st.integers(*lines),
    st.integers(*other),
    st.floats(*acc),
    st.integers(0, 2**31 - 1),
    st.sampled_from(masks.DIRECTIONS),
  )


def line_mask_shape(lines: int, other: int, direction: str) -> tuple[int, int]:
  """The image shape with `lines` along the sampled `direction` ('rows' or 'columns')."""
  return (lines, other) if direction == "rows" else (other, lines)
