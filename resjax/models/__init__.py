"""Model builders: CIFAR ResNets of depth 6n+2 and ImageNet ResNets, with plain twins."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from resjax.errors import ConfigError
from resjax.models.resnet import GatedResNet, StageLayout

# ImageNet depths of He et al. (2015, 2016): unit kind and blocks per stage.
IMAGENET_STAGES = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
    200: ('bottleneck', (3, 24, 36, 3)),
}

UNROLL_CHOICES = ('auto', 'always', 'never')

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def cifar_resnet(depth: int, *, num_classes: int = 10, widths=(16, 32, 64),
                 **options) -> GatedResNet:
  """A CIFAR ResNet of depth 6n+2: three stages of n basic units, option-A shortcuts.

  Pre-activation and residual by default, as in the base config. Keyword ``options`` override
  any field of ``GatedResNet``.
  """
  if depth < 8 or (depth - 2) % 6:
    raise ConfigError(f'CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, '
                     f'56, 110, 1202, ...), got {depth}.')
  n = (depth - 2) // 6
  options.setdefault('shortcut', 'option_a')
  options.setdefault('preactivation', True)
  options.setdefault('residual', True)
  return GatedResNet(unit_kind='basic', stage_sizes=(n, n, n), widths=tuple(widths),
                     stem_width=widths[0], imagenet=False, num_classes=num_classes,
                     **options)


def imagenet_resnet(depth: int, *, num_classes: int = 1000, widths=(64, 128, 256, 512),
                    **options) -> GatedResNet:
  """An ImageNet ResNet (18, 34, 50, 101, 152, 200) with projection shortcuts.

  Pre-activation and residual by default, as in the base config. Keyword ``options`` override
  any field of ``GatedResNet``.
  """
  if depth not in IMAGENET_STAGES:
    raise ConfigError(f'ImageNet ResNet depth must be one of {sorted(IMAGENET_STAGES)}, '
                     f'got {depth}.')
  kind, sizes = IMAGENET_STAGES[depth]
  options.setdefault('shortcut', 'projection')
  options.setdefault('preactivation', True)
  options.setdefault('residual', True)
  return GatedResNet(unit_kind=kind, stage_sizes=sizes, widths=tuple(widths),
                     stem_width=widths[0], imagenet=True, num_classes=num_classes,
                     **options)


FAMILIES = {'cifar_resnet': cifar_resnet, 'imagenet_resnet': imagenet_resnet}


def build_model(model_config: Any, num_classes: int) -> GatedResNet:
  """Build the model that a config's ``model`` section names.

  Args:
    model_config: ``config.model`` with ``family``, ``depth``, ``preactivation``,
      ``residual``, ``dtype`` and the BatchNorm settings.
    num_classes: classifier outputs, from the dataset.
  """
  if model_config.family not in FAMILIES:
    raise ConfigError(f'unknown model.family {model_config.family!r}; choose one of '
                     f'{sorted(FAMILIES)}.')
  if model_config.dtype not in DTYPES:
    raise ConfigError(f'unknown model.dtype {model_config.dtype!r}; choose one of '
                     f'{sorted(DTYPES)}.')
  unroll = model_config.get('unroll_stacks', 'auto')
  if unroll not in UNROLL_CHOICES:
    raise ConfigError(f'unknown model.unroll_stacks {unroll!r}; choose one of '
                     f'{list(UNROLL_CHOICES)}.')
  if unroll == 'auto':
    # Rolled scans make convolution gradients slow on XLA's CPU backend only.
    unroll = 'always' if jax.default_backend() == 'cpu' else 'never'
  options = dict(preactivation=model_config.preactivation, residual=model_config.residual,
                 unroll_stacks=unroll == 'always',
                 dtype=DTYPES[model_config.dtype], bn_momentum=model_config.bn_momentum,
                 bn_epsilon=model_config.bn_epsilon,
                 zero_init_last_bn=model_config.zero_init_last_bn)
  if model_config.get('widths'):
    options['widths'] = tuple(model_config.widths)
  return FAMILIES[model_config.family](model_config.depth, num_classes=num_classes,
                                       **options)


__all__ = ['GatedResNet', 'StageLayout', 'build_model', 'cifar_resnet', 'imagenet_resnet']
