"""The training loop: ``train_and_evaluate(config, workdir)``.

One run trains ``config.model`` on ``config.data`` with SGD, data parallel over all
devices, and leaves in ``workdir``: ``config.json``, orbax checkpoints, metrics
(``metrics.jsonl`` and TensorBoard) and ``train_summary.json``. Rerunning the same
call resumes from the latest checkpoint and ends where an uninterrupted run ends.

Steps are counted from 1: the checkpoint of step ``s`` contains the state after
``s`` optimizer updates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from resjax import checkpointing
from resjax import data as data_lib
from resjax import metrics as metrics_lib
from resjax import schedules
from resjax import sharding
from resjax import steps
from resjax import train_variants
from resjax.errors import ConfigError, TrainingError
from resjax.gates import Gates
from resjax.models import build_model
from resjax.models.resnet import GatedResNet
from resjax.progress import Progress
from resjax.results import read_json, write_json

SUMMARY_FILE = 'train_summary.json'


# ---------------------------------------------------------------------- data


@dataclasses.dataclass
class TrainingData:
  """The splits of one run, placed for the train and eval steps.

  Attributes:
    num_train: images in the training split.
    num_test: images in the test split.
    image_shape: ``(height, width, channels)``.
    channel_mean: per-channel mean of the training images, for normalisation.
    channel_std: per-channel standard deviation of the training images.
    train: in memory, ``{'images', 'labels'}`` replicated on every device; None
      when the data is streamed.
    test: the same for the test split.
  """

  num_train: int
  num_test: int
  image_shape: tuple[int, int, int]
  channel_mean: np.ndarray
  channel_std: np.ndarray
  train: dict[str, jax.Array] | None
  test: dict[str, jax.Array] | None

  @property
  def in_memory(self) -> bool:
    return self.train is not None


def load_data(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> TrainingData:
  """Load both splits: into device memory as uint8 arrays, or only their sizes to stream."""
  data_config = config.data
  if not data_config.in_memory:
    mean, std = data_lib.estimate_channel_stats(data_config, data_config.stats_examples,
                                                seed=config.seed)
    return TrainingData(num_train=data_lib.split_size(data_config, 'train'),
                        num_test=data_lib.split_size(data_config, 'test'),
                        image_shape=tuple(data_lib.image_shape_for(data_config)),
                        channel_mean=np.asarray(mean, np.float32),
                        channel_std=np.asarray(std, np.float32), train=None, test=None)

  train = data_lib.load_split(data_config, 'train')
  test = data_lib.load_split(data_config, 'test')
  mean, std = data_lib.channel_stats(train.images)

  def place(split):
    return sharding.put_replicated({'images': split.images, 'labels': split.labels}, mesh)

  return TrainingData(num_train=len(train), num_test=len(test),
                      image_shape=tuple(train.images.shape[1:]),
                      channel_mean=np.asarray(mean, np.float32),
                      channel_std=np.asarray(std, np.float32),
                      train=place(train), test=place(test))


def epoch_seed(seed: int, epoch: int) -> int:
  """Return the seed of one epoch's data order, a function of the run's seed only."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """Return the order of the training images in ``epoch``."""
  return np.random.default_rng(epoch_seed(seed, epoch)).permutation(num_examples).astype(
      np.int32)


def batch_indices(seed: int, num_examples: int, batch_size: int, steps_in_epoch: int,
                  start_step: int) -> Iterator[np.ndarray]:
  """Yield the image indices of each step after ``start_step``, epoch after epoch."""
  epoch, position = divmod(start_step, steps_in_epoch)
  while True:
    order = epoch_permutation(seed, epoch, num_examples)
    for i in range(position, steps_in_epoch):
      yield order[i * batch_size:(i + 1) * batch_size]
    epoch, position = epoch + 1, 0


def _streamed_train_batches(config: ml_collections.ConfigDict, steps_in_epoch: int,
                            start_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yield this process's share of each training batch after ``start_step``."""
  local_batch = config.train.batch_size // jax.process_count()
  epoch, position = divmod(start_step, steps_in_epoch)
  while True:
    stream = data_lib.stream_split(
        config.data, 'train', local_batch, shuffle=True, seed=epoch_seed(config.seed, epoch),
        shard_index=jax.process_index(), shard_count=jax.process_count())
    # NOTE: a run resumed mid-epoch reads and drops the batches before ``position``,
    # which keeps the data order exact but costs time on large datasets.
    for i, (images, labels) in enumerate(stream):
      if i >= steps_in_epoch:
        break
      if i >= position:
        yield images, labels
    epoch, position = epoch + 1, 0


