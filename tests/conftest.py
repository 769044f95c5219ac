"""Shared test settings: CPU only, float32, fast hypothesis profiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile("ci")


# --- tiny `kdmri_jax.main` runs shared by the reliability tests (test_crash_safety,
# test_determinism) ---

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run_dirs(tmp_path_factory):
  """(embedded-data cache, persistent XLA compilation cache) shared by every tiny `main`
  subprocess (and read by test_stage_records' runs of `main.main` in the test process)."""
  root = tmp_path_factory.mktemp("tiny_runs")
  return root / "data_cache", root / "xla_cache"


@pytest.fixture(scope="session")
def uninterrupted_runs(tiny_run_dirs, tmp_path_factory):
  """Two uninterrupted tiny runs of the same config and seed, side by side: the reference every
  crashed-and-resumed run must equal, and the determinism check. The first compiles everything
  itself; the second fills the persistent compilation cache the later runs start from (so the
  comparison also shows that a cached executable gives the same bits as a fresh compile)."""
  import concurrent.futures

  from helpers import run_module, subprocess_env, tiny_main_argv

  data_cache, xla_cache = tiny_run_dirs
  root = tmp_path_factory.mktemp("uninterrupted")
  # The embedded brain is built once (under a file lock) before the two runs read it.
  from kdmri_jax import data

  data.embedded_brain_root(str(data_cache), size=32, accs=("4x",), seed=0)
  workdirs = [root / "a", root / "b"]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(
      pool.map(
        lambda w, cache: run_module(
          "kdmri_jax.main", tiny_main_argv(w, data_cache), env=subprocess_env(cache), timeout=300
        ),
        workdirs,
        [None, xla_cache],
      )
    )
  for result in results:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return workdirs


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory):
  """One persistent XLA compilation cache for the test modules that opt in with
  `helpers.compilation_cache` (identical programs compiled once per session)."""
  return tmp_path_factory.mktemp("xla_cache_in_process")
