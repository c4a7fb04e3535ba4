"""Wall-clock timing with warm-up, repeats and interleaving.

Every timed function must block until its result is ready (``block_until_ready``
for JAX), or the clock stops when the work is only queued.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call of one timed function.

  Attributes:
    seconds: one entry per timed repeat; warm-up calls are not in it.
    warmup_seconds: the first call, which includes compilation for a function
      that compiles on first use.
    first_result: what the first call returned, for checking the results.
  """

  seconds: tuple[float, ...]
  warmup_seconds: float
  first_result: Any = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def median(self) -> float:
    return statistics.median(self.seconds)

  @property
  def spread(self) -> float:
    """Largest minus smallest repeat, in seconds: a rough noise level."""
    return max(self.seconds) - min(self.seconds)


def thread_count() -> int:
  """Return the CPU threads this process may use; XLA's CPU client sizes its pool so."""
  return len(os.sched_getaffinity(0))


def seconds_of(function: Callable[[], object]) -> float:
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def time_interleaved(functions: Mapping[str, Callable[[], object]], *, repeats: int,
                     warmup: int = 1) -> dict[str, Timing]:
  """Time several functions in rounds, one call of each per round.

  On a shared machine the load drifts. Taking the functions in turn within every
  round exposes each of them to the same drift, so the ratio of two medians is
  fairer than timing one function's repeats after the other's.

  Args:
    functions: name to a function of no arguments that blocks until done.
    repeats: timed rounds; the medians need at least 1, better 3 or more.
    warmup: untimed rounds before the timed ones; the first is reported.

  Returns:
    Name to ``Timing``.
  """
  if repeats < 1:
    raise ValueError(f'repeats must be at least 1, got {repeats}.')
  if warmup < 1:
    raise ValueError(f'warmup must be at least 1 (the first call is not timed), got '
                     f'{warmup}.')
  first, results = {}, {}
  for name, function in functions.items():
    start = time.perf_counter()
    results[name] = function()
    first[name] = time.perf_counter() - start
  for _ in range(warmup - 1):
    for function in functions.values():
      function()
  timed = {name: [] for name in functions}
  for _ in range(repeats):
    for name, function in functions.items():
      timed[name].append(seconds_of(function))
  return {name: Timing(seconds=tuple(timed[name]), warmup_seconds=first[name],
                      first_result=results[name]) for name in functions}
