"""Re-estimating the BatchNorm statistics of each gate setting on training images.

A deleted, reordered or repeated block changes the distribution of every later
block's input, so the running statistics from training no longer match it. Here
each setting runs in training mode on full batches of calibration images. With
``bn_momentum=0`` the statistics that BatchNorm returns are the batch's own.

The estimator, per BatchNorm layer: the mean is the mean of the batch means, and the
variance is the mean of the batch second moments minus the squared mean. These are
the population statistics of the calibration images when each layer's input is
computed as in training, with earlier layers normalised by batch statistics. A
block repeated in one order keeps the statistics of its last run.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from resjax.gates import Gates, map_settings, share_leaves, varying_leaves
from resjax.models.resnet import GatedResNet


def calibration_batches(images: np.ndarray, batch_size: int) -> np.ndarray:
  """Cut ``images`` into full batches ``[batches, batch, H, W, C]``.

  The remainder that does not fill a batch is left out, because a training-mode
  forward pass depends on the batch size through the batch statistics.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or len(images) == 0:
    raise ValueError(f'calibration images have shape {images.shape}, expected a non-empty '
                     '[N, H, W, C] array of preprocessed training images.')
  if batch_size < 1:
    raise ValueError(f'the calibration batch size must be at least 1, got {batch_size}.')
  batch_size = min(batch_size, len(images))
  batches = len(images) // batch_size
  left_out = len(images) - batches * batch_size
  if left_out:
    logging.info('BatchNorm recalibration uses %d of %d images (%d full batches of %d).',
                 batches * batch_size, len(images), batches, batch_size)
  used = images[:batches * batch_size]
  return used.reshape((batches, batch_size) + images.shape[1:])


def recalibrated_statistics(model: GatedResNet, variables: dict[str, Any], gates: Gates,
                            batches: jax.Array) -> dict[str, Any]:
  """Estimate each setting's BatchNorm statistics on the calibration batches.

  Args:
    model: the evaluated network.
    variables: ``{'params', 'batch_stats'}`` of the trained network.
    gates: settings with a leading axis of settings.
    batches: ``[batches, batch, H, W, C]`` preprocessed training images.

  Returns:
    ``batch_stats`` with a leading axis of settings on every leaf.
  """
  gates = jax.tree_util.tree_map(np.asarray, gates)
  varying = varying_leaves(gates)
  return recalibrated_statistics_jit(dataclasses.replace(model, bn_momentum=0.0), varying,
                                     variables, share_leaves(gates, varying), batches)


@functools.partial(jax.jit, static_argnums=(0, 1))
def recalibrated_statistics_jit(calibration_model: GatedResNet, varying: tuple[bool, ...],
                                variables, gates: Gates, batches):
  """``recalibrated_statistics`` for a model whose ``bn_momentum`` is already 0.

  ``gates`` comes from ``resjax.gates.share_leaves(batch, varying)``.
  """
  num_batches = batches.shape[0]

  def one_setting(setting):
    def add_batch(sums, x):
      _, updates = calibration_model.apply(variables, x, setting, train=True)
      moments = _to_moments(updates['batch_stats'])
      return jax.tree_util.tree_map(jnp.add, sums, moments), None

    start = jax.tree_util.tree_map(jnp.zeros_like, _to_moments(variables['batch_stats']))
    sums, _ = jax.lax.scan(add_batch, start, batches)
    means = jax.tree_util.tree_map(lambda total: total / num_batches, sums)
    return _from_moments(means)

  return map_settings(one_setting, gates, varying)


def _to_moments(tree):
  """Replace each BatchNorm's ``var`` by the second moment ``var + mean**2``."""
  if isinstance(tree, dict):
    if set(tree) == {'mean', 'var'}:
      return {'mean': tree['mean'], 'var': tree['var'] + jnp.square(tree['mean'])}
    return {key: _to_moments(value) for key, value in tree.items()}
  return tree


def _from_moments(tree):
  if isinstance(tree, dict):
    if set(tree) == {'mean', 'var'}:
      # Rounding can leave a tiny negative difference where the variance is 0.
      variance = jnp.maximum(tree['var'] - jnp.square(tree['mean']), 0.0)
      return {'mean': tree['mean'], 'var': variance}
    return {key: _from_moments(value) for key, value in tree.items()}
  return tree
