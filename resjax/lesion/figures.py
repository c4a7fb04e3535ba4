"""Figures of the lesion studies, drawn from their JSON objects in the manner of Veit,
Wilber and Belongie (2016), "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks" (figures 3 and 5). Errors are drawn in percent."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from matplotlib import ticker  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

BASELINE_STYLE = dict(color='0.4', linestyle='--', linewidth=1)


def _percent(values) -> np.ndarray:
  return 100.0 * np.asarray(values, np.float64)


def _save(figure, path: str) -> str:
  """Save through a temporary file and a rename, so no half-written PNG is left."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f'{path}.tmp-{os.getpid()}.png'
  try:
    figure.savefig(temporary, dpi=120, bbox_inches='tight')
    os.replace(temporary, path)
  finally:
    plt.close(figure)
    if os.path.exists(temporary):
      os.remove(temporary)
  return path


def _single_panel(axes, section: Mapping[str, Any], title: str) -> None:
  blocks = section['blocks']
  index = np.asarray([block['index'] for block in blocks])
  error = _percent([block['error'] for block in blocks])
  axes.plot(index, error, marker='o', markersize=3, linewidth=1, label='one block deleted')
  if blocks and 'recalibrated_error' in blocks[0]:
    axes.plot(index, _percent([block['recalibrated_error'] for block in blocks]),
              marker='s', markersize=3, linewidth=1, label='BatchNorm recalibrated')
  downsampling = np.asarray([block['downsampling'] for block in blocks], bool)
  if downsampling.any():
    axes.scatter(index[downsampling], error[downsampling], marker='X', s=60, color='crimson',
                 zorder=3, label='downsampling block')
  axes.axhline(100.0 * section['baseline_error'], label='no block deleted', **BASELINE_STYLE)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel('deleted block')
  axes.set_ylabel('test error (%)')
  axes.set_title(title)
  axes.legend(fontsize='small')


def plot_lesion_single(data: Mapping[str, Any], path: str) -> str:
  """Error per deleted block, the residual network and, beside it, the plain one."""
  panels = 2 if data.get('plain') else 1
  figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
  _single_panel(axes[0, 0], data, 'residual network')
  if panels == 2:
    _single_panel(axes[0, 1], data['plain'], 'plain network (no skips)')
  return _save(figure, path)


def _mean_with_band(axes, x, mean, std, label: str) -> None:
  mean, std = _percent(mean), _percent(std)
  axes.plot(x, mean, marker='o', markersize=3, label=label)
  axes.fill_between(x, mean - std, mean + std, alpha=0.25)


def plot_lesion_multi(data: Mapping[str, Any], path: str) -> str:
  """Mean error against the number of deleted blocks, with a one-std band."""
  figure, axes = plt.subplots(figsize=(6, 4))
  _mean_with_band(axes, data['k'], data['mean_error'], data['std_error'], 'mean ± std')
  if 'recalibrated_mean_error' in data:
    _mean_with_band(axes, data['k'], data['recalibrated_mean_error'],
                    data['recalibrated_std_error'], 'BatchNorm recalibrated')
  axes.axhline(100.0 * data['baseline_error'], label='no block deleted', **BASELINE_STYLE)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel('number of deleted blocks')
  axes.set_ylabel('test error (%)')
  axes.set_title('deleting several blocks')
  axes.legend(fontsize='small')
  return _save(figure, path)


def plot_reorder(data: Mapping[str, Any], path: str) -> str:
  """Error against the Kendall tau of the block order, most shuffled to the right."""
  figure, axes = plt.subplots(figsize=(6, 4))
  axes.scatter(data['kendall_tau'], _percent(data['error']), s=10, alpha=0.6,
               label='one reordering')
  if 'recalibrated_error' in data:
    axes.scatter(data['kendall_tau'], _percent(data['recalibrated_error']), s=10, alpha=0.6,
                 marker='s', label='BatchNorm recalibrated')
  axes.axhline(100.0 * data['baseline_error'], label='original order', **BASELINE_STYLE)
  axes.invert_xaxis()
  axes.set_xlabel('Kendall tau of the block order')
  axes.set_ylabel('test error (%)')
  axes.set_title('reordering blocks')
  axes.legend(fontsize='small')
  return _save(figure, path)


def plot_duplicate(data: Mapping[str, Any], path: str) -> str:
  """Error against the number of blocks run twice, each setting and the mean per count."""
  figure, axes = plt.subplots(figsize=(6, 4))
  counts = np.asarray(data['blocks_repeated'])
  error = np.asarray(data['error'])
  axes.scatter(counts, _percent(error), s=10, alpha=0.5, label='one setting')
  values = sorted(set(counts.tolist()))
  axes.plot(values, [100.0 * error[counts == c].mean() for c in values], marker='o',
            label='mean')
  if 'recalibrated_error' in data:
    recalibrated = np.asarray(data['recalibrated_error'])
    axes.plot(values, [100.0 * recalibrated[counts == c].mean() for c in values],
              marker='s', label='mean, BatchNorm recalibrated')
  axes.axhline(100.0 * data['baseline_error'], label='no block repeated', **BASELINE_STYLE)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel('number of repeated blocks')
  axes.set_ylabel('test error (%)')
  axes.set_title('repeating blocks in place')
  axes.legend(fontsize='small')
  return _save(figure, path)


def plot_user_settings(data: Mapping[str, Any], path: str) -> str:
  """Error of each row of the settings file."""
  figure, axes = plt.subplots(figsize=(6, 4))
  rows = np.arange(1, len(data['error']) + 1)
  axes.plot(rows, _percent(data['error']), marker='o', markersize=3, linewidth=1,
            label='setting')
  if 'recalibrated_error' in data:
    axes.plot(rows, _percent(data['recalibrated_error']), marker='s', markersize=3,
              linewidth=1, label='BatchNorm recalibrated')
  axes.axhline(100.0 * data['baseline_error'], label='all gates 1', **BASELINE_STYLE)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel('row of the settings file')
  axes.set_ylabel('test error (%)')
  axes.set_title(os.path.basename(data['settings_file']))
  axes.legend(fontsize='small')
  return _save(figure, path)


PLOTS: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    'lesion_single': plot_lesion_single,
    'lesion_multi': plot_lesion_multi,
    'reorder': plot_reorder,
    'duplicate': plot_duplicate,
    'user_settings': plot_user_settings,
}
