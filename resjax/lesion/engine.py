"""Evaluation of many gate settings of one trained network in compiled, vmapped calls.

A lesion, reordering or duplication study is a batch of ``Gates`` with a leading axis
of settings. ``evaluate_settings`` splits that batch into chunks that fit a memory
budget and shards each chunk's settings over a ``jax.sharding.Mesh`` with one
'settings' axis. One jitted call evaluates every setting of a chunk on the whole
dataset, scanning over image batches. The parameters and the padded dataset are
replicated on every device and stay there for the whole study.

The chunk size starts from an analytic estimate of the activation memory and is
checked against XLA's memory analysis of the compiled program, which shrinks it when
the program needs more than the budget.

NOTE: the budget bounds XLA's temporary buffers, not the whole process. On XLA:CPU
(jax 0.10.2, CIFAR ResNet-110, 100 images a batch) the peak RSS during a call grew by
4.5 to 6 times XLA's temporary size, flat over calls: memory stays bounded, but
leave headroom on CPU. Accelerators were not measured.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from resjax.gates import Gates, map_settings, settings_axes, share_leaves, varying_leaves
from resjax.lesion import recalibration
from resjax.models.resnet import GatedResNet

SETTINGS_AXIS = 'settings'

# The analytic estimate: the live buffers of one image in eval mode are about this many
# copies of the largest feature map (a unit's input, its shortcut, the branch's
# intermediate and output). XLA's memory analysis on CPU (jax 0.10.2) gave 3.3 copies
# for CIFAR ResNet-14 and ResNet-110, so the estimate errs on the safe side there.
ACTIVATION_COPIES = 4


@dataclasses.dataclass(frozen=True)
class SettingResults:
  """Per-setting results of ``evaluate_settings``.

  Attributes:
    error: ``[M]`` float64, the share of images misclassified (0 to 1).
    mean_loss: ``[M]`` float64, mean softmax cross-entropy over the images.
    correct: ``[M]`` int64, number of images classified correctly.
    count: number of images each setting was evaluated on.
  """

  error: np.ndarray
  mean_loss: np.ndarray
  correct: np.ndarray
  count: int


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Training images on which each setting's BatchNorm statistics are re-estimated.

  Attributes:
    images: ``[N, H, W, C]`` float32, preprocessed like the evaluation images.
    batch_size: images per calibration batch; ``N // batch_size`` full batches are
      used, because a partial batch would give BatchNorm different batch statistics.
  """

  images: np.ndarray
  batch_size: int


def default_mesh() -> Mesh:
  """Build a mesh over every local device with the single axis 'settings'."""
  return Mesh(np.asarray(jax.devices()), (SETTINGS_AXIS,))


def num_settings(gates_batch: Gates) -> int:
  shape = np.shape(gates_batch.forward)
  if len(shape) != 2:
    raise ValueError(f'gates_batch.forward has shape {shape}, expected [settings, '
                     'num_blocks]; build a batch with gates_from_forward or stack_gates.')
  return shape[0]


