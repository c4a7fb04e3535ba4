"""Builders of gate batches: deletions, swaps of interchangeable blocks, repeated blocks.

Every builder returns host (numpy) arrays. A batch of settings is a ``Gates`` whose
arrays have a leading axis of settings. The backward gates are always 1 here, because
these studies only evaluate.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from resjax.gates import Gates
from resjax.models.resnet import GatedResNet


def gates_from_forward(model: GatedResNet, forward: np.ndarray) -> Gates:
  """Build a batch from forward gates ``[M, num_blocks]``, every stack in its own order."""
  forward = np.asarray(forward, np.float32)
  if forward.ndim != 2 or forward.shape[1] != model.num_blocks:
    raise ValueError(f'forward gates have shape {forward.shape}, expected [settings, '
                     f'{model.num_blocks}]. {model.describe_blocks()}')
  count = forward.shape[0]
  default = model.default_gates()
  orders = tuple(np.repeat(order[None], count, axis=0) for order in default.order)
  return Gates(forward=forward, backward_branch=np.ones_like(forward),
               backward_shortcut=np.ones_like(forward), order=orders)


def gates_from_orders(model: GatedResNet, orders: Sequence[Sequence[np.ndarray]],
                      forward: np.ndarray | None = None) -> Gates:
  """Build a batch from one order per stage for each setting.

  Args:
    model: the network.
    orders: per setting, one int array of global block indices per stage. Every
      setting must give each stage an order of the same length.
    forward: optional forward gates ``[M, num_blocks]``; by default all 1.

  Returns:
    The batch, with orders ``[M, positions]`` per stage.
  """
  count = len(orders)
  if count == 0:
    raise ValueError('orders is empty; pass at least one setting.')
  stages = len(model.stage_sizes)
  for row, setting in enumerate(orders):
    if len(setting) != stages:
      raise ValueError(f'setting {row} gives {len(setting)} orders, expected one per stage '
                       f'({stages}).')
  stacked = []
  for stage in range(stages):
    lengths = {len(setting[stage]) for setting in orders}
    if len(lengths) != 1:
      raise ValueError(f'the orders of stage {stage} have different lengths {sorted(lengths)}; '
                       'group settings by order length (see group_by_shape).')
    stacked.append(np.asarray([setting[stage] for setting in orders], np.int32)
                   .reshape(count, lengths.pop()))
  if forward is None:
    forward = np.ones((count, model.num_blocks), np.float32)
  batch = gates_from_forward(model, forward)
  if batch.forward.shape[0] != count:
    raise ValueError(f'forward has {batch.forward.shape[0]} settings but orders has {count}.')
  return batch.replace(order=tuple(stacked))


def group_by_shape(orders: Sequence[Sequence[np.ndarray]]) -> dict[tuple[int, ...],
                                                                    list[int]]:
  """Group settings by the lengths of their stage orders: one compile per group.

  Returns:
    Map from the order lengths to the indices of the settings that have them.
  """
  groups: dict[tuple[int, ...], list[int]] = {}
  for row, setting in enumerate(orders):
    groups.setdefault(tuple(len(order) for order in setting), []).append(row)
  return groups


def single_deletions(model: GatedResNet, blocks: Sequence[int]) -> np.ndarray:
  """Forward gates ``[1 + len(blocks), num_blocks]``: the baseline, then each block deleted."""
  forward = np.ones((1 + len(blocks), model.num_blocks), np.float32)
  for row, block in enumerate(blocks, start=1):
    forward[row, block] = 0.0
  return forward


def random_deletions(eligible: Sequence[int], max_k: int, samples: int,
                     rng: np.random.Generator) -> tuple[list[int], list[list[int]]]:
  """Draw sets of ``k`` deleted blocks for ``k = 1..max_k``.

  For each k, ``samples`` distinct sets are drawn, or every set when there are at most
  ``samples`` of them.

  Returns:
    ``(ks, deleted)``: per setting, its k and the sorted deleted blocks.
  """
  eligible = sorted(eligible)
  max_k = min(max_k, len(eligible))
  ks, deleted = [], []
  for k in range(1, max_k + 1):
    for blocks in _distinct_subsets(eligible, k, samples, rng):
      ks.append(k)
      deleted.append(blocks)
  return ks, deleted


def deletions_to_forward(model: GatedResNet, deleted: Sequence[Sequence[int]]) -> np.ndarray:
  forward = np.ones((len(deleted), model.num_blocks), np.float32)
  for row, blocks in enumerate(deleted):
    forward[row, list(blocks)] = 0.0
  return forward


def _distinct_subsets(items: list[int], k: int, samples: int,
                      rng: np.random.Generator) -> list[list[int]]:
  total = math.comb(len(items), k)
  if total <= samples:
    return [list(subset) for subset in itertools.combinations(items, k)]
  seen: set[tuple[int, ...]] = set()
  subsets = []
  while len(subsets) < samples:
    subset = tuple(sorted(rng.choice(items, size=k, replace=False).tolist()))
    if subset not in seen:
      seen.add(subset)
      subsets.append(list(subset))
  return subsets


def original_orders(model: GatedResNet) -> list[np.ndarray]:
  return [np.asarray(stack, np.int32) for stack in model.interchangeable_blocks]


def random_swaps(model: GatedResNet, max_swaps: int, samples: int,
                 rng: np.random.Generator) -> tuple[list[int], list[list[np.ndarray]]]:
  """Draw orders made by ``k`` random swaps, ``k = 1..max_swaps``, ``samples`` per k.

  Each swap exchanges the positions of two blocks of the same stage's interchangeable
  set, the pair drawn uniformly from all such pairs of the network, so a stage with
  more blocks is swapped in more often. Swaps apply one after another, so a later
  swap may undo an earlier one.

  Returns:
    ``(swaps, orders)``: per setting, its number of swaps and one order per stage.
  """
  pairs = [(stage, a, b) for stage, stack in enumerate(model.interchangeable_blocks)
           for a in range(len(stack)) for b in range(a + 1, len(stack))]
  if not pairs:
    raise ValueError('this model has no stage with two interchangeable blocks, so no '
                     f'order can be changed. {model.describe_blocks()}')
  swaps, orders = [], []
  for k in range(1, max_swaps + 1):
    for _ in range(samples):
      order = original_orders(model)
      for pick in rng.integers(len(pairs), size=k):
        stage, a, b = pairs[pick]
        order[stage][[a, b]] = order[stage][[b, a]]
      swaps.append(k)
      orders.append(order)
  return swaps, orders


def full_order(model: GatedResNet, orders: Sequence[np.ndarray]) -> np.ndarray:
  """List the global block indices in the order they run: each stage's head, then its stack."""
  sequence = []
  for layout, order in zip(model.layouts, orders):
    if layout.head is not None:
      sequence.append(layout.head)
    sequence.extend(np.asarray(order).tolist())
  return np.asarray(sequence, np.int64)