def train_batches(config: ml_collections.ConfigDict, data: TrainingData,
                  mesh: jax.sharding.Mesh, steps_in_epoch: int,
                  start_step: int) -> Iterator[tuple[Any, ...]]:
  """Yield the batch arguments of the train function for each step after ``start_step``.

  In memory, a step receives the dataset and the indices of its images; each epoch
  is a permutation drawn from ``(config.seed, epoch)``, so a resumed run gets the same
  order. Streamed, a step receives the images and labels themselves.
  """
  if data.in_memory:
    for indices in batch_indices(config.seed, data.num_train, config.train.batch_size,
                                 steps_in_epoch, start_step):
      yield data.train, sharding.put_batch(indices, mesh)
  else:
    for images, labels in _streamed_train_batches(config, steps_in_epoch, start_step):
      yield ({'images': sharding.put_local_batch(images, mesh),
              'labels': sharding.put_local_batch(labels, mesh)},)


def make_train_fn(model: GatedResNet, optimizer, config: ml_collections.ConfigDict,
                  data: TrainingData, mesh: jax.sharding.Mesh) -> Callable[..., Any]:
  """Jit the train step with the run's shardings.

  The returned function takes ``(state, *batch_arguments)`` with the arguments that
  ``train_batches`` yields, and returns ``(state, metrics)``. The state's buffers
  are donated, so the old state is invalid after the call.
  """
  fixed = dict(model=model, optimizer=optimizer, config=config,
               channel_mean=data.channel_mean, channel_std=data.channel_std)
  replicated = sharding.replicated(mesh)
  split = sharding.batch_sharding(mesh)
  if data.in_memory:
    # Looked up through the module at call time, so a test can count traces.
    step = functools.partial(steps.train_step_in_memory, **fixed)
    in_shardings = (replicated, replicated, split)
  else:
    step = functools.partial(steps.train_step, **fixed)
    in_shardings = (replicated, split)
  return jax.jit(step, in_shardings=in_shardings, out_shardings=(replicated, replicated),
                 donate_argnums=0)


# ---------------------------------------------------------------- evaluation


def make_eval_fn(model: GatedResNet, config: ml_collections.ConfigDict, data: TrainingData,
                 mesh: jax.sharding.Mesh) -> Callable[..., dict[str, jax.Array]]:
  """Jit the eval step with the run's shardings.

  The returned function takes ``(variables, gates, *batch_arguments)`` with the
  arguments that ``eval_batches`` yields, and returns sums over the batch.
  """
  fixed = dict(model=model, config=config, channel_mean=data.channel_mean,
               channel_std=data.channel_std)
  replicated = sharding.replicated(mesh)
  split = sharding.batch_sharding(mesh)
  if data.in_memory:
    step = functools.partial(steps.eval_step_in_memory, **fixed)
    in_shardings = (replicated, replicated, replicated, split, split)
  else:
    step = functools.partial(steps.eval_step, **fixed)
    in_shardings = (replicated, replicated, split, split)
  return jax.jit(step, in_shardings=in_shardings, out_shardings=replicated)


def eval_batches(config: ml_collections.ConfigDict, data: TrainingData,
                 mesh: jax.sharding.Mesh) -> Iterator[tuple[Any, ...]]:
  """Yield the batch arguments of the eval function: every test image exactly once.

  Every batch has ``train.eval_batch_size`` rows. The last one is padded (copies of
  image 0 in memory, zeros when streamed) and a mask marks the real images.
  """
  batch_size = config.train.eval_batch_size
  if data.in_memory:
    for start in range(0, data.num_test, batch_size):
      count = min(batch_size, data.num_test - start)
      indices = np.zeros((batch_size,), np.int32)
      indices[:count] = np.arange(start, start + count, dtype=np.int32)
      mask = np.arange(batch_size) < count
      yield data.test, sharding.put_batch(indices, mesh), sharding.put_batch(mask, mesh)
    return

  local_batch = batch_size // jax.process_count()
  # Every process runs the same number of batches (the eval step is one program over
  # all devices), so a process whose share ends early feeds fully masked batches.
  share = math.ceil(data.num_test / jax.process_count())
  stream = data_lib.stream_split(config.data, 'test', local_batch, shuffle=False, seed=0,
                                 shard_index=jax.process_index(),
                                 shard_count=jax.process_count())
  empty = (np.zeros((0, *data.image_shape), np.uint8), np.zeros((0,), np.int32))
  for _ in range(math.ceil(share / local_batch)):
    images, labels = next(stream, empty)
    count = len(labels)
    padded_images = np.zeros((local_batch, *data.image_shape), np.uint8)
    padded_images[:count] = images
    padded_labels = np.zeros((local_batch,), np.int32)
    padded_labels[:count] = labels
    mask = np.arange(local_batch) < count
    yield ({'images': sharding.put_local_batch(padded_images, mesh),
            'labels': sharding.put_local_batch(padded_labels, mesh)},
           sharding.put_local_batch(mask, mesh))