def evaluate_settings(model: GatedResNet, variables: dict[str, Any], images: np.ndarray,
                      labels: np.ndarray, gates_batch: Gates, *, batch_size: int,
                      memory_budget_mb: float, mesh: Mesh | None = None,
                      chunk_size: int | None = None,
                      calibration: Calibration | None = None,
                      progress: Callable[[int], None] | None = None) -> SettingResults:
  """Evaluate every setting of ``gates_batch`` on all of ``images``.

  Args:
    model: the network the variables belong to.
    variables: ``{'params', 'batch_stats'}`` of the trained network.
    images: ``[N, H, W, C]`` float32 images, preprocessed as in training.
    labels: ``[N]`` integer labels.
    gates_batch: settings with a leading axis of size M on every array (orders
      ``[M, positions]``); see ``resjax.lesion.settings`` for builders.
    batch_size: images per evaluation batch; the last batch is padded and masked,
      so every image counts exactly once.
    memory_budget_mb: bound on XLA's temporary memory of one call on one device;
      the number of settings per call is chosen to fit it. The parameters and
      the dataset, held once per device, are not part of it.
    mesh: a mesh with the single axis 'settings'; by default all local devices.
    chunk_size: settings per call, overriding the memory budget; rounded up to a
      multiple of the number of devices.
    calibration: when given, each setting's BatchNorm statistics are re-estimated
      on these training images before it is evaluated (see ``recalibration``).
    progress: called with the number of settings finished after every call.

  Returns:
    ``SettingResults`` in the order of ``gates_batch``.
  """
  images, labels = check_data(images, labels)
  if batch_size < 1:
    raise ValueError(f'batch_size must be at least 1, got {batch_size}.')
  if not memory_budget_mb > 0:
    raise ValueError(f'memory_budget_mb must be positive, got {memory_budget_mb}.')
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f'chunk_size must be at least 1, got {chunk_size}.')
  total = num_settings(gates_batch)
  if total < 1:
    raise ValueError('gates_batch has no settings; pass at least one.')
  gates_batch = _as_host_batch(gates_batch)
  model.check_gates(gates_batch, batched=True)
  if mesh is None:
    mesh = default_mesh()
  if mesh.axis_names != (SETTINGS_AXIS,):
    raise ValueError(f'mesh must have the single axis {SETTINGS_AXIS!r}, got axes '
                     f'{mesh.axis_names}.')

  replicated = NamedSharding(mesh, PartitionSpec())
  by_setting = NamedSharding(mesh, PartitionSpec(SETTINGS_AXIS))
  varying = varying_leaves(gates_batch)
  chunk_shardings = settings_axes(gates_batch, varying)
  chunk_shardings = jax.tree_util.tree_map(
      lambda axis: replicated if axis is None else by_setting, chunk_shardings,
      is_leaf=lambda axis: axis is None)
  batches = jax.device_put(_batch_images(images, labels, min(batch_size, len(images))),
                           replicated)
  variables = jax.device_put(variables, replicated)
  calibration_batches = None
  if calibration is not None:
    calibration_batches = jax.device_put(
        recalibration.calibration_batches(calibration.images, calibration.batch_size),
        replicated)
  programs = _choose_programs(model, variables, gates_batch, varying, batches,
                              calibration_batches, memory_budget_mb, chunk_size, mesh)

  correct = np.zeros((total,), np.int64)
  loss_sums = np.zeros((total,), np.float64)

  def collect(start, stop, totals):
    correct[start:stop] = np.asarray(totals[0])[:stop - start]
    loss_sums[start:stop] = np.asarray(totals[1])[:stop - start]
    if progress is not None:
      progress(stop - start)

  # Each chunk's results are read after the next chunk is dispatched, so the device
  # does not wait for the host in between.
  pending = None
  for start in range(0, total, programs.chunk_size):
    stop = min(start + programs.chunk_size, total)
    chunk = share_leaves(_padded_slice(gates_batch, start, stop, programs.chunk_size),
                         varying)
    chunk = jax.device_put(chunk, chunk_shardings)
    statistics = None
    if programs.recalibrate is not None:
      statistics = jax.device_put(
          programs.recalibrate(variables, chunk, calibration_batches), by_setting)
    totals = programs.totals(variables, chunk, statistics, *batches)
    if pending is not None:
      collect(*pending)
    pending = (start, stop, totals)
  collect(*pending)

  count = len(images)
  return SettingResults(error=(count - correct) / count, mean_loss=loss_sums / count,
                        correct=correct, count=count)


def _choose_programs(model, variables, gates_batch, varying, batches, calibration_batches,
                     memory_budget_mb, chunk_size, mesh) -> _Programs:
  """Compile for ``chunk_size`` settings per call or, when None, for the budget."""
  devices = mesh.size
  if chunk_size is not None:
    return _compile_programs(model, variables, gates_batch, varying, batches,
                             calibration_batches, _round_up(chunk_size, devices), mesh)
  setting_bytes = analytic_setting_bytes(model, batches[0].shape[1:])
  if calibration_batches is not None:
    setting_bytes = max(setting_bytes,
                        analytic_setting_bytes(model, calibration_batches.shape[1:]))
  chunk_size = choose_chunk_size(num_settings(gates_batch), setting_bytes, memory_budget_mb,
                                 devices)
  return _fit_programs(model, variables, gates_batch, varying, batches, calibration_batches,
                       chunk_size, mesh, memory_budget_mb * 2**20)


