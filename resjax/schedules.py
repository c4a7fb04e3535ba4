"""Learning-rate schedules and the optimizer, built from ``config.train``.

``steps_for_epochs`` is the one place that turns epochs into optimizer steps; the
schedule, the training loop and the evaluation intervals all go through it.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from resjax.errors import ConfigError

SCHEDULES = ('piecewise', 'cosine')
WEIGHT_DECAY_SCOPES = ('kernels', 'all')


def steps_per_epoch(num_train_examples: int, batch_size: int) -> int:
  """Return the optimizer steps in one epoch.

  Each epoch draws a fresh permutation of the training set and drops its last
  ``num_train_examples % batch_size`` images, so every step gets a full batch.
  """
  if batch_size <= 0:
    raise ConfigError(f'train.batch_size must be positive, got {batch_size}.')
  if num_train_examples < batch_size:
    raise ConfigError(f'train.batch_size={batch_size} is larger than the training split '
                      f'({num_train_examples} images); set --config.train.batch_size to at '
                      f'most {num_train_examples}.')
  return num_train_examples // batch_size


def steps_for_epochs(epochs: float, steps_in_epoch: int) -> int:
  """Convert a (possibly fractional) number of epochs to whole optimizer steps."""
  return int(round(epochs * steps_in_epoch))


def peak_learning_rate(train_config: Any) -> float:
  """Return ``learning_rate``, scaled by ``batch_size / lr_reference_batch_size`` when set.

  The linear scaling rule of Goyal et al. (2017): ImageNet configs give the rate for a
  batch of 256 and keep it right for other batch sizes.
  """
  if train_config.lr_reference_batch_size > 0:
    return (train_config.learning_rate * train_config.batch_size
            / train_config.lr_reference_batch_size)
  return train_config.learning_rate


def learning_rate_schedule(train_config: Any, steps_in_epoch: int) -> optax.Schedule:
  """Build the schedule that ``train_config.schedule`` names, with optional linear warmup.

  'piecewise' multiplies the rate by ``decay_factor`` at each of ``boundaries_epochs``;
  'cosine' decays it to 0 over the epochs after the warmup.
  """
  peak = peak_learning_rate(train_config)
  total_steps = steps_for_epochs(train_config.num_epochs, steps_in_epoch)
  warmup_steps = steps_for_epochs(train_config.warmup_epochs, steps_in_epoch)
  if total_steps <= 0:
    raise ConfigError(f'train.num_epochs={train_config.num_epochs} gives no training '
                      'steps; set a positive number of epochs.')
  if not 0 <= warmup_steps < total_steps:
    raise ConfigError(f'train.warmup_epochs={train_config.warmup_epochs} must be at least 0 '
                      f'and shorter than train.num_epochs={train_config.num_epochs}.')

  if train_config.schedule == 'piecewise':
    boundaries = [steps_for_epochs(e, steps_in_epoch) for e in train_config.boundaries_epochs]
    if sorted(boundaries) != boundaries or any(b <= 0 for b in boundaries):
      raise ConfigError(f'train.boundaries_epochs={tuple(train_config.boundaries_epochs)} '
                        'must be positive and increasing.')
    # optax counts the boundaries from the start of the schedule, so shift them past the
    # warmup: a boundary at epoch 81 stays at epoch 81 whatever the warmup.
    main = optax.piecewise_constant_schedule(
        peak, {b - warmup_steps: train_config.decay_factor for b in boundaries})
  elif train_config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, decay_steps=total_steps - warmup_steps)
  else:
    raise ConfigError(f'unknown train.schedule {train_config.schedule!r}; choose one of '
                      f'{SCHEDULES}.')

  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def weight_decay_mask(params: Any, scope: str) -> Any:
  """Return a tree of bools: True where weight decay applies.

  'kernels' decays the convolution and dense kernels only, and leaves BatchNorm scales
  and offsets and the dense bias alone, the common practice for BatchNorm networks.
  'all' decays every parameter, as ``optim.sgd`` of Torch7 does with its whole
  parameter vector.
  """
  if scope == 'all':
    return jax.tree_util.tree_map(lambda _: True, params)
  if scope == 'kernels':
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)
  raise ConfigError(f'unknown train.weight_decay_scope {scope!r}; choose one of '
                    f'{WEIGHT_DECAY_SCOPES}.')


def build_optimizer(train_config: Any, steps_in_epoch: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Build SGD with momentum and L2 weight decay, and its learning-rate schedule.

  Weight decay is added to the gradients (``weight_decay * param``) before momentum,
  which is the L2 penalty of the classic ResNet recipe written as a gradient term
  rather than as a loss term. It does not enter the reported loss.

  Returns:
    ``(optimizer, schedule)``; the schedule maps a step to its learning rate.
  """
  if train_config.weight_decay < 0:
    raise ConfigError(f'train.weight_decay must be at least 0, got '
                      f'{train_config.weight_decay}.')
  if not 0 <= train_config.momentum < 1:
    raise ConfigError(f'train.momentum must be in [0, 1), got {train_config.momentum}.')
  schedule = learning_rate_schedule(train_config, steps_in_epoch)
  scope = train_config.weight_decay_scope
  if scope not in WEIGHT_DECAY_SCOPES:
    raise ConfigError(f'unknown train.weight_decay_scope {scope!r}; choose one of '
                      f'{WEIGHT_DECAY_SCOPES}.')
  optimizer = optax.chain(
      optax.add_decayed_weights(train_config.weight_decay,
                                mask=lambda params: weight_decay_mask(params, scope)),
      optax.sgd(schedule, momentum=train_config.momentum or None,
                nesterov=train_config.nesterov),
  )
  return optimizer, schedule


def total_steps(train_config: Any, steps_in_epoch: int) -> int:
  return steps_for_epochs(train_config.num_epochs, steps_in_epoch)


def eval_interval_steps(train_config: Any, steps_in_epoch: int) -> int:
  """Return the steps between two evaluations of the test split (at least 1)."""
  if train_config.eval_every_epochs <= 0:
    raise ConfigError(f'train.eval_every_epochs must be positive, got '
                      f'{train_config.eval_every_epochs}; the run is always evaluated at its '
                      'end, so a value above train.num_epochs evaluates only then.')
  return max(1, steps_for_epochs(train_config.eval_every_epochs, steps_in_epoch))
