"""Training variants that change the gates per step: stochastic depth and short paths.

``config.train.variant`` selects one:

- 'standard': the ordinary network, no gates.
- 'stochastic_depth' (Huang et al., 2016, "Deep Networks with Stochastic Depth"): each
  step keeps block ``l`` (1-based) with survival probability
  ``p_l = 1 - l / L * (1 - p_L)``, one Bernoulli draw per block shared by the whole
  batch. At test time every branch is scaled by its survival probability.
- 'short_paths' (Veit et al., 2016, "Residual Networks Behave Like Ensembles of
  Relatively Shallow Networks"): each step lets the gradient flow back through the
  branches of ``k`` blocks chosen at random and through no other branch. Every
  shortcut passes it. The forward pass is unchanged, so the test-time network is the
  ordinary one.

The samplers are pure functions of ``(rng, model, config)`` that run inside the
jitted train step; the caller folds the step number into ``rng``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resjax.errors import ConfigError
from resjax.gates import Gates
from resjax.models.resnet import GatedResNet

VARIANTS = ('standard', 'stochastic_depth', 'short_paths')


def check_variant(model: GatedResNet, config: Any) -> None:
  """Raise ConfigError when ``config.train.variant`` or its settings do not fit ``model``."""
  train = config.train
  if train.variant not in VARIANTS:
    raise ConfigError(f'unknown train.variant {train.variant!r}; choose one of {VARIANTS}.')
  if train.variant != 'standard' and not model.residual:
    raise ConfigError(f'train.variant={train.variant!r} gates residual branches, but '
                      'model.residual=False builds a plain network; use variant '
                      "'standard' or set model.residual=True.")
  if train.variant == 'stochastic_depth' and not 0 < train.survival_prob_last <= 1:
    raise ConfigError(f'train.survival_prob_last must be in (0, 1], got '
                      f'{train.survival_prob_last}.')
  if train.variant == 'short_paths' and not 1 <= train.short_path_blocks <= model.num_blocks:
    raise ConfigError(f'train.short_path_blocks must be between 1 and the model\'s '
                      f'{model.num_blocks} blocks, got {train.short_path_blocks}.')


def survival_probabilities(model: GatedResNet, survival_prob_last: float) -> np.ndarray:
  """Return ``p_l = 1 - l / L * (1 - p_L)`` for blocks ``l = 1..L``, float32 ``[L]``.

  The input has probability 1 and the last block ``survival_prob_last``.
  """
  depth = model.num_blocks
  position = np.arange(1, depth + 1, dtype=np.float64) / depth
  return (1.0 - position * (1.0 - survival_prob_last)).astype(np.float32)


def sample_stochastic_depth(rng: jax.Array, model: GatedResNet, config: Any) -> Gates:
  """Draw forward gates: block ``l`` is kept (gate 1) with probability ``p_l``, else 0.

  NOTE: a dropped block still runs its branch, in training mode, so its BatchNorm
  running statistics follow the step's batch; Huang et al. skip the block entirely.
  """
  probabilities = jnp.asarray(survival_probabilities(model, config.train.survival_prob_last))
  keep = jax.random.bernoulli(rng, probabilities)
  return model.default_gates().replace(forward=keep.astype(jnp.float32))


def sample_short_paths(rng: jax.Array, model: GatedResNet, config: Any) -> Gates:
  """Open the branch gradient of exactly ``short_path_blocks`` blocks chosen at random."""
  # A random permutation's first k ranks pick k distinct blocks, all equally likely.
  ranks = jax.random.permutation(rng, model.num_blocks)
  open_branches = (ranks < config.train.short_path_blocks).astype(jnp.float32)
  return model.default_gates().replace(backward_branch=open_branches)


def train_gates(rng: jax.Array, model: GatedResNet, config: Any) -> Gates | None:
  """Return the gates of one training step; None for the ordinary network."""
  variant = config.train.variant
  if variant == 'standard':
    return None
  if variant == 'stochastic_depth':
    return sample_stochastic_depth(rng, model, config)
  if variant == 'short_paths':
    return sample_short_paths(rng, model, config)
  raise ConfigError(f'unknown train.variant {variant!r}; choose one of {VARIANTS}.')


def eval_gates(model: GatedResNet, config: Any) -> Gates:
  """Return the test-time gates of the variant that ``config.train.variant`` names.

  Stochastic depth scales each branch by its survival probability; the other
  variants use the default gates, which compute the ordinary network.
  """
  check_variant(model, config)
  gates = model.default_gates()
  if config.train.variant == 'stochastic_depth':
    return gates.replace(forward=survival_probabilities(model, config.train.survival_prob_last))
  return gates