def choose_chunk_size(total: int, setting_bytes: float, memory_budget_mb: float,
                      devices: int) -> int:
  """Return the settings per call: a multiple of ``devices`` whose memory fits the budget.

  Args:
    total: number of settings to evaluate.
    setting_bytes: estimated memory of one setting on one image batch.
    memory_budget_mb: the budget of one device, in MiB.
    devices: devices the settings are sharded over.
  """
  budget = memory_budget_mb * 2**20
  per_device = int(budget // setting_bytes)
  if per_device < 1:
    raise ValueError(
        f'one setting needs an estimated {setting_bytes / 2**20:.1f} MiB per image batch, '
        f'over the memory budget of {memory_budget_mb} MiB; lower analysis.batch_size or '
        'raise analysis.memory_budget_mb.')
  largest = per_device * devices
  # Spread the settings evenly over the fewest calls, so the last call pads little.
  calls = math.ceil(total / largest)
  return _round_up(math.ceil(total / calls), devices)


def analytic_setting_bytes(model: GatedResNet, batch_shape) -> int:
  """Estimate the live activation bytes of one setting on a batch of ``batch_shape``."""
  images = jax.ShapeDtypeStruct(tuple(batch_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  largest = 0
  x, _ = jax.eval_shape(functools.partial(model.embed, train=False), variables, images)
  largest = max(largest, x.size * x.dtype.itemsize)
  for layout in model.layouts:
    name = f'stage{layout.index}'
    run = functools.partial(model.run_stage, layout=layout, gates=None, train=False)
    x, _ = jax.eval_shape(lambda p, s, a, run=run: run(p, s, x=a),
                          variables['params'][name], variables['batch_stats'][name], x)
    largest = max(largest, x.size * x.dtype.itemsize)
  return ACTIVATION_COPIES * largest


@dataclasses.dataclass(frozen=True)
class _Programs:
  """Compiled programs for chunks of ``chunk_size`` settings.

  Attributes:
    chunk_size: settings per call.
    totals: ``_chunk_totals`` compiled, called without its static model argument.
    recalibrate: ``recalibrated_statistics_jit`` compiled, or None without calibration.
    temp_bytes: XLA's temporary memory of the larger program on one device, or None
      when the backend gives no memory analysis.
  """

  chunk_size: int
  totals: Any
  recalibrate: Any
  temp_bytes: int | None


def _fit_programs(model, variables, gates_batch, varying, batches, calibration_batches,
                  chunk_size, mesh, budget_bytes) -> _Programs:
  """Compile for ``chunk_size`` and shrink the chunk until XLA's memory fits the budget."""
  devices = mesh.size
  while True:
    programs = _compile_programs(model, variables, gates_batch, varying, batches,
                                 calibration_batches, chunk_size, mesh)
    if programs.temp_bytes is None or programs.temp_bytes <= budget_bytes:
      return programs
    if chunk_size == devices:
      raise ValueError(
          f'one setting per device needs {programs.temp_bytes / 2**20:.1f} MiB per image '
          f'batch (XLA memory analysis), over the memory budget of '
          f'{budget_bytes / 2**20:g} MiB; lower analysis.batch_size or raise '
          'analysis.memory_budget_mb.')
    per_device = chunk_size // devices
    fitting = max(1, int(per_device * budget_bytes / programs.temp_bytes))
    chunk_size = min(fitting, per_device - 1) * devices
    logging.info('Chunk needs %.1f MiB per device, over the budget; retrying with %d '
                 'settings per call.', programs.temp_bytes / 2**20, chunk_size)


# Compiled programs by model, shapes and devices: a study that evaluates the same shapes
# again (with and without recalibration, or in several calls) compiles once. The
# oldest entries are dropped beyond this many.
_MAX_PROGRAMS = 32
_PROGRAMS: dict[tuple, _Programs] = {}


def _compile_programs(model, variables, gates_batch, varying, batches, calibration_batches,
                      chunk_size, mesh) -> _Programs:
  by_setting = NamedSharding(mesh, PartitionSpec(SETTINGS_AXIS))
  replicated = NamedSharding(mesh, PartitionSpec())
  leaves, structure = jax.tree_util.tree_flatten(gates_batch)
  gates = jax.tree_util.tree_unflatten(structure, [
      jax.ShapeDtypeStruct((chunk_size,) + leaf.shape[1:], leaf.dtype, sharding=by_setting)
      if keep else jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype, sharding=replicated)
      for leaf, keep in zip(leaves, varying)])
  key = (model, chunk_size, varying, tuple(device.id for device in mesh.devices.flat),
         tuple(order.shape for order in gates.order), tuple(batches[0].shape),
         None if calibration_batches is None else tuple(calibration_batches.shape))
  if key in _PROGRAMS:
    return _PROGRAMS[key]

  recalibrate = statistics = None
  temp_bytes = []
  if calibration_batches is not None:
    calibration_model = dataclasses.replace(model, bn_momentum=0.0)
    lowered = recalibration.recalibrated_statistics_jit.lower(
        calibration_model, varying, variables, gates, calibration_batches)
    recalibrate = lowered.compile()
    temp_bytes.append(_temp_bytes(recalibrate))
    statistics = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=by_setting),
        lowered.out_info)
  totals = _chunk_totals.lower(model, varying, variables, gates, statistics,
                               *batches).compile()
  temp_bytes.append(_temp_bytes(totals))
  known = [value for value in temp_bytes if value is not None]
  programs = _Programs(chunk_size=chunk_size, totals=totals, recalibrate=recalibrate,
                       temp_bytes=max(known) if len(known) == len(temp_bytes) else None)
  if len(_PROGRAMS) >= _MAX_PROGRAMS:
    del _PROGRAMS[next(iter(_PROGRAMS))]
  _PROGRAMS[key] = programs
  return programs


