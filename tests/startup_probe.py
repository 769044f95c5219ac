"""Real `python -m kdmri_jax.main` processes held at a known point of their start-up.

`held_config` writes a config file (configs/brain_cpu.py made tiny by the command line) that stops
the process at one point of start-up until the test lets it go: while its config file loads, or
inside the pipeline when it first loads data (after the workdir lock is taken, before anything is
trained). The process touches a `reached` file when it gets there, so the test knows where it is
without sleeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from helpers import REPO, subprocess_env, tiny_main_argv

_TEMPLATE = '''\
"""configs/brain_cpu.py, held at {where} until {go} exists (tests/startup_probe.py)."""
import os
import time

from configs import brain_cpu


def _hold():
  open({reached!r}, "w").close()
  while not os.path.exists({go!r}):
    time.sleep(0.02)


def get_config():
  if {where!r} == "config":
    _hold()
  else:
    from kdmri_jax import pipeline
    load_data = pipeline.load_data

    def held_load_data(config, split):
      _hold()
      return load_data(config, split)

    pipeline.load_data = held_load_data
  return brain_cpu.get_config()
'''


def held_config(folder, where: str = "load_data", name: str = "held") -> tuple[str, str, str]:
  """(config path, reached file, go file) of a config held at `where` ('config' | 'load_data')."""
  os.makedirs(folder, exist_ok=True)
  path, reached, go = (os.path.join(folder, name + suffix) for suffix in (".py", ".reached", ".go"))
  with open(path, "w") as f:
    f.write(_TEMPLATE.format(where=where, reached=reached, go=go))
  return path, reached, go


def main_argv(config_path: str, workdir, cache_dir) -> list[str]:
  """The tiny `main` command line of tests/helpers.py, with `config_path` as the config file."""
  argv = tiny_main_argv(workdir, cache_dir, epochs=1)
  argv[argv.index("--config") + 1] = config_path
  return argv


def start_main(argv) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, "-m", "kdmri_jax.main", *map(str, argv)],
    cwd=REPO,
    env=subprocess_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def wait_until_reached(proc: subprocess.Popen, reached: str, timeout: float = 180.0) -> None:
  """Waits for the process to touch `reached`; fails with its output if it ends or times out."""
  deadline = time.time() + timeout
  while not os.path.exists(reached):
    if proc.poll() is not None or time.time() > deadline:
      proc.kill()
      out, err = proc.communicate()
      raise AssertionError(
        f"the held run did not reach {reached} (status "
        f"{proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}"
      )
    time.sleep(0.02)
