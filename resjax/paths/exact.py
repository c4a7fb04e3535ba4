"""The exact gradient of every path length, summed over all paths of that length.

The gradient at the input of block 0 is the sum of the contributions of all ``2**n``
paths, and the backward pass is linear in the cotangent, so the paths can be grouped
by length without enumerating them. One cotangent per path length is carried back
through the blocks. At each block a length-``k`` cotangent either passes the shortcut
and stays at length ``k`` or passes the branch and moves to ``k + 1``:

    new[k] = J_shortcut^T c_s[k] + J_branch^T c_b[k - 1]

where ``(c_s[k], c_b[k])`` is the vector-Jacobian product of the block's join (the
ReLU after the sum for post-activation units, the identity for pre-activation units)
applied to ``c[k]``. The forward pass, and with it every ReLU mask and every BatchNorm
statistic, is that of the ordinary network.

Cost: the forward pass is run once while each block's input is kept, then each block
is run forward again inside the backward sweep to get its vector-Jacobian products.
After ``j`` blocks only lengths ``0..j`` can hold gradient, so only those are carried:
about ``n**2 / 2`` branch products in all, each costing about one forward pass of its
block. That estimate is ``1 + n / 4`` ordinary forward-and-backward passes. On 2 CPU
cores (batch 32, random weights, BatchNorm in training mode, stacks unrolled as
``model.unroll_stacks`` asks) CIFAR ResNet-20 (n = 9) took 5.2 ordinary backward passes,
below ``n + 2``; ``scripts/benchmark.py`` measures it again.

Inside a stage's stack the count of carried lengths must be static for ``lax.scan``.
The stack is therefore cut into ``segments_per_stage`` scans, and each scan carries the
count reached at its end. More segments waste less work but compile more code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resjax.errors import ConfigError
from resjax.models import GatedResNet
from resjax.paths import objective


@dataclasses.dataclass(frozen=True)
class ExactNorms:
  """Summary of the exact decomposition of one gradient.

  Attributes:
    norms: ``[n + 1]``, for each length ``k`` the norm of the summed gradient of all
      length-``k`` paths (per-image Frobenius norm, mean over images).
    full_norm: the same norm of the ordinary gradient.
    relative_error: ``|sum_k G_k - G| / |G|`` over the whole batch, where ``G_k`` are
      the per-length sums and ``G`` the ordinary gradient from ``jax.grad``.
  """

  norms: np.ndarray
  full_norm: float
  relative_error: float


def exact_path_gradients(model: GatedResNet, variables: dict[str, Any], stem: jax.Array,
                         labels: jax.Array, *, batchnorm: str, segments_per_stage: int,
                         lengths_per_call: int) -> jax.Array:
  """Return the per-length gradient sums, ``[n + 1, *stem.shape]``.

  Entry ``k`` is the sum over all paths of length ``k`` of their gradient with respect
  to ``stem``, the stem output (see ``resjax.paths.objective`` for the loss).

  Args:
    model: a residual network.
    variables: its ``{'params', 'batch_stats'}``.
    stem: the stem output of the image batch, ``model.embed`` under ``batchnorm``.
    labels: int labels of the batch.
    batchnorm: 'train' (batch statistics) or 'eval' (running averages).
    segments_per_stage: scans each stage's stack is cut into; see the module docstring.
    lengths_per_call: cotangents whose vector-Jacobian products run in one vmapped call,
      which bounds the memory of the products.
  """
  _check_arguments(model, segments_per_stage, lengths_per_call)
  objective.check_batchnorm_mode(batchnorm)
  return _exact_path_gradients(model, variables, stem, labels, batchnorm,
                               segments_per_stage, lengths_per_call)


def exact_path_norms(model: GatedResNet, variables: dict[str, Any], stem: jax.Array,
                     labels: jax.Array, *, batchnorm: str, segments_per_stage: int,
                     lengths_per_call: int) -> ExactNorms:
  """Decompose the gradient exactly by path length and check it against ``jax.grad``.

  Same arguments as ``exact_path_gradients``; only the norms leave the device.
  """
  _check_arguments(model, segments_per_stage, lengths_per_call)
  objective.check_batchnorm_mode(batchnorm)
  norms, full_norm, relative_error = _exact_norms(model, variables, stem, labels, batchnorm,
                                                  segments_per_stage, lengths_per_call)
  return ExactNorms(norms=np.asarray(norms, np.float64), full_norm=float(full_norm),
                    relative_error=float(relative_error))


def ordinary_gradient(model: GatedResNet, variables: dict[str, Any], stem: jax.Array,
                      labels: jax.Array, batchnorm: str) -> jax.Array:
  """Return the gradient of the loss with respect to ``stem`` through the whole network."""
  return jax.grad(objective.loss_from_stem, argnums=2)(model, variables, stem, labels, None,
                                                       batchnorm=batchnorm)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _exact_norms(model, variables, stem, labels, batchnorm, segments_per_stage,
                 lengths_per_call):
  per_length = _exact_path_gradients(model, variables, stem, labels, batchnorm,
                                     segments_per_stage, lengths_per_call)
  full = ordinary_gradient(model, variables, stem, labels, batchnorm)
  norms = jnp.mean(objective.per_image_norms(per_length), axis=-1)
  full_norm = jnp.mean(objective.per_image_norms(full))
  full = full.astype(jnp.float32)
  difference = jnp.sum(per_length.astype(jnp.float32), axis=0) - full
  relative_error = jnp.linalg.norm(difference.ravel()) / jnp.linalg.norm(full.ravel())
  return norms, full_norm, relative_error


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _exact_path_gradients(model, variables, stem, labels, batchnorm, segments_per_stage,
                          lengths_per_call):
  train = objective.check_batchnorm_mode(batchnorm)
  features, block_inputs = _record_block_inputs(model, variables, stem, train)
  top = jax.grad(objective.loss_from_features, argnums=2)(model, variables, features, labels,
                                                          batchnorm=batchnorm)
  # Above the last block only the empty path (length 0) exists.
  cotangents = top[None]
  for layout in reversed(model.layouts):
    stage_vars = _stage_variables(variables, layout.index)
    head_input, stack_inputs = block_inputs[layout.index]
    if layout.stack:
      cotangents = _sweep_stack(model, layout.index, stage_vars['stack'], stack_inputs,
                                cotangents, train, segments_per_stage, lengths_per_call)
    if layout.head is not None:
      cotangents = _block_backward(model, layout.index, True, stage_vars['head'], head_input,
                                   cotangents, train, lengths_per_call, grow=True)
  return cotangents


def _record_block_inputs(model, variables, stem, train):
  """Run the ordinary network from ``stem``; keep the input of every block.

  Returns:
    The last feature map and, per stage, ``(head input or None, stacked inputs of the
    interchangeable blocks [positions, ...] or None)``.
  """
  x = stem
  inputs = []
  for layout in model.layouts:
    stage_vars = _stage_variables(variables, layout.index)
    head_input = stack_inputs = None
    if layout.head is not None:
      head_input = x
      shortcut, branch = _unit_outputs(model, layout.index, True, stage_vars['head'], x, train)
      x = model.combine(x, shortcut, branch, None)
    if layout.stack:
      def step(y, block_vars, stage=layout.index):
        shortcut, branch = _unit_outputs(model, stage, False, block_vars, y, train)
        return model.combine(y, shortcut, branch, None), y

      x, stack_inputs = jax.lax.scan(step, x, stage_vars['stack'],
                                     unroll=_unroll(model, len(layout.stack)))
    inputs.append((head_input, stack_inputs))
  return x, inputs


def _sweep_stack(model, stage, stack_vars, stack_inputs, cotangents, train,
                 segments_per_stage, lengths_per_call):
  """Carry the cotangents back through a stage's stack, last block first."""
  positions = stack_inputs.shape[0]
  segments = np.array_split(np.arange(positions), min(segments_per_stage, positions))
  for segment in reversed(segments):
    first, stop = int(segment[0]), int(segment[-1]) + 1
    # By the end of this segment ``stop - first`` more lengths can hold gradient.
    carried = cotangents.shape[0] + stop - first
    padding = jnp.zeros((carried - cotangents.shape[0],) + cotangents.shape[1:],
                        cotangents.dtype)
    cotangents = jnp.concatenate([cotangents, padding])

    def step(carry, block, stage=stage):
      block_input, block_vars = block
      return _block_backward(model, stage, False, block_vars, block_input, carry, train,
                             lengths_per_call, grow=False), None

    segment_vars = jax.tree_util.tree_map(lambda leaf, a=first, b=stop: leaf[a:b],
                                          stack_vars)
    cotangents, _ = jax.lax.scan(step, cotangents, (stack_inputs[first:stop], segment_vars),
                                 reverse=True, unroll=_unroll(model, stop - first))
  return cotangents


