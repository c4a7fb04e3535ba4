"""The lesion, reordering and duplication studies: settings in, result tables out.

Each study builds its batch of gate settings (the unchanged network first, as the
baseline), evaluates it with an ``Evaluator`` and returns a ``StudyResult``: the JSON
object, and CSV columns and rows with one row per setting. Errors are shares of the
evaluation images (0 to 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from jax.sharding import Mesh

from resjax.errors import ConfigError
from resjax.gates import Gates
from resjax.lesion import settings as settings_lib
from resjax.lesion.engine import Calibration, SettingResults, evaluate_settings, num_settings
from resjax.models.resnet import GatedResNet
from resjax.progress import Progress


@dataclasses.dataclass(frozen=True)
class StudyResult:
  """One study's output, ready for ``resjax.results.write_result``.

  Attributes:
    name: file stem, such as 'lesion_single'.
    data: the JSON object.
    columns: CSV header.
    rows: CSV rows, one per setting.
  """

  name: str
  data: dict[str, Any]
  columns: list[str]
  rows: list[list[Any]]


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A trained network with its evaluation data and evaluation settings.

  Attributes:
    model: the network.
    variables: its ``{'params', 'batch_stats'}``.
    images: ``[N, H, W, C]`` float32 evaluation images, preprocessed as in training.
    labels: ``[N]`` int32 labels.
    batch_size: images per evaluation batch.
    memory_budget_mb: activation memory budget of one call on one device.
    calibration: when given, every setting is also evaluated with BatchNorm
      statistics re-estimated on these training images.
    mesh: devices the settings are sharded over; None uses every local device.
  """

  model: GatedResNet
  variables: dict[str, Any]
  images: np.ndarray
  labels: np.ndarray
  batch_size: int
  memory_budget_mb: float
  calibration: Calibration | None = None
  mesh: Mesh | None = None

  @property
  def passes(self) -> int:
    """Evaluations per setting: 2 when BatchNorm is also recalibrated."""
    return 2 if self.calibration is not None else 1

  def evaluate(self, gates_batch: Gates, progress: Progress | None = None
               ) -> tuple[SettingResults, SettingResults | None]:
    """Evaluate with the training statistics and, with ``calibration``, recalibrated.

    Returns:
      ``(results, recalibrated)``; ``recalibrated`` is None without calibration.
    """
    update = progress.update if progress is not None else None
    common = dict(batch_size=self.batch_size, memory_budget_mb=self.memory_budget_mb,
                  mesh=self.mesh, progress=update)
    results = evaluate_settings(self.model, self.variables, self.images, self.labels,
                                gates_batch, **common)
    recalibrated = None
    if self.calibration is not None:
      recalibrated = evaluate_settings(self.model, self.variables, self.images, self.labels,
                                       gates_batch, calibration=self.calibration, **common)
    return results, recalibrated


def _evaluate_with_progress(evaluator: Evaluator, gates_batch: Gates, label: str):
  with Progress(num_settings(gates_batch) * evaluator.passes, label,
                unit='settings') as progress:
    return evaluator.evaluate(gates_batch, progress)


def _require_positive(**values: int) -> None:
  for name, value in values.items():
    if value < 1:
      raise ConfigError(f'analysis.{name} must be at least 1, got {value}.')


# ------------------------------------------------------------------- lesion_single


