"""The sampled estimate of the gradient carried by one path of each length.

Veit, Wilber and Belongie (2016), "Residual Networks Behave Like Ensembles of
Relatively Shallow Networks", measure the gradient of single paths. For a length ``k``
they pick ``k`` blocks at random. With the forward pass unchanged, the gradient flows
back only through the branches of those blocks and only through the shortcuts of all
others. Here the backward gates do this (branch 1 and shortcut 0 on
the chosen blocks, branch 0 and shortcut 1 elsewhere), and every path of a chunk runs
as one vmapped backward pass that shares a single forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from resjax import sharding
from resjax.errors import ConfigError
from resjax.gates import Gates
from resjax.models import GatedResNet
from resjax.paths import objective
from resjax.progress import Progress


@dataclasses.dataclass(frozen=True)
class PathNormsByLength:
  """Per-path gradient norms, grouped by path length.

  Attributes:
    norms: for each length ``k = 0..n``, the norms of the sampled paths of length ``k``
      (per-image Frobenius norm, mean over images).
    exhaustive: for each length, whether every path of that length was measured once
      (``C(n, k) <= samples``) instead of sampled.
  """

  norms: list[np.ndarray]
  exhaustive: list[bool]

  @property
  def samples_per_length(self) -> list[int]:
    return [len(values) for values in self.norms]

  @property
  def means(self) -> np.ndarray:
    return np.array([np.mean(values) for values in self.norms], np.float64)

  @property
  def stds(self) -> np.ndarray:
    """Population standard deviation (ddof=0) of the norms of each length."""
    return np.array([np.std(values) for values in self.norms], np.float64)


def path_sets(num_blocks: int, samples: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
  """Yield, for each length ``k = 0..n``, the paths to measure as a bool ``[m, n]`` array.

  Row ``i`` marks the blocks whose branch path ``i`` passes. When ``C(n, k) <= samples``
  every path of length ``k`` appears exactly once, so the estimate is exact there.
  Otherwise ``samples`` sets of ``k`` distinct blocks are drawn uniformly and
  independently. A set may then repeat, which matters only when ``C(n, k)`` is small.
  The draws come from ``numpy.random.default_rng(seed)``, one length after another.
  """
  if not isinstance(samples, int) or samples < 1:
    raise ConfigError(f'analysis.path_samples must be a positive integer, got {samples!r}.')
  rng = np.random.default_rng(seed)
  blocks = np.arange(num_blocks)
  for length in range(num_blocks + 1):
    if math.comb(num_blocks, length) <= samples:
      rows = np.zeros((math.comb(num_blocks, length), num_blocks), bool)
      for row, chosen in enumerate(itertools.combinations(range(num_blocks), length)):
        rows[row, list(chosen)] = True
    else:
      order = rng.permuted(np.broadcast_to(blocks, (samples, num_blocks)), axis=1)
      rows = np.zeros((samples, num_blocks), bool)
      np.put_along_axis(rows, order[:, :length], True, axis=1)
    yield length, rows


def samples_per_length(num_blocks: int, samples: int) -> list[int]:
  """Return how many paths ``path_sets`` yields for each length: ``min(C(n, k), samples)``."""
  return [min(math.comb(num_blocks, length), samples) for length in range(num_blocks + 1)]


class PathGradientRunner:
  """Compiled, vmapped single-path backward passes on one image batch.

  The model, the batch and the devices are fixed at construction. ``compile`` or
  ``fit_to_budget`` then fixes the paths per call, and ``measure`` runs every chunk of
  paths through the one compiled program.

  Args:
    model: a residual network.
    variables: its ``{'params', 'batch_stats'}``.
    stem: the stem output of the image batch, ``objective.stem_output``.
    labels: int labels of the batch.
    batchnorm: 'train' (batch statistics) or 'eval' (running averages).
    devices: devices the paths of a call are split over; default all local devices.
  """

  def __init__(self, model: GatedResNet, variables: dict[str, Any], stem: jax.Array,
               labels: jax.Array, *, batchnorm: str,
               devices: list[jax.Device] | None = None):
    objective.check_batchnorm_mode(batchnorm)
    if not model.residual:
      raise ValueError('single paths exist only in a residual network, but this model has '
                       'residual=False. Use a config with model.residual=True.')
    self.model = model
    self.batchnorm = batchnorm
    self.mesh = sharding.make_mesh(devices if devices is not None else jax.local_devices())
    self.arguments = jax.device_put((variables, stem, labels), sharding.replicated(self.mesh))
    self.paths_per_call = None
    self._compiled = None

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def compile(self, paths_per_call: int) -> float | None:
    """Compile the program for ``paths_per_call`` paths and keep it for ``measure``.

    Returns:
      XLA's estimate of the program's memory on one device in bytes (temporaries and
      outputs), or None when the backend gives no memory analysis.
    """
    if paths_per_call < 1 or paths_per_call % self.num_devices:
      raise ValueError(f'paths_per_call must be a positive multiple of the '
                       f'{self.num_devices} devices, got {paths_per_call}.')
    chunk = jax.ShapeDtypeStruct((paths_per_call, self.model.num_blocks), jnp.float32,
                                 sharding=sharding.batch_sharding(self.mesh))
    self._compiled = _chunk_norms.lower(self.model, *self.arguments, chunk,
                                        self.batchnorm).compile()
    self.paths_per_call = paths_per_call
    try:
      analysis = self._compiled.memory_analysis()
    except (NotImplementedError, AttributeError) as error:
      logging.info('XLA memory analysis failed: %s', error)
      return None
    if analysis is None:
      return None
    return float(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)

  def fit_to_budget(self, memory_budget_mb: float, total_paths: int) -> int:
    """Compile for the most paths per call whose memory fits ``memory_budget_mb`` per device.

    All paths in one call are tried first. When they do not fit, the memory of one path
    per device and of all paths give a line: a fixed part for the shared forward pass
    and a part per path for its backward pass. The program is then compiled again for
    the paths per call that the line allows, spread evenly over the calls.

    Returns:
      The paths per call, a multiple of the device count.
    """
    if not memory_budget_mb > 0:
      raise ConfigError(f'analysis.memory_budget_mb must be positive, got '
                        f'{memory_budget_mb}.')
    budget = memory_budget_mb * 2**20
    largest = max(1, math.ceil(total_paths / self.num_devices))
    largest_bytes = self.compile(largest * self.num_devices)
    if largest_bytes is None:
      # NOTE: without XLA's memory analysis the budget cannot be checked; one path per
      # device is the choice that fits whenever anything fits, and the slowest.
      logging.warning('XLA gave no memory analysis on this backend; measuring one path '
                      'per device per call.')
      self.compile(self.num_devices)
      return self.paths_per_call
    if largest_bytes <= budget:
      return self.paths_per_call
    one_bytes = largest_bytes if largest == 1 else self.compile(self.num_devices)
    per_device = paths_within_budget(one_bytes, largest_bytes, largest, budget)
    if per_device < 1:
      raise ConfigError(
          f'one path needs an estimated {one_bytes / 2**20:.1f} MiB for its backward pass '
          f'on a batch of {self.arguments[1].shape[0]} images, over '
          f'analysis.memory_budget_mb={memory_budget_mb}; raise analysis.memory_budget_mb '
          'or lower analysis.path_batch_size.')
    calls = math.ceil(total_paths / (per_device * self.num_devices))
    per_device = math.ceil(math.ceil(total_paths / calls) / self.num_devices)
    if per_device * self.num_devices != self.paths_per_call:
      self.compile(per_device * self.num_devices)
    logging.info('Path gradients: %d paths per call, %d calls.', self.paths_per_call, calls)
    return self.paths_per_call

  def measure(self, samples: int, seed: int) -> PathNormsByLength:
    """Measure the gradient norm of every path that ``path_sets(n, samples, seed)`` yields."""
    if self._compiled is None:
      raise RuntimeError('call compile or fit_to_budget before measure.')
    num_blocks = self.model.num_blocks
    counts = samples_per_length(num_blocks, samples)
    norms = np.empty(sum(counts), np.float32)

    # The sets are drawn one length at a time, so only one chunk of rows is in memory.
    sets = (rows for _, rows in path_sets(num_blocks, samples, seed))
    done = 0
    with Progress(len(norms), 'path_gradients', unit='paths') as progress:
      for chunk, count in _chunks(sets, self.paths_per_call, num_blocks):
        chunk = jax.device_put(chunk, sharding.batch_sharding(self.mesh))
        result = self._compiled(*self.arguments, chunk)
        norms[done:done + count] = np.asarray(result)[:count]
        done += count
        progress.update(count)
    logging.info('Measured %d single-path gradients, %d paths per call.', done,
                 self.paths_per_call)

    bounds = np.cumsum([0] + counts)
    return PathNormsByLength(
        norms=[norms[bounds[k]:bounds[k + 1]] for k in range(num_blocks + 1)],
        exhaustive=[count == math.comb(num_blocks, k) for k, count in enumerate(counts)])


def paths_within_budget(one_bytes: float, largest_bytes: float, largest: int,
                        budget: float) -> int:
  """Return the paths per device whose memory fits ``budget``, from two measurements.

  Args:
    one_bytes: memory of a call with one path per device.
    largest_bytes: memory of a call with ``largest`` paths per device.
    largest: paths per device of the second measurement, more than one.
    budget: bytes available on one device.

  Returns:
    At most ``largest``; 0 when not even one path fits.
  """
  if one_bytes > budget:
    return 0
  per_path = max((largest_bytes - one_bytes) / (largest - 1), 1.0)
  fixed = one_bytes - per_path
  return int(min(largest, (budget - fixed) // per_path))


def _chunks(row_groups: Iterable[np.ndarray], size: int,
            num_blocks: int) -> Iterator[tuple[np.ndarray, int]]:
  """Regroup rows into float32 chunks of exactly ``size`` rows, so one program serves all.

  Yields ``(chunk, count)``; the rows past ``count`` of the last chunk are padding.
  """
  buffer = np.zeros((size, num_blocks), np.float32)
  filled = 0
  for rows in row_groups:
    start = 0
    while start < len(rows):
      take = min(size - filled, len(rows) - start)
      buffer[filled:filled + take] = rows[start:start + take]
      filled += take
      start += take
      if filled == size:
        yield buffer.copy(), size
        filled = 0
  if filled:
    buffer[filled:] = 0
    yield buffer.copy(), filled


@functools.partial(jax.jit, static_argnums=(0, 5))
def _chunk_norms(model, variables, stem, labels, branches, batchnorm):
  """Return the gradient norm of each path in ``branches`` ``[paths, num_blocks]``."""
  default = model.default_gates()
  order = tuple(jnp.asarray(stack) for stack in default.order)
  forward = jnp.ones((model.num_blocks,), jnp.float32)

  def path_norm(branch):
    # Forward gates and orders are shared, so the forward pass is computed once for all
    # paths of the chunk; only the backward pass is vmapped.
    gates = Gates(forward=forward, backward_branch=branch, backward_shortcut=1 - branch,
                  order=order)
    gradient = jax.grad(objective.loss_from_stem, argnums=2)(model, variables, stem, labels,
                                                             gates, batchnorm=batchnorm)
    return jnp.mean(objective.per_image_norms(gradient))

  return jax.vmap(path_norm)(branches)
