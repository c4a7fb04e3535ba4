"""The path analyses of a trained network, written as results and figures.

'path_lengths' counts the paths of each length. 'path_gradients' measures how much
gradient the paths of each length carry: by sampling single paths, as Veit, Wilber
and Belongie (2016) did, and exactly, by summing all paths of each length.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy import special

from resjax import results
from resjax.errors import ConfigError, ResjaxError
from resjax.models import GatedResNet
from resjax.paths import counts as counts_lib
from resjax.paths import exact as exact_lib
from resjax.paths import figures, objective, sampled

PATH_ANALYSES = ('path_lengths', 'path_gradients')
COMPARISON_NAME = 'effective_paths'


class PathAnalysisError(ResjaxError):
  """The exact decomposition does not add up to the ordinary gradient."""


def run_path_analyses(model: GatedResNet, variables: dict[str, Any], train_images: np.ndarray,
                      labels: np.ndarray, analysis_config: Any, analyses_dir: str,
                      figures_dir: str, names: Sequence[str] = PATH_ANALYSES) -> list[str]:
  """Run the path analyses in ``names`` and write their results and figures.

  Args:
    model: a residual network.
    variables: its trained ``{'params', 'batch_stats'}``.
    train_images: preprocessed float32 training images ``[N, H, W, C]``; a seeded subset
      of ``analysis.path_batch_size`` of them forms the path batch.
    labels: int32 labels ``[N]``.
    analysis_config: ``config.analysis``.
    analyses_dir: folder of the JSON and CSV results, usually ``<workdir>/analyses``.
    figures_dir: folder of the PNG figures, usually ``<workdir>/figures``.
    names: which of 'path_lengths' and 'path_gradients' to run.

  Returns:
    The paths of the files written.
  """
  unknown = sorted(set(names) - set(PATH_ANALYSES))
  if unknown:
    raise ConfigError(f'unknown path analyses {unknown}; choose from {list(PATH_ANALYSES)}.')
  if not model.residual:
    raise ConfigError('the path analyses need a residual network, but model.residual is '
                      'False (a plain network has a single path). Remove '
                      f'{[n for n in names if n in PATH_ANALYSES]} from analysis.names.')
  if 'path_gradients' in names:
    # Checked before anything is written, so a bad field leaves no results behind.
    check_gradient_config(analysis_config)
    images, batch_labels = select_path_batch(train_images, labels,
                                             analysis_config.path_batch_size,
                                             analysis_config.seed)
  written = []
  if 'path_lengths' in names:
    result = counts_lib.path_length_distribution(model.num_blocks)
    written.append(write_path_lengths(result, analyses_dir))
    written.append(figures.plot_path_lengths(result, os.path.join(figures_dir,
                                                                  'path_lengths.png')))
  if 'path_gradients' in names:
    result = path_gradients(model, variables, images, batch_labels, analysis_config)
    written.append(write_path_gradients(result, analyses_dir))
    written.append(figures.plot_gradient_norm(
        result, os.path.join(figures_dir, 'path_gradient_norm.png')))
    written.append(figures.plot_contribution(
        result, os.path.join(figures_dir, 'path_contribution.png')))
  return written


def check_gradient_config(analysis_config: Any) -> None:
  """Raise ConfigError when a field that 'path_gradients' reads has an unusable value."""
  objective.check_batchnorm_mode(analysis_config.path_batchnorm)
  share = analysis_config.path_effective_share
  if not 0 < share <= 1:
    raise ConfigError(f'analysis.path_effective_share must be in (0, 1], got {share}; '
                      'for example 0.9 for 90% of the gradient.')
  for field in ('path_samples', 'path_batch_size', 'path_exact_segments'):
    value = analysis_config[field]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f'analysis.{field} must be a positive integer, got {value!r}.')
  if not analysis_config.memory_budget_mb > 0:
    raise ConfigError(f'analysis.memory_budget_mb must be positive, got '
                      f'{analysis_config.memory_budget_mb}.')
  if not analysis_config.path_exact_tolerance > 0:
    raise ConfigError(f'analysis.path_exact_tolerance must be positive, got '
                      f'{analysis_config.path_exact_tolerance}; 1e-3 suits float32.')


def select_path_batch(images: np.ndarray, labels: np.ndarray, batch_size: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Pick ``batch_size`` distinct images at random (seeded), kept in their dataset order."""
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f'train_images must be preprocessed float images [N, H, W, C], got '
                     f'shape {images.shape} and dtype {images.dtype}.')
  if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integers of shape [{len(images)}], one per image, got '
                     f'shape {labels.shape} and dtype {labels.dtype}.')
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ConfigError(f'analysis.path_batch_size must be a positive integer, got '
                      f'{batch_size!r}.')
  if batch_size > len(images):
    raise ConfigError(f'analysis.path_batch_size={batch_size} exceeds the {len(images)} '
                      'training images given; lower analysis.path_batch_size.')
  chosen = np.sort(np.random.default_rng(seed).choice(len(images), batch_size,
                                                      replace=False))
  return images[chosen], labels[chosen].astype(np.int32)