def lesion_single(evaluator: Evaluator, plain: Evaluator | None = None) -> StudyResult:
  """Delete each block in turn; with ``plain``, each deletable unit of the plain network.

  Returns:
    JSON with ``baseline_error``, ``blocks`` (``index``, ``stage``, ``downsampling``,
    ``error``, ``mean_loss`` and, with recalibration, ``recalibrated_error``) and,
    with ``plain``, a ``plain`` object of the same form.
  """
  data = _single_deletion_section(evaluator, 'lesion_single')
  columns = ['network', 'deleted_block', 'stage', 'downsampling', 'error', 'mean_loss']
  if evaluator.calibration is not None:
    columns.append('recalibrated_error')
  rows = _single_deletion_rows('residual' if evaluator.model.residual else 'plain', data,
                               evaluator.calibration is not None)
  if plain is not None:
    if plain.model.residual:
      raise ConfigError('the plain network given is residual; point analysis.plain_workdir '
                        'at a run trained with model.residual=False '
                        '(configs/cifar10_plain.py).')
    data['plain'] = _single_deletion_section(plain, 'lesion_single (plain)')
    rows += _single_deletion_rows('plain', data['plain'], evaluator.calibration is not None)
  return StudyResult('lesion_single', data, columns, rows)


def _single_deletion_section(evaluator: Evaluator, label: str) -> dict[str, Any]:
  model = evaluator.model
  blocks = list(model.deletable_blocks)
  forward = settings_lib.single_deletions(model, blocks)
  results, recalibrated = _evaluate_with_progress(
      evaluator, settings_lib.gates_from_forward(model, forward), label)
  stages = model.stage_of_block()
  section: dict[str, Any] = {'baseline_error': float(results.error[0]),
                             'baseline_loss': float(results.mean_loss[0]),
                             'num_examples': results.count}
  if recalibrated is not None:
    section['recalibrated_baseline_error'] = float(recalibrated.error[0])
  section['blocks'] = []
  for row, block in enumerate(blocks, start=1):
    entry = {'index': block, 'stage': stages[block],
             'downsampling': block in model.downsampling_blocks,
             'error': float(results.error[row]), 'mean_loss': float(results.mean_loss[row])}
    if recalibrated is not None:
      entry['recalibrated_error'] = float(recalibrated.error[row])
    section['blocks'].append(entry)
  return section


def _single_deletion_rows(network: str, section: dict[str, Any],
                          recalibrate: bool) -> list[list[Any]]:
  baseline = [network, 'none', '', '', section['baseline_error'], section['baseline_loss']]
  if recalibrate:
    baseline.append(section['recalibrated_baseline_error'])
  rows = [baseline]
  for entry in section['blocks']:
    row = [network, entry['index'], entry['stage'], entry['downsampling'], entry['error'],
           entry['mean_loss']]
    if recalibrate:
      row.append(entry['recalibrated_error'])
    rows.append(row)
  return rows


# -------------------------------------------------------------------- lesion_multi


def lesion_multi(evaluator: Evaluator, *, max_k: int, samples: int,
                 include_downsampling: bool, seed: int) -> StudyResult:
  """Delete R random sets of k blocks for k = 1..K.

  Args:
    evaluator: the network and data.
    max_k: K, capped at the number of eligible blocks.
    samples: R, distinct sets per k (all sets when there are fewer).
    include_downsampling: whether downsampling blocks may be deleted.
    seed: seed of the random sets.

  Returns:
    JSON with ``k``, ``mean_error``, ``std_error`` (sample standard deviation, 0 for
    a single set), ``samples_per_k``, ``errors`` and ``deleted_blocks`` (lists per k)
    and ``baseline_error``.
  """
  _require_positive(lesion_multi_max_k=max_k, lesion_multi_samples=samples)
  model = evaluator.model
  downsampling = set(model.downsampling_blocks)
  eligible = [block for block in model.deletable_blocks
              if include_downsampling or block not in downsampling]
  if not eligible:
    raise ConfigError('no block is eligible for lesion_multi: every deletable block '
                      'downsamples. Set analysis.lesion_multi_include_downsampling=True.')
  ks, deleted = settings_lib.random_deletions(eligible, max_k, samples,
                                              np.random.default_rng(seed))
  forward = settings_lib.deletions_to_forward(model, [[]] + deleted)
  results, recalibrated = _evaluate_with_progress(
      evaluator, settings_lib.gates_from_forward(model, forward), 'lesion_multi')

  data: dict[str, Any] = {'baseline_error': float(results.error[0]),
                          'num_examples': results.count, 'eligible_blocks': eligible}
  if recalibrated is not None:
    data['recalibrated_baseline_error'] = float(recalibrated.error[0])
  data.update(_per_k_summary(ks, deleted, results.error[1:], ''))
  if recalibrated is not None:
    data.update(_per_k_summary(ks, deleted, recalibrated.error[1:], 'recalibrated_'))

  columns = ['k', 'deleted_blocks', 'error', 'mean_loss']
  if recalibrated is not None:
    columns.append('recalibrated_error')
  rows = []
  for row, (k, blocks) in enumerate(zip(ks, deleted), start=1):
    values = [k, blocks, float(results.error[row]), float(results.mean_loss[row])]
    if recalibrated is not None:
      values.append(float(recalibrated.error[row]))
    rows.append(values)
  return StudyResult('lesion_multi', data, columns, rows)


