"""Gate arrays: the data that turns one ResNet into lesions, reorderings and paths.

Every residual block computes ``y = post(shortcut(x) + g * branch(x))``. The gates
are the per-block values that the trunk reads:

- ``forward[i]``: the factor ``g`` on the branch of block ``i``. 1 is the ordinary
  network, 0 deletes the branch so the block keeps only its shortcut.
- ``backward_branch[i]`` and ``backward_shortcut[i]``: factors on the gradient that
  flows back through the branch and through the shortcut of block ``i``. They
  leave the forward value unchanged.
- ``order[s]``: the global indices of the blocks run, in turn, at the interchangeable
  positions of stage ``s``. It may permute the stage's interchangeable blocks and may
  repeat one; its length may differ from the number of those blocks.

``Gates`` is a pytree, so a batch of settings is a ``Gates`` whose arrays have one
leading axis more, and ``jax.vmap`` maps over it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gates:
  """Per-block gate arrays for one setting (or a batch of settings).

  Attributes:
    forward: float array ``[..., num_blocks]``, the factor on each residual branch.
    backward_branch: float array ``[..., num_blocks]``, the factor on the gradient
      that flows back through each branch.
    backward_shortcut: float array ``[..., num_blocks]``, the factor on the gradient
      that flows back through each shortcut.
    order: one int array ``[..., positions]`` per stage: the global indices of the
      blocks run at that stage's interchangeable positions.
  """

  forward: jax.Array
  backward_branch: jax.Array
  backward_shortcut: jax.Array
  order: tuple[jax.Array, ...]

  def replace(self, **changes) -> "Gates":
    return dataclasses.replace(self, **changes)


@jax.custom_vjp
def scale_gradient(value, factor):
  """Return ``value`` unchanged; its cotangent is multiplied by ``factor``."""
  del factor
  return value


def _scale_gradient_forward(value, factor):
  return value, factor


def _scale_gradient_backward(factor, cotangent):
  scaled = jax.tree_util.tree_map(
      lambda c: c * factor.astype(c.dtype), cotangent)
  # The factor is a selector, not a parameter: no gradient flows into it.
  return scaled, jnp.zeros_like(factor)


scale_gradient.defvjp(_scale_gradient_forward, _scale_gradient_backward)


def stack_gates(settings: Sequence[Gates]) -> Gates:
  """Stack single settings into one batch with a leading axis of settings."""
  if not settings:
    raise ValueError('stack_gates needs at least one setting, got none.')
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *settings)


def varying_leaves(batch: Gates) -> tuple[bool, ...]:
  """Return, per leaf of a host batch in ``tree_leaves`` order, whether its settings differ.

  The forward gates always count as varying, so a batch keeps its leading axis of
  settings. A deletion study, for example, varies the forward gates only, so every
  setting can share the block orders and with them each block's kernels.
  """
  leaves = jax.tree_util.tree_leaves(batch)
  forward = jax.tree_util.tree_leaves(batch.forward)[0]
  return tuple(leaf is forward or bool(np.any(np.asarray(leaf) != np.asarray(leaf)[:1]))
               for leaf in leaves)


def share_leaves(batch: Gates, varying: Sequence[bool]) -> Gates:
  """Keep the leading axis of the varying leaves; take setting 0 of the others."""
  leaves, structure = jax.tree_util.tree_flatten(batch)
  return jax.tree_util.tree_unflatten(
      structure, [leaf if keep else leaf[0] for leaf, keep in zip(leaves, varying)])


def settings_axes(batch: Gates, varying: Sequence[bool]) -> Gates:
  """Build the ``in_axes`` of ``jax.vmap`` for a batch made by ``share_leaves``."""
  structure = jax.tree_util.tree_structure(batch)
  return jax.tree_util.tree_unflatten(structure, [0 if keep else None for keep in varying])


def map_settings(fn: Callable[..., Any], batch: Gates, varying: Sequence[bool],
                 *per_setting: Any) -> Any:
  """Apply ``fn(setting, *args)`` to every setting of a ``share_leaves`` batch.

  ``per_setting`` contains pytrees with a leading axis of settings (or None). Settings
  that share their orders run as one ``jax.vmap``. Settings whose orders differ run
  one after another in a ``lax.map``: under a vmap, each would gather its own copy
  of every kernel, and XLA runs convolutions with a kernel per setting many times
  slower than one kernel shared by a batch (7x on XLA:CPU for ResNet-110).
  """
  order_leaves = len(jax.tree_util.tree_leaves(batch.order))
  if not any(varying[len(varying) - order_leaves:]):
    return jax.vmap(fn, in_axes=(settings_axes(batch, varying),) + (0,) * len(per_setting))(
        batch, *per_setting)
  leaves, structure = jax.tree_util.tree_flatten(batch)
  mapped = [leaf for leaf, keep in zip(leaves, varying) if keep]

  def one_setting(arguments):
    setting_leaves, setting_args = arguments
    rows = iter(setting_leaves)
    setting = jax.tree_util.tree_unflatten(
        structure, [next(rows) if keep else leaf for leaf, keep in zip(leaves, varying)])
    return fn(setting, *setting_args)

  return jax.lax.map(one_setting, (mapped, per_setting))


def unstack_gates(batch: Gates) -> list[Gates]:
  """Split a batch of settings along its leading axis."""
  count = np.shape(batch.forward)[0]
  return [jax.tree_util.tree_map(lambda x, i=i: x[i], batch) for i in range(count)]
