"""How many paths of each length a residual network has, and intervals of lengths.

A network of ``n`` residual blocks unravels into ``2**n`` paths: each block is either
passed through its branch or skipped through its shortcut, and a path's length is the
number of branches it passes. There are ``C(n, k)`` paths of length ``k``. Counts stay
exact Python integers: ``C(600, 300)`` (ResNet-1202) is about 1e179, and ``2**n``
overflows a float once ``n`` exceeds 1023.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence


def path_length_counts(num_blocks: int) -> list[int]:
  """Return ``C(n, k)`` for ``k = 0..n`` as exact integers."""
  _check_num_blocks(num_blocks)
  return [math.comb(num_blocks, k) for k in range(num_blocks + 1)]


def path_length_fractions(num_blocks: int) -> list[float]:
  """Return ``C(n, k) / 2**n`` for ``k = 0..n``.

  Python divides the two integers exactly and rounds once, so no intermediate float
  overflows; fractions below about 1e-308 round to 0.0.
  """
  total = 2**num_blocks
  return [count / total for count in path_length_counts(num_blocks)]


def shortest_interval(weights: Sequence[int | float], share: float) -> tuple[int, int]:
  """Find the shortest run of consecutive indices whose weights hold ``share`` of the total.

  Among runs of the same length, the one with the largest weight wins, then the
  leftmost. Integer weights are compared exactly, so huge path counts lose nothing.

  Args:
    weights: non-negative weights, one per length ``0..n``.
    share: the required share of the total, in (0, 1].

  Returns:
    ``(first, last)``, both inclusive.
  """
  if not 0 < share <= 1:
    raise ValueError(f'share must be in (0, 1], got {share}; for example 0.9 for 90%.')
  if not weights:
    raise ValueError('weights is empty; pass one weight per path length.')
  exact = all(isinstance(w, int) for w in weights)
  values = [Fraction(w) if exact else float(w) for w in weights]
  if any(not v >= 0 for v in values):
    raise ValueError(f'weights must be non-negative and not NaN, got {list(weights)}.')
  total = sum(values)
  if total == 0:
    raise ValueError('every weight is 0, so no interval contains a share of the total; '
                     'check that the weights were measured.')
  target = Fraction(share) * total if exact else share * total

  # Two pointers: for each first index, the smallest last index that reaches the target
  # never moves left, because all weights are non-negative.
  best = None
  last = -1
  window = 0
  for first in range(len(values)):
    while window < target and last + 1 < len(values):
      last += 1
      window += values[last]
    if window < target:
      break
    candidate = (last - first, -window, first, last)
    if best is None or candidate < best:
      best = candidate
    window -= values[first]
  if best is None:
    # Float rounding can leave the full sum a hair below share * total when share is 1.
    return 0, len(values) - 1
  return best[2], best[3]


# Share of all paths that ``interval_95`` holds; the result field is named after it.
INTERVAL_SHARE = 0.95


def path_length_distribution(num_blocks: int) -> dict:
  """Return the path-length distribution of a network of ``num_blocks`` blocks.

  Returns:
    A dict with ``lengths``, ``counts`` (exact integers), ``fractions``,
    ``total_paths`` (``2**n``) and ``interval_95``, the shortest interval of lengths
    holding 95% of all paths. The binomial distribution is symmetric and
    unimodal, so this interval is the central one.
  """
  counts = path_length_counts(num_blocks)
  return {
      'num_blocks': num_blocks,
      'lengths': list(range(num_blocks + 1)),
      'counts': counts,
      'fractions': path_length_fractions(num_blocks),
      'total_paths': 2**num_blocks,
      'interval_95': list(shortest_interval(counts, INTERVAL_SHARE)),
  }


def log_counts(num_blocks: int) -> list[float]:
  """Return ``log C(n, k)`` for ``k = 0..n`` (natural log, exact for any size)."""
  return [math.log(count) for count in path_length_counts(num_blocks)]


def _check_num_blocks(num_blocks: int) -> None:
  if not isinstance(num_blocks, int) or num_blocks < 0:
    raise ValueError(f'num_blocks must be a non-negative integer, got {num_blocks!r}.')
