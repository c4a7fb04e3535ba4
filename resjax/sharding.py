"""Data parallelism with ``jax.sharding``: one mesh axis, 'batch', over all devices.

The training state and in-memory datasets are replicated on every device. A batch
(its images, labels or the indices that select them) is split along its leading
axis over the 'batch' axis. ``jax.jit`` then runs each step as one SPMD program, and
XLA inserts the all-reduces that make means over the batch global.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from resjax.errors import ConfigError

BATCH_AXIS = 'batch'


def initialize_distributed(distributed_config: Any) -> None:
  """Join the other hosts with ``jax.distributed.initialize`` when ``multihost`` is set.

  Empty fields leave the coordinator, process count and process id to jax's cluster
  detection (Cloud TPU, SLURM, ...). Call this before any other jax call; a second
  call in the same process does nothing.
  """
  if not distributed_config.multihost or jax.distributed.is_initialized():
    return
  options = {}
  if distributed_config.coordinator_address:
    options['coordinator_address'] = distributed_config.coordinator_address
  if distributed_config.num_processes > 0:
    options['num_processes'] = distributed_config.num_processes
  if distributed_config.process_id >= 0:
    options['process_id'] = distributed_config.process_id
  jax.distributed.initialize(**options)
  logging.info('Joined %d processes as process %d, %d devices in all.',
               jax.process_count(), jax.process_index(), jax.device_count())


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Build a one-axis mesh named 'batch' over ``devices`` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Split the leading axis over the 'batch' axis of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Keep a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, field: str) -> None:
  """Raise ConfigError unless ``batch_size`` splits evenly over the devices of ``mesh``."""
  devices = mesh.size
  if batch_size <= 0 or batch_size % devices:
    smaller = max(devices, batch_size // devices * devices)
    raise ConfigError(f'{field}={batch_size} must be a positive multiple of the device '
                      f'count ({devices}); set --config.{field}={smaller} or '
                      f'{smaller + devices}.')


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Copy a tree of host or device arrays to every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def put_batch(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """Split a global host array (identical on every process) over the 'batch' axis.

  Every process passes the same global array and contributes the shards of its
  own devices, so this works on one host and on many.
  """
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, batch_sharding(mesh),
                                      lambda index: array[index])


def put_local_batch(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """Build a global batch from this process's share, split over the 'batch' axis.

  Each process passes the rows of its own devices (a streamed share of the data); the
  global batch has ``process_count`` times as many rows.
  """
  array = np.asarray(array)
  global_shape = (array.shape[0] * jax.process_count(),) + array.shape[1:]
  return jax.make_array_from_process_local_data(batch_sharding(mesh), array, global_shape)