def _block_backward(model, stage, head, block_vars, block_input, cotangents, train,
                    lengths_per_call, *, grow):
  """Move each length's cotangent back through one block.

  Args:
    cotangents: ``[count, *output shape]``, indexed by path length.
    grow: True returns ``count + 1`` lengths. False returns ``count``, which is exact
      only when the top entry is zero, as it is in a segment that is not yet finished.
  """
  def outputs(x):
    return _unit_outputs(model, stage, head, block_vars, x, train)

  shortcut, shortcut_vjp = jax.vjp(lambda x: outputs(x)[0], block_input)
  branch, branch_vjp = jax.vjp(lambda x: outputs(x)[1], block_input)
  _, join_vjp = jax.vjp(lambda s, b: model.combine(block_input, s, b, None), shortcut, branch)

  def through_shortcut(cotangent):
    return shortcut_vjp(join_vjp(cotangent)[0])[0]

  def through_branch(cotangent):
    return branch_vjp(join_vjp(cotangent)[1])[0]

  count = cotangents.shape[0]
  stayed = _map_in_chunks(through_shortcut, cotangents, lengths_per_call)
  if grow:
    moved = _map_in_chunks(through_branch, cotangents, lengths_per_call)
    zero = jnp.zeros_like(stayed[:1])
    return jnp.concatenate([stayed, zero]) + jnp.concatenate([zero, moved])
  moved = _map_in_chunks(through_branch, cotangents[:count - 1], lengths_per_call)
  return stayed.at[1:].add(moved)


