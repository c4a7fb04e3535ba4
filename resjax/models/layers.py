"""Linen modules for the stem, the residual units and the classifier.

A unit returns its shortcut and its branch separately, before they are added, so
that the trunk can put gates between them. The modules are used only through
``init`` and ``apply`` by ``resjax.models.resnet``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# He et al. (2015) initialise convolutions with variance 2 / fan_out.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _norm(train: bool, momentum: float, epsilon: float, dtype: Any, name: str,
          zero_scale: bool = False) -> nn.BatchNorm:
  # BatchNorm reads batch statistics in training and running statistics otherwise.
  return nn.BatchNorm(
      use_running_average=not train, momentum=momentum, epsilon=epsilon,
      dtype=dtype, param_dtype=jnp.float32, name=name,
      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)


def _conv(features: int, kernel: int, strides: int, dtype: Any, name: str) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=[(kernel // 2, kernel // 2)] * 2, use_bias=False,
                 kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32,
                 name=name)


def option_a_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """Subsample by ``strides`` and zero-pad the channels up to ``features``.

  This is the parameter-free shortcut ("option A") of the CIFAR ResNets of He et
  al. (2015), "Deep Residual Learning for Image Recognition".
  """
  x = x[:, ::strides, ::strides, :]
  missing = features - x.shape[-1]
  if missing < 0:
    raise ValueError(f'option A shortcut cannot shrink {x.shape[-1]} channels to '
                     f'{features}; use a projection shortcut.')
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2)))


class Unit(nn.Module):
  """One residual unit (or plain unit), returning ``(shortcut, branch)``.

  Attributes:
    kind: 'basic' (two 3x3 convolutions) or 'bottleneck' (1x1, 3x3, 1x1 with 4x
      expansion).
    features: width of the 3x3 convolutions; the output has ``features`` channels
      for 'basic' and ``4 * features`` for 'bottleneck'.
    strides: stride of the first 3x3 convolution and of the shortcut.
    shortcut: 'identity', 'option_a', 'projection' or 'none' (plain units).
    preactivation: BatchNorm and ReLU before each convolution (He et al., 2016,
      "Identity Mappings in Deep Residual Networks") instead of after it.
  """

  kind: str
  features: int
  strides: int
  shortcut: str
  preactivation: bool
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  zero_init_last_bn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array | None, jax.Array]:
    norm = functools.partial(_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
    conv = functools.partial(_conv, dtype=self.dtype)
    if self.kind == 'basic':
      layers = [(self.features, 3, self.strides), (self.features, 3, 1)]
    elif self.kind == 'bottleneck':
      layers = [(self.features, 1, 1), (self.features, 3, self.strides),
                (4 * self.features, 1, 1)]
    else:
      raise ValueError(f"unknown unit kind {self.kind!r}; use 'basic' or 'bottleneck'.")
    out_features = layers[-1][0]

    if self.preactivation:
      activated = nn.relu(norm(name='bn1')(x))
      branch = activated
      for i, (features, kernel, strides) in enumerate(layers, start=1):
        if i > 1:
          branch = nn.relu(norm(name=f'bn{i}')(branch))
        branch = conv(features, kernel, strides, name=f'conv{i}')(branch)
      # A pre-activation projection reads the normalised input, as the branch does.
      projection_input = activated
    else:
      branch = x
      for i, (features, kernel, strides) in enumerate(layers, start=1):
        branch = conv(features, kernel, strides, name=f'conv{i}')(branch)
        last = i == len(layers)
        branch = norm(name=f'bn{i}', zero_scale=last and self.zero_init_last_bn)(branch)
        if not last:
          branch = nn.relu(branch)
      projection_input = x

    if self.shortcut == 'identity':
      shortcut = x
    elif self.shortcut == 'option_a':
      shortcut = option_a_shortcut(x, out_features, self.strides)
    elif self.shortcut == 'projection':
      shortcut = conv(out_features, 1, self.strides, name='shortcut_conv')(projection_input)
      if not self.preactivation:
        shortcut = norm(name='shortcut_bn')(shortcut)
    elif self.shortcut == 'none':
      shortcut = None
    else:
      raise ValueError(f'unknown shortcut {self.shortcut!r}; use identity, option_a, '
                       'projection or none.')
    return shortcut, branch


class Stem(nn.Module):
  """The layers before the first unit: a 3x3 convolution (CIFAR) or a 7x7 one with
  max pooling (ImageNet)."""

  features: int
  imagenet: bool
  preactivation: bool
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    x = images.astype(self.dtype)
    if self.imagenet:
      x = _conv(self.features, 7, 2, self.dtype, 'conv')(x)
      x = nn.relu(_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, 'bn')(x))
      return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = _conv(self.features, 3, 1, self.dtype, 'conv')(x)
    if self.preactivation:
      # The first pre-activation unit normalises its own input.
      return x
    return nn.relu(_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, 'bn')(x))


class Classifier(nn.Module):
  """Global average pooling and a dense layer; the logits are float32."""

  num_classes: int
  preactivation: bool
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.preactivation:
      # Pre-activation units end on a convolution, so the trunk ends on BN-ReLU.
      x = nn.relu(_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, 'bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      name='dense')(x)
    return logits.astype(jnp.float32)