def _per_k_summary(ks: Sequence[int], deleted: Sequence[list[int]], errors: np.ndarray,
                   prefix: str) -> dict[str, Any]:
  ks_array = np.asarray(ks)
  values = sorted(set(ks))
  per_k = [errors[ks_array == k] for k in values]
  summary = {
      f'{prefix}mean_error': [float(np.mean(e)) for e in per_k],
      f'{prefix}std_error': [float(np.std(e, ddof=1)) if len(e) > 1 else 0.0 for e in per_k],
      f'{prefix}errors': [e.tolist() for e in per_k],
  }
  if not prefix:
    summary['k'] = values
    summary['samples_per_k'] = [len(e) for e in per_k]
    summary['deleted_blocks'] = [[blocks for blocks, k_row in zip(deleted, ks) if k_row == k]
                                 for k in values]
  return summary


# ------------------------------------------------------------------------- reorder


def reorder(evaluator: Evaluator, *, max_swaps: int, samples: int, seed: int) -> StudyResult:
  """Evaluate orders made by k random swaps of interchangeable blocks, k = 1..K.

  Returns:
    JSON with one entry per setting in ``swaps``, ``kendall_tau`` (between the
    original and the new order of all blocks), ``error``, ``mean_loss`` and
    ``orders`` (all blocks in the order they run), plus ``baseline_error``.
  """
  _require_positive(reorder_max_swaps=max_swaps, reorder_samples=samples)
  model = evaluator.model
  swaps, orders = settings_lib.random_swaps(model, max_swaps, samples,
                                            np.random.default_rng(seed))
  original = settings_lib.full_order(model, settings_lib.original_orders(model))
  sequences = [settings_lib.full_order(model, order) for order in orders]
  taus = [settings_lib.kendall_tau(original, sequence) for sequence in sequences]
  batch = settings_lib.gates_from_orders(model, [settings_lib.original_orders(model)] + orders)
  results, recalibrated = _evaluate_with_progress(evaluator, batch, 'reorder')

  data: dict[str, Any] = {'baseline_error': float(results.error[0]),
                          'num_examples': results.count, 'swaps': swaps, 'kendall_tau': taus,
                          'error': results.error[1:].tolist(),
                          'mean_loss': results.mean_loss[1:].tolist(),
                          'orders': [sequence.tolist() for sequence in sequences]}
  columns = ['swaps', 'kendall_tau', 'error', 'mean_loss', 'order']
  if recalibrated is not None:
    data['recalibrated_baseline_error'] = float(recalibrated.error[0])
    data['recalibrated_error'] = recalibrated.error[1:].tolist()
    columns.append('recalibrated_error')
  rows = []
  for row in range(len(swaps)):
    values = [swaps[row], taus[row], data['error'][row], data['mean_loss'][row],
              data['orders'][row]]
    if recalibrated is not None:
      values.append(data['recalibrated_error'][row])
    rows.append(values)
  return StudyResult('reorder', data, columns, rows)


# ----------------------------------------------------------------------- duplicate