def path_gradients(model: GatedResNet, variables: dict[str, Any], images: np.ndarray,
                   labels: np.ndarray, analysis_config: Any) -> dict[str, Any]:
  """Measure the gradient of each path length, sampled and exact, on one image batch.

  The exact decomposition runs first and is checked against ``jax.grad``, because it is
  cheap and a failed check makes the long sampling pointless.

  Returns:
    The JSON result of 'path_gradients' (see ``write_path_gradients`` for the fields).
  """
  check_gradient_config(analysis_config)
  batchnorm = analysis_config.path_batchnorm
  share = analysis_config.path_effective_share
  num_blocks = model.num_blocks
  stem = _stem_output(model, variables, images, batchnorm)
  labels = jnp.asarray(labels)

  runner = sampled.PathGradientRunner(model, variables, stem, labels, batchnorm=batchnorm)
  total_paths = sum(sampled.samples_per_length(num_blocks, analysis_config.path_samples))
  paths_per_call = runner.fit_to_budget(analysis_config.memory_budget_mb, total_paths)

  # NOTE: one length's products cover one block, far less than the full backward pass of
  # one sampled path, so this bounds the products but not the n + 1 carried cotangents.
  exact = exact_lib.exact_path_norms(
      model, variables, stem, labels, batchnorm=batchnorm,
      segments_per_stage=analysis_config.path_exact_segments,
      lengths_per_call=paths_per_call // runner.num_devices)
  tolerance = analysis_config.path_exact_tolerance
  if not exact.relative_error <= tolerance:
    raise PathAnalysisError(
        f'the exact per-length gradients add up to the ordinary gradient only within a '
        f'relative error of {exact.relative_error:.3g}, over '
        f'analysis.path_exact_tolerance={tolerance}. With model.dtype other than float32 '
        'raise the tolerance; otherwise this is a bug in resjax.paths.exact.')
  logging.info('Exact path decomposition: relative error %.3g of the summed lengths.',
               exact.relative_error)

  start = time.perf_counter()
  measured = runner.measure(analysis_config.path_samples, analysis_config.seed)
  logging.info('Sampled paths: %.3g single-path backward passes per second.',
               total_paths / (time.perf_counter() - start))
  return summarize(num_blocks, measured, exact, share=share, batchnorm=batchnorm,
                   batch_size=len(images), samples=analysis_config.path_samples,
                   seed=analysis_config.seed)


def summarize(num_blocks: int, measured: sampled.PathNormsByLength,
              exact: exact_lib.ExactNorms, *, share: float, batchnorm: str, batch_size: int,
              samples: int, seed: int) -> dict[str, Any]:
  """Combine the sampled norms and the exact norms into the 'path_gradients' result."""
  log_counts = np.array(counts_lib.log_counts(num_blocks))
  means = measured.means
  with np.errstate(divide='ignore', over='ignore'):
    # Logs, because mean * C(n, k) overflows float64 once n is above about 1030.
    log_total = np.log(means) + log_counts
    total = np.exp(log_total)
    exact_over_count = np.exp(np.log(exact.norms) - log_counts)
  if np.any(means > 0):
    contribution_share = np.exp(log_total - special.logsumexp(log_total))
    effective_range = list(counts_lib.shortest_interval(contribution_share.tolist(), share))
  else:
    logging.warning('Every sampled path has a zero gradient; no effective range exists.')
    contribution_share = np.zeros_like(means)
    effective_range = None
  exact_range = (list(counts_lib.shortest_interval(exact.norms.tolist(), share))
                 if np.any(exact.norms > 0) else None)
  return {
      'num_blocks': num_blocks,
      'lengths': list(range(num_blocks + 1)),
      'counts': counts_lib.path_length_counts(num_blocks),
      'gradient_of': objective.describe_gradient(batchnorm),
      'batchnorm': batchnorm,
      'batch_size': batch_size,
      'samples': samples,
      'seed': seed,
      'samples_per_length': measured.samples_per_length,
      'exhaustive': measured.exhaustive,
      'sampled_mean_norm': means,
      'sampled_std_norm': measured.stds,
      'total_contribution': total,
      'log10_total_contribution': log_total / math.log(10),
      'contribution_share': contribution_share,
      'effective_share': share,
      'effective_range': effective_range,
      'exact_norm': exact.norms,
      'exact_norm_over_count': exact_over_count,
      'exact_effective_range': exact_range,
      'full_gradient_norm': exact.full_norm,
      'exact_sum_relative_error': exact.relative_error,
  }


def write_path_lengths(result: Mapping[str, Any], analyses_dir: str) -> str:
  """Write ``path_lengths.json`` and ``path_lengths.csv``; return the JSON path."""
  rows = list(zip(result['lengths'], result['counts'], result['fractions']))
  return results.write_result(analyses_dir, 'path_lengths', result,
                              ['length', 'count', 'fraction'], rows)


def write_path_gradients(result: Mapping[str, Any], analyses_dir: str) -> str:
  """Write ``path_gradients.json`` and ``path_gradients.csv``; return the JSON path.

  Per length ``k``: ``sampled_mean_norm`` and ``sampled_std_norm`` (population std) of
  the per-path norms; ``samples_per_length`` and ``exhaustive`` (every path measured
  once); ``total_contribution`` = mean * C(n, k) (null where it overflows; its log10 is
  always given) and its ``contribution_share`` of the sum over lengths; ``exact_norm``,
  the norm of the exact sum over all length-k paths, and ``exact_norm_over_count``.
  ``effective_range`` is the shortest interval of lengths holding ``effective_share`` of
  the sampled total; ``exact_effective_range`` the same for ``exact_norm``.
  """
  columns = ['length', 'count', 'samples', 'exhaustive', 'sampled_mean_norm',
             'sampled_std_norm', 'total_contribution', 'log10_total_contribution',
             'contribution_share', 'exact_norm', 'exact_norm_over_count']
  rows = list(zip(result['lengths'], result['counts'], result['samples_per_length'],
                  result['exhaustive'], result['sampled_mean_norm'],
                  result['sampled_std_norm'], result['total_contribution'],
                  result['log10_total_contribution'], result['contribution_share'],
                  result['exact_norm'], result['exact_norm_over_count']))
  return results.write_result(analyses_dir, 'path_gradients', result, columns, rows)


def compare_short_path_training(workdirs: Mapping[str, str],
                                analyses_dir: str) -> list[dict[str, Any]]:
  """Tabulate the final test errors of trainings at the same budget, such as short paths.

  Reads each workdir's ``train_summary.json`` and writes ``effective_paths.json`` and its
  CSV twin to ``analyses_dir``.

  Args:
    workdirs: a label per workdir, for example ``{'full': ..., 'short_paths': ...}``.
    analyses_dir: where the table is written.

  Returns:
    One row per workdir: 'name', 'workdir', 'final_test_error', and 'epochs' and 'steps'
    when the summary has them.
  """
  if not workdirs:
    raise ValueError('workdirs is empty; pass a label per trained workdir, such as '
                     "{'full': 'runs/r110', 'short_paths': 'runs/r110_short'}.")
  table = [_summary_row(name, workdir) for name, workdir in workdirs.items()]
  epochs = {row.get('epochs') for row in table}
  if len(epochs) > 1:
    logging.warning('The compared runs trained for different numbers of epochs: %s.',
                    {row['name']: row.get('epochs') for row in table})
  columns = ['name', 'workdir', 'final_test_error', 'epochs', 'steps']
  rows = [[row.get(column) for column in columns] for row in table]
  results.write_result(analyses_dir, COMPARISON_NAME, {'runs': table}, columns, rows)
  return table


def _summary_row(name: str, workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, 'train_summary.json')
  if not os.path.isfile(path):
    raise ConfigError(f'{path} not found: run {name!r} has no finished training. Train it '
                      'first with --mode=train.')
  summary = results.read_json(path)
  # The training loop writes 'test_error'; 'final_test_error' is accepted as well.
  error = summary.get('final_test_error', summary.get('test_error'))
  if not isinstance(error, (int, float)):
    raise ConfigError(f'{path} has no numeric final_test_error or test_error (found '
                      f'{sorted(summary)}); rerun the training of {name!r}.')
  row = {'name': name, 'workdir': workdir, 'final_test_error': float(error)}
  for field in ('epochs', 'steps'):
    if field in summary:
      row[field] = summary[field]
  return row


@functools.partial(jax.jit, static_argnums=(0, 3))
def _stem_output(model, variables, images, batchnorm):
  return objective.stem_output(model, variables, images, batchnorm=batchnorm)
