"""Gated ResNets: one pure ``apply`` for every lesion, reordering and path setting.

The trunk is a list of stages. A stage may open with a *head* unit that changes the
shape (a downsampling or widening unit, run once, with its own parameters), followed
by a *stack* of interchangeable units (same input and output shape). The stack's
parameters are stacked along a leading axis, and the stack runs as one
``jax.lax.scan`` over ``gates.order[stage]``, so compile time does not grow with
depth and an order may permute or repeat units.

Blocks are numbered globally, 0-based, stage by stage, the head first.
Parameters live under ``stem``, ``stage{s}/head``, ``stage{s}/stack`` (leading
axis: position of the block within the stack) and ``classifier``;
``block_parameters`` finds the parameters of one block by its global index.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resjax.gates import Gates, scale_gradient
from resjax.models.layers import Classifier, Stem, Unit


@dataclasses.dataclass(frozen=True)
class StageLayout:
  """Where the blocks of one stage sit.

  Attributes:
    index: 0-based stage number.
    head: global index of the head block, or None when every block of the stage
      is interchangeable.
    stack: global indices of the interchangeable blocks, in order.
  """

  index: int
  head: int | None
  stack: tuple[int, ...]

  @property
  def blocks(self) -> tuple[int, ...]:
    return ((self.head,) if self.head is not None else ()) + self.stack


@dataclasses.dataclass(frozen=True)
class GatedResNet:
  """A ResNet (or its plain counterpart) whose residual branches are gated.

  Build one with ``resjax.models.build_model``. ``init`` and ``apply`` are pure.

  Attributes:
    unit_kind: 'basic' or 'bottleneck'.
    stage_sizes: number of blocks per stage.
    widths: width of each stage (the 3x3 convolution width for bottlenecks).
    stem_width: output channels of the stem.
    imagenet: ImageNet stem (7x7 conv and max pooling) instead of the CIFAR one.
    shortcut: 'option_a' or 'projection' for the shape-changing units.
    preactivation: pre-activation units instead of the original post-activation.
    residual: False builds the plain network: no skip connections.
    num_classes: classifier outputs.
    dtype: compute dtype; parameters stay float32 and logits are float32.
    bn_momentum: running-average momentum of BatchNorm.
    bn_epsilon: BatchNorm epsilon.
    zero_init_last_bn: start the last BatchNorm of each branch at scale 0.
    unroll_stacks: unroll the scan over each stack of interchangeable blocks. Faster
      training on CPUs; compile time then grows with depth.
  """

  unit_kind: str
  stage_sizes: tuple[int, ...]
  widths: tuple[int, ...]
  stem_width: int
  imagenet: bool
  shortcut: str
  preactivation: bool
  residual: bool
  num_classes: int
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  zero_init_last_bn: bool = False
  unroll_stacks: bool = False

  # ---------------------------------------------------------------- structure

  @property
  def expansion(self) -> int:
    return 4 if self.unit_kind == 'bottleneck' else 1

  @property
  def num_blocks(self) -> int:
    return sum(self.stage_sizes)

  def _stage_strides(self) -> list[int]:
    return [1] + [2] * (len(self.stage_sizes) - 1)

  @property
  def layouts(self) -> tuple[StageLayout, ...]:
    layouts = []
    start = 0
    in_features = self.stem_width
    for stage, (size, width, strides) in enumerate(
        zip(self.stage_sizes, self.widths, self._stage_strides())):
      out_features = width * self.expansion
      changes_shape = strides != 1 or in_features != out_features
      head = start if changes_shape else None
      first_stacked = start + 1 if changes_shape else start
      layouts.append(StageLayout(stage, head, tuple(range(first_stacked, start + size))))
      start += size
      in_features = out_features
    return tuple(layouts)

  @property
  def downsampling_blocks(self) -> tuple[int, ...]:
    strides = self._stage_strides()
    return tuple(layout.head for layout in self.layouts
                 if layout.head is not None and strides[layout.index] != 1)

  @property
  def interchangeable_blocks(self) -> tuple[tuple[int, ...], ...]:
    """Per stage, the blocks that may be reordered, repeated or (plain) deleted."""
    return tuple(layout.stack for layout in self.layouts)

  @property
  def deletable_blocks(self) -> tuple[int, ...]:
    """Blocks a zero forward gate can delete: all of them in a residual network,
    only the shape-preserving units in a plain one (deletion means identity)."""
    if self.residual:
      return tuple(range(self.num_blocks))
    return tuple(b for stack in self.interchangeable_blocks for b in stack)

  def stage_of_block(self) -> tuple[int, ...]:
    return tuple(layout.index for layout in self.layouts for _ in layout.blocks)

  def _unit(self, stage: int, head: bool) -> Unit:
    strides = self._stage_strides()[stage] if head else 1
    if not self.residual:
      shortcut = 'none'
    elif head:
      shortcut = self.shortcut
    else:
      shortcut = 'identity'
    return Unit(kind=self.unit_kind, features=self.widths[stage], strides=strides,
                shortcut=shortcut, preactivation=self.preactivation, dtype=self.dtype,
                bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                zero_init_last_bn=self.zero_init_last_bn)

  def _stem(self) -> Stem:
    return Stem(features=self.stem_width, imagenet=self.imagenet,
                preactivation=self.preactivation, dtype=self.dtype,
                bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)

  def _classifier(self) -> Classifier:
    return Classifier(num_classes=self.num_classes, preactivation=self.preactivation,
                      dtype=self.dtype, bn_momentum=self.bn_momentum,
                      bn_epsilon=self.bn_epsilon)

  # -------------------------------------------------------------------- gates

  def default_gates(self) -> Gates:
    """The ordinary network: every gate 1, every stack in its own order."""
    ones = np.ones((self.num_blocks,), np.float32)
    return Gates(forward=ones, backward_branch=ones.copy(), backward_shortcut=ones.copy(),
                 order=tuple(np.asarray(stack, np.int32)
                             for stack in self.interchangeable_blocks))

  def describe_blocks(self) -> str:
    return (f'This model has {self.num_blocks} blocks (0-based); the interchangeable '
            f'blocks per stage are {self._ranges()}.')

  def _ranges(self) -> str:
    parts = []
    for stage, stack in enumerate(self.interchangeable_blocks):
      text = f'{stack[0]}..{stack[-1]}' if stack else 'none'
      parts.append(f'stage {stage}: {text}')
    return '; '.join(parts)

  def check_gates(self, gates: Gates, *, batched: bool = False) -> None:
    """Raise ValueError when ``gates`` do not fit this model.

    Shapes are always checked, at trace time. Values (the block indices of the
    orders, the forward gates of plain units that cannot be deleted) are checked
    whenever they are concrete, which they are outside ``jit`` and ``vmap``.

    Args:
      gates: one setting, or a batch of settings with ``batched=True``.
      batched: whether every array carries one leading axis of settings.
    """
    if not isinstance(gates, Gates):
      raise TypeError(f'gates must be a resjax.gates.Gates, got {type(gates).__name__}; '
                      'start from model.default_gates().')
    lead = 1 if batched else 0
    for name in ('forward', 'backward_branch', 'backward_shortcut'):
      shape = np.shape(getattr(gates, name))
      if len(shape) != 1 + lead or shape[-1] != self.num_blocks:
        expected = '[settings, num_blocks]' if batched else '[num_blocks]'
        hint = '' if batched else ' To evaluate a batch of settings, jax.vmap over it.'
        raise ValueError(f'gates.{name} has shape {shape}, expected {expected} with '
                         f'num_blocks={self.num_blocks}. {self.describe_blocks()}{hint}')
    if len(gates.order) != len(self.stage_sizes):
      raise ValueError(f'gates.order has {len(gates.order)} entries, expected one per '
                       f'stage ({len(self.stage_sizes)}). {self.describe_blocks()}')
    for stage, (order, stack) in enumerate(zip(gates.order, self.interchangeable_blocks)):
      if np.ndim(order) != 1 + lead:
        raise ValueError(f'gates.order[{stage}] has shape {np.shape(order)}, expected '
                         f'{"[settings, positions]" if batched else "[positions]"}.')
      if not jnp.issubdtype(jnp.result_type(order), jnp.integer):
        raise ValueError(f'gates.order[{stage}] must hold integer block indices, got '
                         f'dtype {jnp.result_type(order)}.')
      if np.shape(order)[-1] and not stack:
        raise ValueError(f'gates.order[{stage}] names blocks, but stage {stage} has no '
                         f'interchangeable blocks. {self.describe_blocks()}')
      if isinstance(order, jax.core.Tracer):
        continue
      wrong = sorted(set(np.asarray(order).ravel().tolist()) - set(stack))
      if wrong:
        raise ValueError(f'gates.order[{stage}] names blocks {wrong}, which are not '
                         f'interchangeable in stage {stage}: an order may only use blocks '
                         f'of the same shape that do not downsample. '
                         f'{self.describe_blocks()}')
    if not self.residual and not isinstance(gates.forward, jax.core.Tracer):
      fixed = sorted(set(range(self.num_blocks)) - set(self.deletable_blocks))
      forward = np.asarray(gates.forward)[..., fixed]
      if fixed and np.any(forward != 1):
        raise ValueError(f'the plain network cannot delete or scale units {fixed}, whose '
                         'input and output shapes differ; keep their forward gates at 1. '
                         f'Deletable units: {list(self.deletable_blocks)}.')

  # ------------------------------------------------------------ init / apply

  def init(self, rng: jax.Array, images: jax.Array) -> dict[str, Any]:
    """Initialise ``{'params': ..., 'batch_stats': ...}`` for images like ``images``."""
    rng_stem, rng_classifier, rng_stages = jax.random.split(rng, 3)
    images = jnp.asarray(images)
    params, stats = {}, {}

    stem_vars = self._stem().init(rng_stem, images, train=False)
    params['stem'], stats['stem'] = stem_vars['params'], stem_vars.get('batch_stats', {})
    x = jax.eval_shape(lambda v: self._stem().apply(v, images, train=False), stem_vars)

    for layout, stage_rng in zip(self.layouts, jax.random.split(rng_stages, len(self.layouts))):
      head_rng, stack_rng = jax.random.split(stage_rng)
      stage_params, stage_stats = {}, {}
      if layout.head is not None:
        unit = self._unit(layout.index, head=True)
        head_vars = unit.init(head_rng, jnp.zeros(x.shape, x.dtype), train=False)
        stage_params['head'] = head_vars['params']
        stage_stats['head'] = head_vars.get('batch_stats', {})
        x = jax.eval_shape(lambda v, a, u=unit: u.apply(v, a, train=False)[1], head_vars,
                           jnp.zeros(x.shape, x.dtype))
      if layout.stack:
        unit = self._unit(layout.index, head=False)
        sample = jnp.zeros(x.shape, x.dtype)
        rngs = jax.random.split(stack_rng, len(layout.stack))
        stack_vars = jax.vmap(lambda r, u=unit, s=sample: u.init(r, s, train=False))(rngs)
        stage_params['stack'] = stack_vars['params']
        stage_stats['stack'] = stack_vars.get('batch_stats', {})
      params[f'stage{layout.index}'] = stage_params
      stats[f'stage{layout.index}'] = stage_stats

    features = jnp.zeros(x.shape, x.dtype)
    classifier_vars = self._classifier().init(rng_classifier, features, train=False)
    params['classifier'] = classifier_vars['params']
    stats['classifier'] = classifier_vars.get('batch_stats', {})
    return {'params': params, 'batch_stats': stats}

  def apply(self, variables: dict[str, Any], images: jax.Array, gates: Gates | None = None,
            *, train: bool) -> Any:
    """Run the network on ``images`` under ``gates``.

    Args:
      variables: ``{'params': ..., 'batch_stats': ...}`` from ``init``.
      images: float images ``[batch, height, width, channels]``, already normalised.
      gates: one setting; None runs the ordinary network without any gate
        arithmetic. To run a batch of settings, ``jax.vmap`` over its leading axis.
      train: keyword-only. True uses batch statistics in BatchNorm and also
        returns the updated running statistics.

    Returns:
      Logits ``[batch, num_classes]`` (float32) when ``train`` is False; with
      ``train`` True, ``(logits, {'batch_stats': new_statistics})``.
    """
    if gates is not None:
      self.check_gates(gates)
    x, new_stats = self.features(variables, images, gates, train=train)
    classifier_vars = {'params': variables['params']['classifier'],
                       'batch_stats': variables['batch_stats'].get('classifier', {})}
    logits, new_stats['classifier'] = _apply_module(self._classifier(), classifier_vars, x,
                                                    train)
    if train:
      return logits, {'batch_stats': new_stats}
    return logits

  def features(self, variables: dict[str, Any], images: jax.Array, gates: Gates | None,
               *, train: bool) -> tuple[jax.Array, dict[str, Any]]:
    """Run the stem and the trunk; return the last feature map and new statistics."""
    params, stats = variables['params'], variables['batch_stats']
    x, stem_stats = self.embed(variables, images, train=train)
    new_stats = {'stem': stem_stats}
    for layout in self.layouts:
      x, new_stats[f'stage{layout.index}'] = self.run_stage(
          params[f'stage{layout.index}'], stats[f'stage{layout.index}'], layout, x, gates,
          train=train)
    return x, new_stats

  def embed(self, variables: dict[str, Any], images: jax.Array, *,
            train: bool) -> tuple[jax.Array, dict[str, Any]]:
    """Run the stem: its output is the input of block 0."""
    stem_vars = {'params': variables['params']['stem'],
                 'batch_stats': variables['batch_stats']['stem']}
    return _apply_module(self._stem(), stem_vars, jnp.asarray(images), train)

  def run_stage(self, params: dict[str, Any], stats: dict[str, Any], layout: StageLayout,
                x: jax.Array, gates: Gates | None, *, train: bool):
    """Run one stage: its head once, then its stack in ``gates.order``."""
    new_stats = {}
    if layout.head is not None:
      unit = self._unit(layout.index, head=True)
      head_vars = {'params': params['head'], 'batch_stats': stats['head']}
      (shortcut, branch), new_stats['head'] = _apply_module(unit, head_vars, x, train)
      x = self.combine(x, shortcut, branch, _gate_values(gates, layout.head))
    if not layout.stack:
      return x, new_stats

    unit = self._unit(layout.index, head=False)
    first = layout.stack[0]
    if gates is None:
      order = jnp.arange(len(layout.stack), dtype=jnp.int32)
    else:
      order = jnp.asarray(gates.order[layout.index], jnp.int32) - first

    def step(carry, position):
      y, stack_stats = carry
      block_vars = {'params': _take(params['stack'], position),
                    'batch_stats': _take(stack_stats, position)}
      (shortcut, branch), block_stats = _apply_module(unit, block_vars, y, train)
      y = self.combine(y, shortcut, branch, _gate_values(gates, first + position))
      if train:
        # A repeated block keeps the statistics of its last run.
        stack_stats = jax.tree_util.tree_map(
            lambda old, new: old.at[position].set(new), stack_stats, block_stats)
      return (y, stack_stats), None

    # A rolled scan keeps compile time flat in depth. Unrolled, XLA's CPU backend
    # runs convolution gradients several times faster (about 7x on a ResNet-14
    # train step here); a length + 1 unroll leaves no loop at all.
    unroll = order.shape[0] + 1 if self.unroll_stacks else 1
    (x, new_stats['stack']), _ = jax.lax.scan(step, (x, stats['stack']), order, unroll=unroll)
    return x, new_stats

  def combine(self, x: jax.Array, shortcut: jax.Array | None, branch: jax.Array,
              gate: tuple[jax.Array, jax.Array, jax.Array] | None) -> jax.Array:
    """Join a unit's shortcut and branch under ``gate = (forward, branch, shortcut)``.

    Residual: ``post(shortcut + g * branch)``, where ``post`` is ReLU for the
    original post-activation units and the identity for pre-activation ones.
    Plain: ``g * post(branch) + (1 - g) * x`` for shape-preserving units, so a
    deleted unit is the identity, and ``post(branch)`` for the others.
    The backward gates scale the cotangent of each of the two terms.
    """
    post = (lambda v: v) if self.preactivation else jax.nn.relu
    if self.residual:
      if gate is None:
        return post(shortcut + branch)
      forward, backward_branch, backward_shortcut = gate
      branch_term = scale_gradient(forward.astype(branch.dtype) * branch, backward_branch)
      return post(scale_gradient(shortcut, backward_shortcut) + branch_term)

    out = post(branch)
    if gate is None or out.shape != x.shape:
      return out
    forward, backward_branch, backward_shortcut = gate
    forward = forward.astype(out.dtype)
    return (scale_gradient((1 - forward) * x, backward_shortcut)
            + scale_gradient(forward * out, backward_branch))

  # ------------------------------------------------------------------ helpers

  def block_parameters(self, variables: dict[str, Any], block: int) -> dict[str, Any]:
    """Return ``{'params', 'batch_stats'}`` of one block, found by global index."""
    if not 0 <= block < self.num_blocks:
      raise ValueError(f'block {block} is out of range. {self.describe_blocks()}')
    for layout in self.layouts:
      name = f'stage{layout.index}'
      if block == layout.head:
        return {kind: variables[kind][name]['head'] for kind in ('params', 'batch_stats')}
      if block in layout.stack:
        position = layout.stack.index(block)
        return {kind: _take(variables[kind][name]['stack'], position)
                for kind in ('params', 'batch_stats')}
    raise AssertionError(f'block {block} has no layout')

  def num_params(self) -> int:
    shapes = jax.eval_shape(self.init, jax.random.key(0), self.example_input(1))
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes['params']))

  def example_input(self, batch: int = 1, image_size: int | None = None,
                    channels: int = 3) -> jax.ShapeDtypeStruct:
    size = image_size or (224 if self.imagenet else 32)
    return jnp.zeros((batch, size, size, channels), jnp.float32)

  def path_length_counts(self) -> list[int]:
    """C(n, k) for k = 0..n: the number of paths of each length in the unraveled view."""
    return [math.comb(self.num_blocks, k) for k in range(self.num_blocks + 1)]

  def describe(self) -> dict[str, Any]:
    """Structure of the model as plain JSON-ready values."""
    return {
        'num_blocks': self.num_blocks,
        'num_params': self.num_params(),
        'residual': self.residual,
        'preactivation': self.preactivation,
        'unit_kind': self.unit_kind,
        'stage_sizes': list(self.stage_sizes),
        'stages': [{'index': layout.index, 'blocks': list(layout.blocks),
                    'head': layout.head, 'interchangeable': list(layout.stack),
                    'width': self.widths[layout.index] * self.expansion}
                   for layout in self.layouts],
        'stage_of_block': list(self.stage_of_block()),
        'downsampling_blocks': list(self.downsampling_blocks),
        'interchangeable_blocks': [list(stack) for stack in self.interchangeable_blocks],
        'deletable_blocks': list(self.deletable_blocks),
        'path_length_counts': self.path_length_counts(),
    }


def _apply_module(module, variables, x, train):
  if train:
    out, updates = module.apply(variables, x, train=True, mutable=['batch_stats'])
    return out, updates.get('batch_stats', {})
  return module.apply(variables, x, train=False), variables.get('batch_stats', {})


def _take(tree, index):
  return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def _gate_values(gates: Gates | None, block):
  if gates is None:
    return None
  return (jnp.asarray(gates.forward)[block], jnp.asarray(gates.backward_branch)[block],
          jnp.asarray(gates.backward_shortcut)[block])