def duplicate(evaluator: Evaluator, *, max_blocks: int, samples: int,
              seed: int) -> StudyResult:
  """Run 1..K random interchangeable blocks twice in a row, R random choices per count.

  Settings whose stages get orders of different lengths have different shapes, so
  they are evaluated in groups of equal shape, one compile per group.

  Returns:
    JSON with one entry per setting in ``blocks_repeated`` (the count),
    ``repeated_blocks`` (which), ``error`` and ``mean_loss``, plus ``baseline_error``.
  """
  _require_positive(duplicate_max_blocks=max_blocks, duplicate_samples=samples)
  model = evaluator.model
  counts, repeated, orders = settings_lib.random_duplications(model, max_blocks, samples,
                                                              np.random.default_rng(seed))
  orders = [settings_lib.original_orders(model)] + orders
  error = np.zeros(len(orders))
  mean_loss = np.zeros(len(orders))
  recalibrated_error = np.zeros(len(orders)) if evaluator.calibration is not None else None
  total = len(orders) * evaluator.passes
  with Progress(total, 'duplicate', unit='settings') as progress:
    for rows in settings_lib.group_by_shape(orders).values():
      batch = settings_lib.gates_from_orders(model, [orders[row] for row in rows])
      results, recalibrated = evaluator.evaluate(batch, progress)
      error[rows] = results.error
      mean_loss[rows] = results.mean_loss
      if recalibrated is not None:
        recalibrated_error[rows] = recalibrated.error

  data: dict[str, Any] = {'baseline_error': float(error[0]),
                          'num_examples': len(evaluator.images), 'blocks_repeated': counts,
                          'repeated_blocks': repeated, 'error': error[1:].tolist(),
                          'mean_loss': mean_loss[1:].tolist()}
  columns = ['blocks_repeated', 'repeated_blocks', 'error', 'mean_loss']
  if recalibrated_error is not None:
    data['recalibrated_baseline_error'] = float(recalibrated_error[0])
    data['recalibrated_error'] = recalibrated_error[1:].tolist()
    columns.append('recalibrated_error')
  rows = []
  for row in range(len(counts)):
    values = [counts[row], repeated[row], data['error'][row], data['mean_loss'][row]]
    if recalibrated_error is not None:
      values.append(data['recalibrated_error'][row])
    rows.append(values)
  return StudyResult('duplicate', data, columns, rows)


# ------------------------------------------------------------------- user_settings


def user_settings(evaluator: Evaluator, forward: np.ndarray, source: str) -> StudyResult:
  """Evaluate rows of forward gates, such as those read by ``load_settings_file``.

  Returns:
    JSON with ``settings_file``, ``forward`` (the rows), and per row ``error`` and
    ``mean_loss``, plus ``baseline_error`` of the unchanged network.
  """
  model = evaluator.model
  batch = settings_lib.gates_from_forward(
      model, np.concatenate([np.ones((1, model.num_blocks), np.float32), forward]))
  results, recalibrated = _evaluate_with_progress(evaluator, batch, 'user_settings')
  data: dict[str, Any] = {'settings_file': source, 'baseline_error': float(results.error[0]),
                          'num_examples': results.count, 'forward': forward.tolist(),
                          'error': results.error[1:].tolist(),
                          'mean_loss': results.mean_loss[1:].tolist()}
  columns = ['row', 'error', 'mean_loss']
  if recalibrated is not None:
    data['recalibrated_baseline_error'] = float(recalibrated.error[0])
    data['recalibrated_error'] = recalibrated.error[1:].tolist()
    columns.append('recalibrated_error')
  columns.append('forward')
  rows = []
  for row in range(len(forward)):
    values = [row + 1, data['error'][row], data['mean_loss'][row]]
    if recalibrated is not None:
      values.append(data['recalibrated_error'][row])
    values.append(data['forward'][row])
    rows.append(values)
  return StudyResult('user_settings', data, columns, rows)
