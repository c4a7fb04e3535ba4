"""The quantity both path analyses measure: the loss gradient at the input of block 0.

The loss is the softmax cross-entropy summed (not averaged) over the image batch, so
with running-average BatchNorm the gradient of each image is the gradient of its own
loss. The gradient is taken with respect to the stem output, the input of block 0,
because every path starts there. Its size is the Frobenius norm of each image's slice
``[height, width, channels]``, averaged over the images of the batch.

BatchNorm runs in one of two modes, ``config.analysis.path_batchnorm``:

- 'train': batch statistics of the path batch, as in a training step. The gradient then
  also flows through the batch mean and variance, which couples the images. The
  running averages are read by nothing and left unchanged.
- 'eval': the running averages, so the network is a fixed function of each image.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from resjax.errors import ConfigError
from resjax.gates import Gates
from resjax.models import GatedResNet

BATCHNORM_MODES = ('train', 'eval')


def check_batchnorm_mode(batchnorm: str) -> bool:
  """Return whether ``batchnorm`` selects batch statistics; raise ConfigError if unknown."""
  if batchnorm not in BATCHNORM_MODES:
    raise ConfigError(f'analysis.path_batchnorm is {batchnorm!r}; use "train" (batch '
                      'statistics, as in a training step) or "eval" (running averages).')
  return batchnorm == 'train'


def describe_gradient(batchnorm: str) -> str:
  """Describe the measured gradient in words, for the ``gradient_of`` field of results."""
  statistics = ('batch statistics of the path batch (training mode)' if batchnorm == 'train'
                else 'running averages (evaluation mode)')
  return ('softmax cross-entropy summed over the path batch; gradient with respect to the '
          'stem output (the input of block 0); Frobenius norm per image, then the mean '
          f'over the images; BatchNorm uses {statistics}')


def stem_output(model: GatedResNet, variables: dict[str, Any], images: jax.Array, *,
                batchnorm: str) -> jax.Array:
  """Run the stem: the point where every path starts and the gradient is measured."""
  x, _ = model.embed(variables, images, train=check_batchnorm_mode(batchnorm))
  return x


def loss_from_stem(model: GatedResNet, variables: dict[str, Any], stem: jax.Array,
                   labels: jax.Array, gates: Gates | None, *, batchnorm: str) -> jax.Array:
  """Run the trunk and the classifier from the stem output; return the summed loss.

  ``gates=None`` is the ordinary network. With gates, the backward gates select which
  branches and shortcuts the gradient may pass, as ``GatedResNet.combine`` describes.
  """
  train = check_batchnorm_mode(batchnorm)
  params, stats = variables['params'], variables['batch_stats']
  x = stem
  for layout in model.layouts:
    name = f'stage{layout.index}'
    x, _ = model.run_stage(params[name], stats[name], layout, x, gates, train=train)
  return loss_from_features(model, variables, x, labels, batchnorm=batchnorm)


def loss_from_features(model: GatedResNet, variables: dict[str, Any], features: jax.Array,
                       labels: jax.Array, *, batchnorm: str) -> jax.Array:
  """Apply the classifier to the last feature map; return the summed cross-entropy."""
  classifier_vars = {'params': variables['params']['classifier'],
                     'batch_stats': variables['batch_stats'].get('classifier', {})}
  classifier = model._classifier()  # pylint: disable=protected-access
  if check_batchnorm_mode(batchnorm):
    logits, _ = classifier.apply(classifier_vars, features, train=True,
                                 mutable=['batch_stats'])
  else:
    logits = classifier.apply(classifier_vars, features, train=False)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()


def per_image_norms(gradient: jax.Array) -> jax.Array:
  """Return the Frobenius norm of each image's gradient: ``[..., batch]`` in float32."""
  squares = jnp.square(gradient.astype(jnp.float32))
  return jnp.sqrt(jnp.sum(squares, axis=(-3, -2, -1)))
