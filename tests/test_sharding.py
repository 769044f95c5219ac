"""Tests for kdmri_jax.sharding: the sharded step equals the single-device step, and two processes
on 127.0.0.1 (jax.distributed, CPU gloo collectives) train exactly what one process trains."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from kdmri_jax import sharding
from kdmri_jax.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(
  script: str, env_extra: dict | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **(env_extra or {}))
  return subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=timeout,
  )


def test_batch_size_must_divide_the_mesh():
  mesh = sharding.make_mesh()
  assert sharding.check_batch_size(4, mesh) == 4
  assert sharding.process_slice(4) == slice(0, 4)
  with pytest.raises(InputError, match="multiple of"):
    sharding.check_batch_size(3, _FakeMesh(2))


class _FakeMesh:
  """Stands in for a 2-device mesh (the test process has one CPU device)."""

  def __init__(self, n):
    self.devices = np.zeros(n)


def test_distributed_flags_must_come_together():
  with pytest.raises(InputError, match="together"):
    sharding.initialize_distributed("127.0.0.1:1", None, 0)
  with pytest.raises(InputError, match="process_id"):
    sharding.initialize_distributed("127.0.0.1:1", 2, 2)
  sharding.initialize_distributed()  # single process: nothing happens


SHARDED = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import PartitionSpec
    from tests.test_train import tiny_config, tiny_model, params_of
    from kdmri_jax import sharding, train
    from kdmri_jax.train_input import Batches, synthetic_source
    assert len(jax.devices()) == 4
    config = tiny_config(batch_size=4)
    teacher, student = tiny_model("teacher"), tiny_model("student")
    objective = train.make_objective("kd", config, student, teacher)
    data = Batches(synthetic_source(12), 4, seed=3)
    meshes = {n: sharding.make_mesh(jax.devices()[:n]) for n in (4, 1)}
    tx = train.make_optimizer(config.train, data.steps_per_epoch)
    t_params = params_of(teacher, 1)
    steps = {n: train.make_train_step(objective, tx, m, sharding.replicate(t_params, m))
             for n, m in meshes.items()}
    host = sharding.to_host(train.create_train_state(params_of(student, 2), tx, 0))
    worst, noise_only = 0.0, set()
    grad_fn = jax.jit(jax.grad(lambda p, b: objective.loss(p, t_params, b)[0]))
    for local in data.epoch(0):  # each step from the same state on 4 devices and on 1
      grads = grad_fn(host.params, local)
      noise_only |= {jax.tree_util.keystr(k) for k, g in jax.tree_util.tree_leaves_with_path(grads)
                     if np.max(np.abs(g)) < 1e-6}
      out = {}
      for n, mesh in meshes.items():
        batch = sharding.global_batch(local, mesh)
        assert batch["input"].sharding.spec == PartitionSpec("data")
        state, metrics = steps[n](sharding.replicate(host, mesh), batch)
        kernel = state.params["cascade_0"]["conv_0"]["kernel"]
        assert kernel.sharding.is_fully_replicated and len(kernel.sharding.device_set) == n
        out[n] = jax.tree_util.tree_leaves_with_path(sharding.to_host((state, metrics)))
      # A parameter whose true gradient is 0 gets rounding noise that Adam scales to ±lr steps
      # (see _ZERO_GRADIENT); every other value must agree.
      def noisy(k):
        return any(jax.tree_util.keystr(k).endswith(".params" + p) for p in noise_only)
      pairs = zip(out[4], out[1])
      diffs = [float(np.max(np.abs(a - b))) for (k, a), (_, b) in pairs if not noisy(k)]
      worst = max([worst] + diffs)
      host = sharding.to_host(state)
    print("max_diff", worst, "noise_only", sorted(noise_only))
    assert noise_only <= {"['cascade_0']['conv_2']['bias']"}, noise_only
    assert worst <= 1e-5, worst
""")


def test_sharded_step_on_four_devices_matches_one_device():
  result = _run(SHARDED, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert result.returncode == 0, result.stdout + result.stderr
  assert "max_diff" in result.stdout


# The last conv's bias in a DC-CNN cascade adds a constant image, i.e. only k-space index 0, which
# the mask always samples, so DC removes it and its true gradient is 0: what reaches Adam is
# rounding noise, normalised into steps of about ±lr whose sign depends on summation order. Exact
# comparisons skip it.
_ZERO_GRADIENT = "['conv_2']['bias']"

TWO_PROCESS = textwrap.dedent("""
    import sys
    from kdmri_jax import sharding
    sharding.initialize_distributed("127.0.0.1:{port}", 2, int(sys.argv[1]))
    import jax, numpy as np
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    from tests.test_train import _fit, tiny_config
    result = _fit({workdir!r}, tiny_config(num_epochs=2, checkpoint_every_steps=0))
    print("result", result.status, result.step, repr(result.best_val_loss))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  from kdmri_jax import checkpoints
  from tests.test_train import _fit, tiny_config

  script = TWO_PROCESS.format(port=_free_port(), workdir=str(tmp_path / "two"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  processes = [
    subprocess.Popen(
      [sys.executable, "-c", script, str(i)],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=env,
      cwd=REPO,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=180)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out
  # The same data on one process with one device.
  single = _fit(tmp_path / "one", tiny_config(num_epochs=2, checkpoint_every_steps=0))
  for out in outputs:
    status, step, val = out.split("result ")[1].split()[:3]
    assert status == "done" and int(step) == single.step
    assert float(val) == pytest.approx(single.best_val_loss, rel=1e-5)
  _, two, _ = checkpoints.load_params(tmp_path / "two")
  _, one, _ = checkpoints.load_params(tmp_path / "one")
  one = dict(jax.tree_util.tree_leaves_with_path(one))
  for key, a in jax.tree_util.tree_leaves_with_path(two):
    lr_steps = 1e-3 * single.step * 2
    atol = lr_steps if jax.tree_util.keystr(key).endswith(_ZERO_GRADIENT) else 1e-5
    np.testing.assert_allclose(
      np.asarray(a), np.asarray(one[key]), atol=atol, err_msg=jax.tree_util.keystr(key)
    )
