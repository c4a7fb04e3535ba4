"""Pure train and eval steps, meant to be jitted with ``jax.sharding`` shardings.

The fixed arguments (model, optimizer, config, channel statistics) are keyword-only;
the training loop binds them with ``functools.partial`` before ``jax.jit``, so the
jitted function takes only arrays and compiles once.

Batches arrive as uint8 images. Augmentation and normalisation run inside the step,
so the host only sends indices (in-memory data) or raw batches (streamed data).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from resjax import data as data_lib
from resjax import train_variants
from resjax.gates import Gates
from resjax.models.resnet import GatedResNet


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint contains to continue training exactly.

  Attributes:
    step: int32 scalar, optimizer steps done so far.
    params: model parameters.
    batch_stats: BatchNorm running statistics.
    opt_state: optimizer state (momentum).
    rng: uint32 ``[2]`` base key. Step ``s`` uses ``fold_in(rng, s)``, so a resumed
      run draws the same augmentations and gates as an uninterrupted one.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(rng: jax.Array, model: GatedResNet, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, int, int]) -> TrainState:
  """Initialise the model and the optimizer.

  Args:
    rng: a uint32 ``[2]`` key (``jax.random.PRNGKey(seed)``).
    model: the network to train.
    optimizer: from ``resjax.schedules.build_optimizer``.
    image_shape: ``(height, width, channels)`` of one input image.
  """
  init_rng, train_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32))
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=optimizer.init(variables['params']), rng=train_rng)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross entropy against (optionally smoothed) one-hot labels."""
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def prepare_images(rng: jax.Array | None, images: jax.Array, data_config: Any,
                   channel_mean: jax.Array, channel_std: jax.Array) -> jax.Array:
  """Augment uint8 images (when ``rng`` is given) and convert them to normalised float32."""
  if rng is not None:
    images = data_lib.augment(rng, images, data_config.augment)
  return data_lib.preprocess(images, channel_mean, channel_std,
                             normalize=data_config.augment.normalize)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model: GatedResNet,
               optimizer: optax.GradientTransformation, config: Any, channel_mean: jax.Array,
               channel_std: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """Take one SGD step on ``batch`` (``{'images': uint8, 'labels': int32}``).

  With ``batch`` sharded over the mesh's 'batch' axis, the loss and BatchNorm's mean
  and variance are still taken over the whole global batch: under ``jax.jit`` the
  program is written for the global array and XLA adds the cross-device reductions.

  Returns:
    The new state and scalar metrics of this step. 'loss' includes label smoothing
    but not weight decay. 'error' is the share of the batch misclassified, in training
    mode. 'grad_norm' is the global L2 norm of the loss gradient and 'param_norm' that
    of the updated parameters.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, gates_rng = jax.random.split(step_rng)
  images = prepare_images(augment_rng, batch['images'], config.data, channel_mean, channel_std)
  labels = batch['labels']
  gates = train_variants.train_gates(gates_rng, model, config)

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    logits, updates = model.apply(variables, images, gates, train=True)
    loss = jnp.mean(cross_entropy(logits, labels, model.num_classes,
                                  config.train.label_smoothing))
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      'loss': loss,
      'error': jnp.mean(jnp.argmax(logits, axis=-1) != labels),
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(params),
  }
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def gather_batch(dataset: dict[str, jax.Array], indices: jax.Array) -> dict[str, jax.Array]:
  """Select the images and labels at ``indices`` from a dataset held on the devices."""
  return {'images': jnp.take(dataset['images'], indices, axis=0),
          'labels': jnp.take(dataset['labels'], indices, axis=0)}


def train_step_in_memory(state: TrainState, dataset: dict[str, jax.Array], indices: jax.Array,
                         **fixed: Any) -> tuple[TrainState, dict[str, jax.Array]]:
  """``train_step`` on the images at ``indices`` of a dataset held on the devices."""
  return train_step(state, gather_batch(dataset, indices), **fixed)


def eval_step(variables: dict[str, Any], gates: Gates | None, batch: dict[str, jax.Array],
              mask: jax.Array, *, model: GatedResNet, config: Any,
              channel_mean: jax.Array, channel_std: jax.Array) -> dict[str, jax.Array]:
  """Sum the loss and the errors over the images of ``batch`` where ``mask`` is True.

  Padding images (mask False) count nowhere, so a padded last batch gives exact
  totals. The loss is the plain cross entropy, without label smoothing.

  Returns:
    ``{'loss_sum', 'error_count', 'count'}``: float32 loss sum and int32 counts.
  """
  images = prepare_images(None, batch['images'], config.data, channel_mean, channel_std)
  logits = model.apply(variables, images, gates, train=False)
  weights = mask.astype(jnp.float32)
  losses = cross_entropy(logits, batch['labels'], model.num_classes)
  wrong = (jnp.argmax(logits, axis=-1) != batch['labels']) & mask
  return {'loss_sum': jnp.sum(losses * weights),
          'error_count': jnp.sum(wrong.astype(jnp.int32)),
          'count': jnp.sum(mask.astype(jnp.int32))}


def eval_step_in_memory(variables: dict[str, Any], gates: Gates | None,
                        dataset: dict[str, jax.Array], indices: jax.Array, mask: jax.Array,
                        **fixed: Any) -> dict[str, jax.Array]:
  """``eval_step`` on the images at ``indices`` of a dataset held on the devices."""
  return eval_step(variables, gates, gather_batch(dataset, indices), mask, **fixed)