def _unroll(model, length):
  # The model's choice (model.unroll_stacks): unrolled, XLA:CPU runs these backward
  # convolutions several times faster; rolled, compile time stays flat in depth.
  return length + 1 if model.unroll_stacks else 1


def _map_in_chunks(function, values, chunk):
  # lax.map with a batch_size larger than the input still compiles an empty scan beside
  # the vmap of the remainder, so a single chunk is vmapped directly.
  if values.shape[0] <= chunk:
    return jax.vmap(function)(values)
  return jax.lax.map(function, values, batch_size=chunk)


def _unit_outputs(model, stage, head, block_vars, x, train):
  unit = model._unit(stage, head=head)  # pylint: disable=protected-access
  if train:
    outputs, _ = unit.apply(block_vars, x, train=True, mutable=['batch_stats'])
    return outputs
  return unit.apply(block_vars, x, train=False)


def _stage_variables(variables, stage):
  name = f'stage{stage}'
  params, stats = variables['params'][name], variables['batch_stats'][name]
  return {part: {'params': params[part], 'batch_stats': stats.get(part, {})}
          for part in params}


def _check_arguments(model, segments_per_stage, lengths_per_call):
  if not model.residual:
    raise ValueError('the path decomposition needs a residual network, but this model has '
                     'residual=False: a plain network has a single path. Use a config with '
                     'model.residual=True.')
  if not isinstance(segments_per_stage, int) or segments_per_stage < 1:
    raise ConfigError(f'analysis.path_exact_segments must be a positive integer, got '
                      f'{segments_per_stage!r}.')
  if not isinstance(lengths_per_call, int) or lengths_per_call < 1:
    raise ValueError(f'lengths_per_call must be a positive integer, got '
                     f'{lengths_per_call!r}.')
