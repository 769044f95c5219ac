"""Devices, mesh and multi-host helpers for data-parallel training (pjit style).

One `Mesh` with a single `data` axis over every device of every host: batches are sharded along
their leading axis, parameters and optimizer state are replicated. Each host reads only its slice of
every global batch (`process_slice`) and `global_batch` assembles the global `jax.Array` from the
hosts' pieces, so the same jitted step runs on one CPU, one GPU, a TPU slice or several hosts.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kdmri_jax.errors import InputError, require

DATA_AXIS = "data"


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  auto: bool = False,
) -> None:
  """Joins a multi-host run through `jax.distributed.initialize`.

  With a coordinator address, the three values are used as given (CPU hosts use gloo collectives).
  With `auto`, JAX detects TPU pods and SLURM jobs itself. With neither, this is a single-process
  run.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if all(v is None for v in explicit):
    if auto or "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
      jax.distributed.initialize()
    return
  require(
    all(v is not None for v in explicit),
    "config.distributed needs coordinator_address, num_processes and process_id together "
    "(or none of them for a single process).",
  )
  require(
    0 <= process_id < num_processes,
    f"config.distributed.process_id={process_id} must be in 0..{num_processes - 1}.",
  )
  # CPU hosts need an explicit collectives backend for cross-process all-reduces (no effect on
  # GPU/TPU).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )


def make_mesh(devices: Any = None) -> Mesh:
  """A 1-D mesh named `data` over `devices` (default: all devices of all processes,
  process-major)."""
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, scalars)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Split along the leading (batch) axis over the `data` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """The per-process batch size; one sentence if the global batch does not split evenly."""
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise InputError(
      f"config.train.batch_size={global_batch_size} must be a multiple of the "
      f"{devices} devices in the mesh; change the batch size or the device count."
    )
  return global_batch_size // jax.process_count()


def process_slice(global_batch_size: int) -> slice:
  """The rows of every global batch that this process reads (processes own contiguous rows)."""
  local = global_batch_size // jax.process_count()
  start = jax.process_index() * local
  return slice(start, start + local)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """The global batch `jax.Array`s built from this process's rows of each entry."""
  sharding = batch_sharded(mesh)
  count = jax.process_count()
  return {
    key: jax.make_array_from_process_local_data(
      sharding, np.asarray(value), (np.shape(value)[0] * count,) + np.shape(value)[1:]
    )
    for key, value in local_batch.items()
  }


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree (identical on every process) replicated on the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x)), tree
  )


def to_host(tree: Any) -> Any:
  """NumPy copies of replicated arrays (each process holds them whole)."""
  return jax.tree.map(
    lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x), tree
  )


def is_primary() -> bool:
  """True on the process that writes logs, TensorBoard events and reports."""
  return jax.process_index() == 0