def evaluate(eval_fn: Callable[..., dict[str, jax.Array]], variables: dict[str, Any],
             gates: Gates | None, batches: Iterable[tuple[Any, ...]],
             num_examples: int) -> dict[str, float]:
  """Sum the eval step over ``batches`` and check that it counted ``num_examples`` images.

  Returns:
    ``{'loss', 'error', 'count'}``: mean cross entropy, share of images
    misclassified, and the number of images counted.
  """
  totals = None
  for arguments in batches:
    sums = eval_fn(variables, gates, *arguments)
    totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
  totals = jax.device_get(totals) if totals is not None else {'count': 0}
  counted = int(totals['count'])
  if counted != num_examples:
    raise TrainingError(f'evaluation counted {counted} test images, but the test split has '
                        f'{num_examples}; the data source returned a different number of '
                        'images than it reported.')
  return {'loss': float(totals['loss_sum']) / counted,
          'error': float(totals['error_count']) / counted, 'count': counted}


# ------------------------------------------------------------------- metrics


class _TrainMetrics:
  """Collects per-step metrics on the device and reads them at log points.

  Reading them makes the host wait for the device, so it happens only every
  ``log_every_steps``, before an evaluation and before a checkpoint. That is also
  where a NaN or Inf stops the run, before any bad state is saved.
  """

  def __init__(self, batch_size: int, schedule: Callable[[int], Any], elapsed_before: float):
    self._batch_size = batch_size
    self._schedule = schedule
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []
    self._timer_start: float | None = None
    self._timed_steps = 0
    self._train_seconds = 0.0
    self._trained_images = 0
    self._elapsed_before = elapsed_before
    self._process_start = time.perf_counter()

  @property
  def elapsed_s(self) -> float:
    """Wall-clock seconds of the run, over all its resumptions."""
    return self._elapsed_before + time.perf_counter() - self._process_start

  @property
  def images_per_second(self) -> float | None:
    """Training throughput of this process, without compilation and evaluation."""
    if not self._train_seconds:
      return None
    return self._trained_images / self._train_seconds

  def add(self, step: int, step_metrics: dict[str, jax.Array]) -> None:
    self._pending.append((step, step_metrics))
    if self._timer_start is not None:
      self._timed_steps += 1

  def start_timer(self) -> None:
    """Start timing training steps (again), after compilation or an evaluation."""
    self._timer_start = time.perf_counter()
    self._timed_steps = 0

  def flush(self, last_good_checkpoint: int | None, workdir: str) -> dict[str, float] | None:
    """Read the pending metrics; raise TrainingError at the first non-finite step.

    Returns:
      The means over the pending steps, the learning rate and throughput, or None
      when no step is pending.
    """
    if not self._pending:
      return None
    pending = jax.device_get(self._pending)
    self._pending = []
    for step, values in pending:
      bad = {name: float(value) for name, value in values.items() if not np.isfinite(value)}
      if bad:
        raise TrainingError(self._nonfinite_message(step, bad, last_good_checkpoint, workdir))

    record = {name: float(np.mean([values[name] for _, values in pending]))
              for name in ('loss', 'error', 'grad_norm', 'param_norm')}
    record['train_error'] = record.pop('error')
    last_step = pending[-1][0]
    record['learning_rate'] = float(self._schedule(last_step - 1))
    if self._timer_start is not None and self._timed_steps:
      seconds = time.perf_counter() - self._timer_start
      self._train_seconds += seconds
      self._trained_images += self._timed_steps * self._batch_size
      record['images_per_second'] = self._timed_steps * self._batch_size / seconds
      self.start_timer()
    record['elapsed_s'] = self.elapsed_s
    return record

  def _nonfinite_message(self, step: int, bad: dict[str, float],
                         last_good_checkpoint: int | None, workdir: str) -> str:
    values = ', '.join(f'{name} is {value}' for name, value in bad.items())
    if last_good_checkpoint is None:
      checkpoint_note = 'no checkpoint had been saved'
    else:
      checkpoint_note = (f'the last checkpoint with finite values, step '
                         f'{last_good_checkpoint}, is kept in {checkpointing.checkpoint_directory(workdir)}')
    return (f'training stopped at step {step}: {values} (learning rate '
            f'{float(self._schedule(step - 1)):.4g}); {checkpoint_note}. Lower '
            'train.learning_rate or add train.warmup_epochs, and train again in a new '
            'workdir.')


