"""The paper's claims checked against one run's saved results.

Each check reads the JSON files in ``<workdir>/analyses`` and returns a ``Claim``:
the claim, what Veit, Wilber and Belongie (NeurIPS 2016) report for it, what this
run measured, and whether it holds here. A claim whose analysis did not run is
marked 'not measured' with the way to measure it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from scipy import stats

HOLDS, FAILS, NOT_MEASURED = 'yes', 'no', 'not measured'


@dataclasses.dataclass(frozen=True)
class Claim:
  claim: str
  paper: str
  this_run: str
  holds: str


def _percent(value: float) -> str:
  return f'{100 * value:.2f}%'


def _spearman(x, y) -> float:
  if len(x) < 3 or np.all(np.asarray(y) == np.asarray(y)[0]):
    return float('nan')
  return float(stats.spearmanr(x, y).statistic)


def check_path_lengths(results: Mapping[str, Any]) -> Claim:
  claim = 'A ResNet of n blocks unravels into 2^n paths with Binomial(n, 1/2) lengths'
  paper = 'ResNet-110: 54 blocks, 2^54 paths; 95% of them have length 19 to 35'
  data = results.get('path_lengths')
  if data is None:
    return Claim(claim, paper, 'path_lengths analysis not run', NOT_MEASURED)
  counts = [int(c) for c in data['counts']]
  n = len(counts) - 1
  binomial = all(c == math.comb(n, k) for k, c in enumerate(counts))
  low, high = data['interval_95']
  measured = f'{n} blocks, 2^{n} paths; 95% have length {low} to {high}'
  return Claim(claim, paper, measured, HOLDS if binomial and sum(counts) == 2 ** n else FAILS)


def _single_deletion_errors(section: Mapping[str, Any], skip_downsampling: bool):
  return np.array([block['error'] for block in section['blocks']
                   if not (skip_downsampling and block.get('downsampling'))])


def check_single_deletion(results: Mapping[str, Any], tolerance: float) -> Claim:
  claim = 'Deleting one residual block barely changes the error, apart from a few blocks'
  paper = ('ResNet-110 on CIFAR-10: single deletions stay close to the baseline error; '
           'the downsampling blocks hurt most')
  data = results.get('lesion_single')
  if data is None:
    return Claim(claim, paper, 'lesion_single analysis not run', NOT_MEASURED)
  baseline = data['baseline_error']
  errors = _single_deletion_errors(data, skip_downsampling=True)
  if errors.size == 0:
    return Claim(claim, paper, 'the model has only downsampling blocks', NOT_MEASURED)
  worst = max(data['blocks'], key=lambda block: block['error'])
  increase = float(np.median(errors) - baseline)
  measured = (f'baseline {_percent(baseline)}; median single deletion {_percent(np.median(errors))} '
              f'(+{100 * increase:.2f} points); worst: block {worst["index"]} at '
              f'{_percent(worst["error"])}'
              f'{" (downsampling)" if worst.get("downsampling") else ""}')
  return Claim(claim, paper, measured, HOLDS if increase <= tolerance else FAILS)


def check_plain_deletion(results: Mapping[str, Any], gap: float) -> Claim:
  claim = 'Deleting one layer of a network without skips destroys it'
  paper = 'a 15-layer VGG-style network: any single deletion drives the error to chance'
  data = results.get('lesion_single')
  if data is None or not data.get('plain'):
    return Claim(claim, paper, 'no plain network given (set analysis.plain_workdir to the '
                 'workdir of a run of configs/cifar10_plain.py)', NOT_MEASURED)
  plain = _single_deletion_errors(data['plain'], skip_downsampling=False)
  residual = _single_deletion_errors(data, skip_downsampling=True)
  measured = (f'plain: baseline {_percent(data["plain"]["baseline_error"])}, median single '
              f'deletion {_percent(np.median(plain))}; residual median '
              f'{_percent(np.median(residual))}')
  holds = np.median(plain) - np.median(residual) >= gap
  return Claim(claim, paper, measured, HOLDS if holds else FAILS)


def check_multi_deletion(results: Mapping[str, Any], min_correlation: float) -> Claim:
  claim = 'Error grows smoothly as more blocks are deleted'
  paper = 'ResNet-110: the mean error rises smoothly with the number of deleted blocks'
  data = results.get('lesion_multi')
  if data is None:
    return Claim(claim, paper, 'lesion_multi analysis not run', NOT_MEASURED)
  k, mean = np.asarray(data['k']), np.asarray(data['mean_error'])
  rho = _spearman(k, mean)
  steps = np.diff(mean)
  measured = (f'k = 1..{int(k.max())}: mean error {_percent(mean[0])} to {_percent(mean[-1])}; '
              f'rank correlation with k {rho:.2f}; largest step '
              f'{100 * float(steps.max(initial=0.0)):.2f} points')
  return Claim(claim, paper, measured, HOLDS if rho >= min_correlation else FAILS)


def check_reordering(results: Mapping[str, Any], min_correlation: float) -> Claim:
  claim = 'Error grows smoothly as blocks are reordered further from their order'
  paper = 'ResNet-110: the error rises smoothly as the Kendall tau of the order falls'
  data = results.get('reorder')
  if data is None:
    return Claim(claim, paper, 'reorder analysis not run', NOT_MEASURED)
  tau, error = np.asarray(data['kendall_tau']), np.asarray(data['error'])
  distinct = np.unique(np.round(tau, 6)).size
  if distinct < 3:
    return Claim(claim, paper, f'only {distinct} distinct orders are possible: this model has '
                 'too few interchangeable blocks per stage', NOT_MEASURED)
  rho = _spearman(tau, error)
  measured = (f'{tau.size} orders, Kendall tau {tau.min():.2f} to {tau.max():.2f}, error '
              f'{_percent(error.min())} to {_percent(error.max())}; rank correlation '
              f'of error with tau {rho:.2f}')
  return Claim(claim, paper, measured, HOLDS if rho <= -min_correlation else FAILS)


def check_gradient_decay(results: Mapping[str, Any], min_correlation: float) -> Claim:
  claim = 'The gradient carried by one path falls fast with its length'
  paper = 'ResNet-110: the per-path gradient norm falls exponentially with path length'
  data = results.get('path_gradients')
  if data is None:
    return Claim(claim, paper, 'path_gradients analysis not run', NOT_MEASURED)
  lengths = np.asarray(data['lengths'])
  norms = np.asarray([np.nan if v is None else v for v in data['sampled_mean_norm']], float)
  valid = np.isfinite(norms) & (norms > 0)
  rho = _spearman(lengths[valid], norms[valid])
  first, last = norms[valid][0], norms[valid][-1]
  ratio = first / last if last > 0 else float('inf')
  measured = (f'mean norm {first:.3g} at length {lengths[valid][0]} and {last:.3g} at length '
              f'{lengths[valid][-1]} (shortest / longest = {ratio:.3g}); rank correlation '
              f'with length {rho:.2f}')
  return Claim(claim, paper, measured, HOLDS if rho <= -min_correlation else FAILS)


def check_effective_paths(results: Mapping[str, Any]) -> Claim:
  claim = 'Almost all gradient comes from paths much shorter than the typical path'
  paper = ('ResNet-110: paths of 5 to 17 of the 54 blocks carry almost all gradient; they '
           'are 0.45% of all paths')
  data = results.get('path_gradients')
  if data is None:
    return Claim(claim, paper, 'path_gradients analysis not run', NOT_MEASURED)
  low, high = data['effective_range']
  n = max(data['lengths'])
  share = sum(math.comb(n, k) for k in range(low, high + 1)) / 2 ** n
  measured = (f'paths of {low} to {high} of the {n} blocks carry '
              f'{_percent(data.get("effective_share", 0.9))} of the gradient; they are '
              f'{_percent(share)} of all paths; typical path length {n / 2:g}')
  return Claim(claim, paper, measured, HOLDS if high < n / 2 else FAILS)


def check_exact_decomposition(results: Mapping[str, Any], tolerance: float) -> Claim:
  claim = 'The per-length gradient sums add up to the whole gradient (resjax, exact)'
  paper = 'not computed in the paper, which sampled paths'
  data = results.get('path_gradients')
  if data is None or data.get('exact_sum_relative_error') is None:
    return Claim(claim, paper, 'path_gradients analysis not run', NOT_MEASURED)
  error = float(data['exact_sum_relative_error'])
  return Claim(claim, paper, f'relative difference {error:.2e}',
               HOLDS if error <= tolerance else FAILS)


def check_short_path_training(results: Mapping[str, Any], tolerance: float) -> Claim:
  claim = 'Training only short paths loses nothing'
  paper = ('ResNet-110 trained with gradient through 23 of 54 blocks per step matches the '
           'full training')
  data = results.get('effective_paths')
  if data is None:
    return Claim(claim, paper, 'not run here: train configs/cifar10_short_paths.py and '
                 'configs/cifar10_resnet110.py and compare', NOT_MEASURED)
  rows = {row['name']: row for row in data['runs']}
  if 'short_paths' not in rows or 'full' not in rows:
    return Claim(claim, paper, 'effective_paths.json lacks a short_paths or full run',
                 NOT_MEASURED)
  short = rows['short_paths']['final_test_error']
  full = rows['full']['final_test_error']
  measured = f'short paths {_percent(short)}, full {_percent(full)}'
  return Claim(claim, paper, measured, HOLDS if short <= full + tolerance else FAILS)


def criteria_note(config) -> str:
  """Return one paragraph that states when each claim counts as holding in this run."""
  report = config.report
  return (
      "'Holds here' means: the median single deletion is at most "
      f'{100 * report.single_deletion_tolerance:g} points above the baseline error; the '
      "plain network's median deletion error is at least "
      f'{100 * report.plain_gap:g} points above the residual one; error against the number '
      'of deleted blocks, error against Kendall tau and the per-path gradient against path '
      f'length have a Spearman rank correlation of at least {report.min_rank_correlation:g} '
      'in magnitude, in the direction the paper reports; the shortest range of lengths that '
      'carries the gradient ends below the typical length n / 2; the exact per-length sums '
      f'match jax.grad within {config.analysis.path_exact_tolerance:g}; short-path training '
      f'is at most {100 * report.short_path_tolerance:g} points worse. The study of several '
      'deleted blocks leaves out the downsampling blocks unless '
      'analysis.lesion_multi_include_downsampling is set. The thresholds are fields of '
      'config.report.')


def check_claims(results: Mapping[str, Any], config) -> list[Claim]:
  """Check every claim; ``results`` maps analysis names to their loaded JSON."""
  report_config = config.report
  return [
      check_path_lengths(results),
      check_single_deletion(results, report_config.single_deletion_tolerance),
      check_plain_deletion(results, report_config.plain_gap),
      check_multi_deletion(results, report_config.min_rank_correlation),
      check_reordering(results, report_config.min_rank_correlation),
      check_gradient_decay(results, report_config.min_rank_correlation),
      check_effective_paths(results),
      check_exact_decomposition(results, config.analysis.path_exact_tolerance),
      check_short_path_training(results, report_config.short_path_tolerance),
  ]
