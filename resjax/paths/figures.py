"""Figures of the path analyses, after Figure 6 of Veit, Wilber and Belongie (2016).

Each function takes the JSON result of ``resjax.paths.study`` and writes one PNG file
through a temporary file and a rename, so a failed plot leaves no partial image.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position


def plot_path_lengths(result: Mapping[str, Any], path: str) -> str:
  """Plot the share of all paths at each length, with the interval holding 95% of them."""
  lengths = np.asarray(result['lengths'])
  fractions = np.asarray(result['fractions'], np.float64)
  first, last = result['interval_95']
  figure, axes = plt.subplots(figsize=(6, 4))
  axes.bar(lengths, fractions, width=1.0, color='tab:blue')
  axes.axvspan(first - 0.5, last + 0.5, color='tab:orange', alpha=0.2,
               label=f'95% of paths: lengths {first}..{last}')
  axes.set_xlabel('path length (branches passed)')
  axes.set_ylabel(f'share of all 2^{result["num_blocks"]} paths')
  axes.set_title('Distribution of path lengths')
  axes.legend(loc='upper left')
  return _save(figure, path)


def plot_gradient_norm(result: Mapping[str, Any], path: str) -> str:
  """Plot the gradient norm of one path per length on a log scale.

  The sampled mean comes with a band of one standard deviation. The exact curve is the
  norm of the summed gradient of all length-k paths divided by C(n, k). By the triangle
  inequality it is at most the mean per-path norm, and it is lower when paths cancel.
  """
  lengths = np.asarray(result['lengths'])
  mean = _floats(result['sampled_mean_norm'])
  std = _floats(result['sampled_std_norm'])
  over_count = _floats(result['exact_norm_over_count'])
  figure, axes = plt.subplots(figsize=(6, 4))
  axes.plot(lengths, mean, color='tab:blue', label='sampled: mean norm of one path')
  positive = mean[mean > 0]
  floor = positive.min() / 10 if positive.size else 1e-30
  axes.fill_between(lengths, np.maximum(mean - std, floor), mean + std, color='tab:blue',
                    alpha=0.2, label='sampled: mean +/- one std')
  axes.plot(lengths, over_count, color='tab:red', linestyle='--',
            label='exact: |sum over length-k paths| / C(n, k)')
  axes.set_yscale('log')
  axes.set_xlabel('path length (branches passed)')
  axes.set_ylabel('gradient norm at the input of block 0')
  axes.set_title('Gradient norm per path')
  axes.legend()
  return _save(figure, path)


def plot_contribution(result: Mapping[str, Any], path: str) -> str:
  """Plot each length's share of the gradient, sampled and exact, with the effective range.

  The sampled share is mean norm times C(n, k), normalised over all lengths. The exact
  share is the norm of the summed gradient of the length, normalised the same way.
  Shares are plotted instead of the totals, which overflow a float for very deep networks.
  """
  lengths = np.asarray(result['lengths'])
  figure, axes = plt.subplots(figsize=(6, 4))
  axes.plot(lengths, _floats(result['contribution_share']), color='tab:blue',
            label='sampled: mean norm x C(n, k)')
  exact = _floats(result['exact_norm'])
  if np.nansum(exact) > 0:
    axes.plot(lengths, exact / np.nansum(exact), color='tab:red', linestyle='--',
              label='exact: |sum over length-k paths|')
  if result.get('effective_range'):
    first, last = result['effective_range']
    share = result['effective_share']
    axes.axvspan(first - 0.5, last + 0.5, color='tab:orange', alpha=0.2,
                 label=f'{share:.0%} of sampled total: lengths {first}..{last}')
  axes.set_xlabel('path length (branches passed)')
  axes.set_ylabel('share of the summed gradient norm')
  axes.set_title('Total gradient contribution per path length')
  axes.legend()
  return _save(figure, path)


def _floats(values) -> np.ndarray:
  # JSON stores overflowed or undefined values as null.
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _save(figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f'{path}.tmp-{os.getpid()}'
  try:
    figure.tight_layout()
    figure.savefig(temporary, format='png', dpi=120)
    os.replace(temporary, path)
  finally:
    plt.close(figure)
    if os.path.exists(temporary):
      os.remove(temporary)
  return path