# ---------------------------------------------------------------------- loop


def read_summary(workdir: str) -> dict[str, Any] | None:
  """Return ``train_summary.json`` when its run's final checkpoint exists, else None."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path) or not os.path.isdir(checkpointing.checkpoint_directory(workdir)):
    return None
  summary = read_json(path)
  manager = checkpointing.open_manager(workdir, read_only=True)
  try:
    finished = manager.latest_step() == summary.get('steps')
  finally:
    manager.close()
  return summary if finished else None


def _elapsed_before(workdir: str, step: int) -> float:
  """Wall-clock seconds the run spent before its checkpoint of ``step``."""
  times = [r['elapsed_s'] for r in metrics_lib.read_metrics(workdir)
           if r.get('step', 0) <= step and r.get('elapsed_s') is not None]
  return max(times, default=0.0)


@dataclasses.dataclass
class _Run:
  """The model, data, writers and compiled eval step of one run, for the loop."""

  config: ml_collections.ConfigDict
  workdir: str
  model: GatedResNet
  data: TrainingData
  mesh: jax.sharding.Mesh
  steps_in_epoch: int
  total_steps: int
  eval_interval: int
  manager: Any
  writer: metrics_lib.MetricsWriter
  tracker: _TrainMetrics
  eval_fn: Callable[..., dict[str, jax.Array]]
  eval_gates: Gates

  def evaluate(self, state: steps.TrainState, step: int) -> dict[str, float]:
    result = evaluate(self.eval_fn, state.variables, self.eval_gates,
                      eval_batches(self.config, self.data, self.mesh), self.data.num_test)
    self.writer.write(step, {'test_loss': result['loss'], 'test_error': result['error'],
                             'epoch': step / self.steps_in_epoch})
    self.writer.flush()
    logging.info('step %d: test error %.4f, test loss %.4f', step, result['error'],
                 result['loss'])
    return result


# Steps in an epoch for checking the schedule's fields before the data is loaded.
NOMINAL_STEPS_IN_EPOCH = 10**6


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_step: int | None = None) -> dict[str, Any]:
  """Train ``config``'s model in ``workdir``, or resume it there; evaluate on the test split.

  Args:
    config: a config from ``configs/``.
    workdir: the run's folder; created when missing.
    stop_after_step: stop after this step without the final checkpoint and summary,
      as a killed run would; for tests of resuming.

  Returns:
    The summary also written to ``<workdir>/train_summary.json``: 'test_error',
    'test_loss', 'test_examples', 'steps', 'epochs', 'train_seconds' (wall clock
    over all resumptions), 'images_per_second' (training steps of the last process,
    without compilation and evaluation), 'num_devices' and 'resumed_from_step'.
    When the run has finished before, the saved summary. After ``stop_after_step``,
    only ``{'steps', 'stopped'}``.
  """
  sharding.initialize_distributed(config.distributed)
  checkpointing.check_resume_config(workdir, config)
  summary = read_summary(workdir)
  if summary is not None:
    logging.info('%s holds a finished run (step %d); returning its summary.', workdir,
                 summary['steps'])
    return summary

  # Everything that can reject the config without data runs before the workdir exists.
  mesh = sharding.make_mesh()
  train_config = config.train
  if train_config.log_every_steps <= 0:
    raise ConfigError(f'train.log_every_steps must be positive, got '
                      f'{train_config.log_every_steps}.')
  sharding.check_batch_size(train_config.batch_size, mesh, 'train.batch_size')
  sharding.check_batch_size(train_config.eval_batch_size, mesh, 'train.eval_batch_size')
  model = build_model(config.model, data_lib.num_classes_for(config.data))
  train_variants.check_variant(model, config)
  # A long nominal epoch: the epoch fields are checked now, the rounding to the real
  # number of steps once the data is loaded.
  schedules.build_optimizer(train_config, steps_in_epoch=NOMINAL_STEPS_IN_EPOCH)
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    data = load_data(config, mesh)
  except BaseException:
    if created and not os.listdir(workdir):
      os.rmdir(workdir)  # a run that never started leaves no empty workdir behind
    raise
  steps_in_epoch = schedules.steps_per_epoch(data.num_train, train_config.batch_size)
  total = schedules.total_steps(train_config, steps_in_epoch)
  optimizer, schedule = schedules.build_optimizer(train_config, steps_in_epoch)

  replicated = sharding.replicated(mesh)
  create_state = functools.partial(steps.create_train_state, model=model, optimizer=optimizer,
                                   image_shape=data.image_shape)
  abstract_state = jax.tree_util.tree_map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
      jax.eval_shape(create_state, jax.random.PRNGKey(config.seed)))
  manager = checkpointing.open_manager(
      workdir, checkpoint_every_steps=train_config.checkpoint_every_steps,
      keep_checkpoints=train_config.keep_checkpoints)
  writer = None
  try:
    latest = manager.latest_step()
    if latest is not None:
      state = checkpointing.restore_state(manager, abstract_state, latest)
      logging.info('Resuming %s from step %d.', workdir, latest)
    else:
      # Eager, not jitted: jax caches each eager operation by shape, so another run of
      # the same model initialises at once, where a jitted init compiles it all again.
      state = sharding.put_replicated(create_state(jax.random.PRNGKey(config.seed)), mesh)
    start_step = int(jax.device_get(state.step))
    checkpointing.save_config(workdir, config)
    metrics_lib.drop_metrics_after(workdir, start_step)
    writer = metrics_lib.MetricsWriter(workdir)
    run = _Run(config=config, workdir=workdir, model=model, data=data, mesh=mesh,
               steps_in_epoch=steps_in_epoch, total_steps=total,
               eval_interval=schedules.eval_interval_steps(train_config, steps_in_epoch),
               manager=manager, writer=writer,
               tracker=_TrainMetrics(train_config.batch_size, schedule,
                                     _elapsed_before(workdir, start_step)),
               eval_fn=make_eval_fn(model, config, data, mesh),
               eval_gates=train_variants.eval_gates(model, config))
    end = total if stop_after_step is None else min(total, stop_after_step)
    state, last_eval = _train_loop(run, state, start_step, end,
                                   make_train_fn(model, optimizer, config, data, mesh))
    if end < total:
      return {'steps': end, 'stopped': True}

    if last_eval is None:  # the final checkpoint existed, but no summary was written
      last_eval = run.evaluate(state, total)
    checkpointing.save_state(manager, state)
    manager.wait_until_finished()
    summary = {
        'test_error': last_eval['error'],
        'test_loss': last_eval['loss'],
        'test_examples': last_eval['count'],
        'steps': total,
        'epochs': total / steps_in_epoch,
        'train_seconds': run.tracker.elapsed_s,
        'images_per_second': run.tracker.images_per_second,
        'num_devices': mesh.size,
        'resumed_from_step': start_step,
    }
    if jax.process_index() == 0:
      write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    logging.info('Finished %s: test error %.4f after %d steps.', workdir, summary['test_error'],
                 total)
    return summary
  finally:
    manager.wait_until_finished()
    manager.close()
    if writer is not None:
      writer.close()


def _train_loop(run: _Run, state: steps.TrainState, start_step: int, end: int,
                train_fn: Callable[..., Any]) -> tuple[steps.TrainState, dict | None]:
  """Run steps ``start_step + 1 .. end``; return the state and the last evaluation."""
  train_config = run.config.train
  batches = train_batches(run.config, run.data, run.mesh, run.steps_in_epoch, start_step)
  last_good = run.manager.latest_step()
  last_eval = None
  progress = Progress(run.total_steps, 'train', unit='steps', start=start_step)
  step = start_step
  try:
    while step < end:
      state, step_metrics = train_fn(state, *next(batches))
      step += 1
      run.tracker.add(step, step_metrics)
      if step == start_step + 1:
        # The first step includes compilation: time the steps after it.
        jax.block_until_ready(step_metrics)
        run.tracker.start_timer()

      evaluate_now = step % run.eval_interval == 0 or step == run.total_steps
      save_now = step % train_config.checkpoint_every_steps == 0 or step == run.total_steps
      if step % train_config.log_every_steps == 0 or evaluate_now or save_now or step == end:
        record = run.tracker.flush(last_good, run.workdir)
        record['epoch'] = step / run.steps_in_epoch
        run.writer.write(step, record)
        fields = {'epoch': math.ceil(record['epoch']), 'loss': record['loss']}
        if 'images_per_second' in record:
          fields['img/s'] = round(record['images_per_second'])
        progress.update(step - progress.done, **fields)
      if evaluate_now:
        last_eval = run.evaluate(state, step)
        run.tracker.start_timer()
      if save_now and checkpointing.save_state(run.manager, state):
        last_good = step
  finally:
    progress.close()
  return state, last_eval