def kendall_tau(first: np.ndarray, second: np.ndarray) -> float:
  """Compute Kendall's tau-a between two orderings of the same distinct items.

  ``first`` and ``second`` list the same items, each once. Tau is (concordant pairs -
  discordant pairs) / all pairs, so 1 for the same order and -1 for the reversed one.
  """
  first = np.asarray(first)
  second = np.asarray(second)
  if first.shape != second.shape or first.ndim != 1:
    raise ValueError(f'orders have shapes {first.shape} and {second.shape}, expected two '
                     '1-D arrays of the same length.')
  if len(set(first.tolist())) != len(first) or set(first.tolist()) != set(second.tolist()):
    raise ValueError('kendall_tau needs two orderings of the same distinct items.')
  count = len(first)
  if count < 2:
    return 1.0
  position = {item: i for i, item in enumerate(second.tolist())}
  ranks = np.asarray([position[item] for item in first.tolist()])
  # A pair is discordant when the later item of ``first`` comes earlier in ``second``.
  later_earlier = ranks[None, :] < ranks[:, None]
  discordant = int(np.sum(np.triu(later_earlier, k=1)))
  pairs = count * (count - 1) // 2
  return 1.0 - 2.0 * discordant / pairs


def random_duplications(model: GatedResNet, max_blocks: int, samples: int,
                        rng: np.random.Generator
                        ) -> tuple[list[int], list[list[int]], list[list[np.ndarray]]]:
  """Draw sets of interchangeable blocks that run twice in a row, 1..max_blocks of them.

  Returns:
    ``(counts, repeated, orders)``: per setting, the number of repeated blocks, the
    sorted repeated blocks, and one order per stage where each repeated block
    appears twice in a row in place.
  """
  eligible = [block for stack in model.interchangeable_blocks for block in stack]
  if not eligible:
    raise ValueError(f'this model has no interchangeable block to repeat. '
                     f'{model.describe_blocks()}')
  max_blocks = min(max_blocks, len(eligible))
  counts, repeated, orders = [], [], []
  for count in range(1, max_blocks + 1):
    for blocks in _distinct_subsets(eligible, count, samples, rng):
      order = [_repeat_in_place(stack, blocks) for stack in model.interchangeable_blocks]
      counts.append(count)
      repeated.append(blocks)
      orders.append(order)
  return counts, repeated, orders


def _repeat_in_place(stack: Sequence[int], repeated: Sequence[int]) -> np.ndarray:
  order = []
  for block in stack:
    order.append(block)
    if block in repeated:
      order.append(block)
  return np.asarray(order, np.int32)