def _temp_bytes(compiled) -> int | None:
  try:
    analysis = compiled.memory_analysis()
  except NotImplementedError:
    return None
  return None if analysis is None else int(analysis.temp_size_in_bytes)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _chunk_totals(model: GatedResNet, varying: tuple[bool, ...], variables, gates: Gates,
                  statistics, images, labels, mask):
  """Sum correct predictions and losses of each setting over all image batches.

  ``gates`` comes from ``share_leaves(batch, varying)``. ``images`` is
  ``[batches, batch, H, W, C]``. ``statistics`` is None or per-setting BatchNorm
  statistics with a leading axis of settings.
  """

  def setting_logits(setting, setting_stats, x):
    setting_variables = variables
    if setting_stats is not None:
      setting_variables = {'params': variables['params'], 'batch_stats': setting_stats}
    return model.apply(setting_variables, x, setting, train=False)

  def add_batch(totals, batch):
    x, y, valid = batch
    logits = map_settings(lambda setting, stats: setting_logits(setting, stats, x), gates,
                          varying, statistics)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y[None, :])
    hits = (jnp.argmax(logits, axis=-1) == y[None, :]) & valid[None, :]
    correct, loss = totals
    correct = correct + jnp.sum(hits, axis=-1, dtype=jnp.int32)
    loss = loss + jnp.sum(jnp.where(valid[None, :], losses, 0.0), axis=-1)
    return (correct, loss), None

  settings = gates.forward.shape[0]
  start = (jnp.zeros((settings,), jnp.int32), jnp.zeros((settings,), jnp.float32))
  totals, _ = jax.lax.scan(add_batch, start, (images, labels, mask))
  return totals


def _batch_images(images: np.ndarray, labels: np.ndarray, batch_size: int):
  """Pad the images to whole batches; return ``(images, labels, mask)`` by batch."""
  count = len(images)
  padded = _round_up(count, batch_size)
  extra = padded - count
  mask = np.concatenate([np.ones((count,), bool), np.zeros((extra,), bool)])
  images = np.concatenate([images, np.zeros((extra,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([labels, np.zeros((extra,), labels.dtype)])
  batches = padded // batch_size
  return (images.reshape((batches, batch_size) + images.shape[1:]),
          labels.reshape((batches, batch_size)), mask.reshape((batches, batch_size)))


def check_data(images, labels) -> tuple[np.ndarray, np.ndarray]:
  """Return float32 images and int32 labels, or raise ValueError naming what is wrong."""
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim != 4:
    raise ValueError(f'images has shape {images.shape}, expected [N, H, W, C].')
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f'images has dtype {images.dtype}, expected float32 images '
                     'preprocessed as in training (resjax.data.preprocess).')
  if labels.shape != images.shape[:1]:
    raise ValueError(f'labels has shape {labels.shape}, expected [{len(images)}], one '
                     'label per image.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels has dtype {labels.dtype}, expected integer class indices.')
  if len(images) == 0:
    raise ValueError('images is empty; evaluate on at least one image.')
  return images.astype(np.float32), labels.astype(np.int32)


def _as_host_batch(gates: Gates) -> Gates:
  total = num_settings(gates)
  batch = Gates(forward=np.asarray(gates.forward, np.float32),
                backward_branch=np.asarray(gates.backward_branch, np.float32),
                backward_shortcut=np.asarray(gates.backward_shortcut, np.float32),
                order=tuple(np.asarray(order) for order in gates.order))
  for name, array in [('backward_branch', batch.backward_branch),
                      ('backward_shortcut', batch.backward_shortcut)] + [
                          (f'order[{s}]', order) for s, order in enumerate(batch.order)]:
    if np.ndim(array) < 1 or np.shape(array)[0] != total:
      raise ValueError(f'gates_batch.{name} has shape {np.shape(array)}, but forward has '
                       f'{total} settings; every array needs the same leading axis.')
  if not np.all(np.isfinite(batch.forward)):
    row = int(np.argwhere(~np.isfinite(batch.forward))[0, 0])
    raise ValueError(f'gates_batch.forward of setting {row} is not finite: '
                     f'{batch.forward[row].tolist()}.')
  return batch.replace(order=tuple(order.astype(np.int32) if np.issubdtype(
      order.dtype, np.integer) else order for order in batch.order))


def _padded_slice(gates: Gates, start: int, stop: int, size: int) -> Gates:
  """Settings ``start:stop``, padded to ``size`` with copies of the last one."""

  def take(array):
    part = array[start:stop]
    missing = size - len(part)
    if missing:
      part = np.concatenate([part, np.repeat(part[-1:], missing, axis=0)])
    return part

  return jax.tree_util.tree_map(take, gates)


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


__all__ = ['Calibration', 'SettingResults', 'analytic_setting_bytes', 'check_data',
           'choose_chunk_size', 'default_mesh', 'evaluate_settings']
