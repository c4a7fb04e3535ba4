"""Train-step benchmarks: resjax's step with and without gates, and the PyTorch twin's.

``core_train_step`` is the part of a training step that PyTorch also does here: the
forward pass in training mode, softmax cross-entropy, the backward pass and SGD with
momentum and weight decay (the optimizer of ``resjax.schedules.build_optimizer``).
It takes float images, so augmentation and normalisation, which
``resjax.steps.train_step`` runs inside its step, are left out on both sides.

XLA options are process-wide and fixed when the backend starts, so each variant of
the JAX step runs in a fresh process. ``python -m resjax.benchmarks.training``
prints one JSON object with that variant's timings. When PyTorch is installed, the
same process also times the PyTorch step, interleaved with the JAX step.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resjax import schedules, steps
from resjax.benchmarks import timing, weights
from resjax.config_base import base_config
from resjax.gates import Gates
from resjax.models import build_model
from resjax.models.resnet import GatedResNet


@dataclasses.dataclass(frozen=True)
class TrainVariant:
  """One way of running the JAX train step, tried to close the gap to PyTorch.

  Attributes:
    name: short name used in the output.
    description: what the variant changes, for the report.
    xla_flags: extra ``XLA_FLAGS`` for the worker process.
    unroll_stacks: ``config.model.unroll_stacks``: 'auto', 'always' or 'never'.
      The model has no option for this, so the worker process patches
      ``jax.lax.scan``; it measures what such an option would give.
    dtype: compute dtype of the model ('float32' or 'bfloat16').
    donate: donate the parameter, statistics and optimizer buffers to the step.
    batch_multiplier: batch size as a multiple of the benchmark's batch size.
    torch_channels_last: run the PyTorch twin in channels-last memory format.
    time_gates: also time the step with default gates (the gate overhead).
    time_real_step: also time ``resjax.steps.train_step`` (with in-step augmentation).
    time_parts: also time the forward pass and the forward and backward pass alone,
      in both frameworks, to show which part of the step differs.
  """

  name: str
  description: str
  xla_flags: str = ''
  unroll_stacks: str = 'auto'
  dtype: str = 'float32'
  donate: bool = False
  batch_multiplier: int = 1
  torch_channels_last: bool = False
  time_gates: bool = False
  time_real_step: bool = False
  time_parts: bool = False


# The variants tried for the JAX train step, each against the PyTorch step timed in
# the same process. ``xla_cpu_use_thunk_runtime`` is not among them: jaxlib 0.10.2
# ignores it ("no longer supported"), which ``check_xla_flag`` records instead.
TRAIN_VARIANTS = (
    TrainVariant('as_is', 'the model and step as they are, float32', time_gates=True,
                 time_real_step=True, time_parts=True),
    TrainVariant('rolled', 'each stack one lax.scan (model.unroll_stacks=never, the '
                 'default on accelerators); as_is unrolls them on a CPU',
                 unroll_stacks='never'),
    TrainVariant('donate', 'donate_argnums on params, batch_stats and optimizer state',
                 donate=True),
    TrainVariant('bfloat16', 'model.dtype=bfloat16 (params stay float32)', dtype='bfloat16'),
    TrainVariant('batch_x2', 'twice the batch size in both frameworks', batch_multiplier=2),
    TrainVariant('onednn', 'XLA_FLAGS=--xla_cpu_use_onednn=true',
                 xla_flags='--xla_cpu_use_onednn=true'),
    TrainVariant('xnnpack', 'XLA_FLAGS=--xla_cpu_use_xnnpack=true',
                 xla_flags='--xla_cpu_use_xnnpack=true'),
    TrainVariant('single_thread_eigen', 'XLA_FLAGS=--xla_cpu_multi_thread_eigen=false',
                 xla_flags='--xla_cpu_multi_thread_eigen=false'),
    TrainVariant('torch_channels_last', 'the PyTorch twin in channels_last memory format '
                 '(JAX unchanged)', torch_channels_last=True),
)

VARIANTS_BY_NAME = {variant.name: variant for variant in TRAIN_VARIANTS}


def train_config(depth: int, batch_size: int, dtype: str = 'float32'):
  """Return the base config with a CIFAR ResNet of ``depth`` and the given batch size."""
  config = base_config()
  config.model.depth = depth
  config.model.dtype = dtype
  config.train.batch_size = batch_size
  return config


def random_batch(batch_size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Normal random CIFAR-sized float32 images and uniform random labels."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((batch_size, 32, 32, 3), dtype=np.float32)
  labels = rng.integers(0, num_classes, size=batch_size, dtype=np.int32)
  return images, labels


def core_train_step(model: GatedResNet, optimizer: optax.GradientTransformation, *,
                    donate: bool = False) -> Callable:
  """Jit one SGD step ``(params, batch_stats, opt_state, images, labels, gates)``.

  ``gates`` is a traced argument, so default gates cost their arithmetic as in
  stochastic-depth or short-path training; None runs the network without gates.

  Returns:
    The jitted step; it returns ``(params, batch_stats, opt_state, loss)``.
  """

  def step(params, batch_stats, opt_state, images, labels, gates: Gates | None):

    def loss_fn(params):
      logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                    gates, train=True)
      loss = jnp.mean(steps.cross_entropy(logits, labels, model.num_classes))
      return loss, updates['batch_stats']

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2) if donate else ())


class JaxTrainer:
  """Holds the state of ``core_train_step`` between timed calls."""

  def __init__(self, model: GatedResNet, config, images, labels, gates: Gates | None, *,
               donate: bool = False, seed: int = 0):
    self.optimizer, _ = schedules.build_optimizer(config.train, steps_in_epoch=100)
    variables = weights.random_variables(model, seed)
    self.params = variables['params']
    self.batch_stats = variables['batch_stats']
    self.opt_state = self.optimizer.init(self.params)
    self.images = jnp.asarray(images)
    self.labels = jnp.asarray(labels)
    self.gates = None if gates is None else jax.tree_util.tree_map(jnp.asarray, gates)
    self.jitted = core_train_step(model, self.optimizer, donate=donate)
    self.compiled = None

  def compile_seconds(self) -> float:
    """Lower and compile the step for this state; later calls run that executable."""
    start = timing.time.perf_counter()
    self.compiled = self.jitted.lower(self.params, self.batch_stats, self.opt_state,
                                      self.images, self.labels, self.gates).compile()
    return timing.time.perf_counter() - start

  def __call__(self) -> None:
    step = self.compiled or self.jitted
    self.params, self.batch_stats, self.opt_state, loss = step(
        self.params, self.batch_stats, self.opt_state, self.images, self.labels, self.gates)
    loss.block_until_ready()


def jax_step_parts(model: GatedResNet, variables, images, labels) -> dict[str, Callable]:
  """Return compiled calls of the training-mode forward pass and of forward plus backward."""

  def loss(params, batch_stats, images, labels):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                  train=True)
    return jnp.mean(steps.cross_entropy(logits, labels, model.num_classes)), updates

  arguments = (variables['params'], variables['batch_stats'], jnp.asarray(images),
               jnp.asarray(labels))
  forward = jax.jit(lambda *a: loss(*a)[0]).lower(*arguments).compile()
  backward = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(*arguments).compile()
  return {'jax_forward': lambda: forward(*arguments).block_until_ready(),
          'jax_forward_backward': lambda: jax.block_until_ready(backward(*arguments))}


class TorchTrainer:
  """One SGD step of the PyTorch twin per call, with the same hyperparameters."""

  def __init__(self, model: GatedResNet, variables, config, images, labels, *,
               channels_last: bool = False):
    # Imported here: the JAX-only measurements must run without PyTorch.
    import torch  # pylint: disable=import-outside-toplevel
    from resjax.benchmarks import torch_resnet  # pylint: disable=import-outside-toplevel

    self.torch = torch
    self.twin = torch_resnet.torch_twin(model, variables).train()
    self.images = torch_resnet.to_torch_images(images)
    if channels_last:
      self.twin = self.twin.to(memory_format=torch.channels_last)
      self.images = self.images.contiguous(memory_format=torch.channels_last)
    self.labels = torch.from_numpy(np.asarray(labels, np.int64))
    # NOTE: PyTorch decays every parameter; resjax decays the kernels by default
    # (train.weight_decay_scope). The extra multiply-adds on BatchNorm and biases
    # are a negligible share of the step.
    self.optimizer = torch.optim.SGD(
        self.twin.parameters(), lr=config.train.learning_rate,
        momentum=config.train.momentum, nesterov=config.train.nesterov,
        weight_decay=config.train.weight_decay)

  def __call__(self) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    logits = self.twin(self.images)
    loss = self.torch.nn.functional.cross_entropy(logits, self.labels)
    loss.backward()
    self.optimizer.step()

  def forward(self) -> None:
    with self.torch.no_grad():
      self.torch.nn.functional.cross_entropy(self.twin(self.images), self.labels)

  def forward_backward(self) -> None:
    self.twin.zero_grad(set_to_none=True)
    self.torch.nn.functional.cross_entropy(self.twin(self.images), self.labels).backward()


def torch_available() -> bool:
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


class RealStepTrainer:
  """``resjax.steps.train_step`` as the training loop jits it, on one uint8 batch."""

  def __init__(self, model: GatedResNet, config, batch_size: int, seed: int = 0):
    optimizer, _ = schedules.build_optimizer(config.train, steps_in_epoch=100)
    self.state = steps.create_train_state(jax.random.PRNGKey(seed), model, optimizer,
                                          (32, 32, 3))
    rng = np.random.default_rng(seed)
    self.batch = {'images': jnp.asarray(rng.integers(0, 256, (batch_size, 32, 32, 3),
                                                     dtype=np.uint8)),
                  'labels': jnp.asarray(rng.integers(0, 10, batch_size, dtype=np.int32))}
    self.jitted = jax.jit(functools.partial(
        steps.train_step, model=model, optimizer=optimizer, config=config,
        channel_mean=jnp.full((3,), 120.0), channel_std=jnp.full((3,), 60.0)))

  def __call__(self) -> None:
    self.state, metrics = self.jitted(self.state, self.batch)
    metrics['loss'].block_until_ready()


def measure_variant(variant: TrainVariant, depth: int, batch_size: int, repeats: int,
                    seed: int = 0) -> dict[str, Any]:
  """Time the JAX step of ``variant`` and the PyTorch step, interleaved, in this process.

  Returns:
    A JSON-ready dict: per timed function ('jax', 'jax_gates', 'real_step', 'torch')
    its seconds per step, median and warm-up, and the JAX compile time.
  """
  batch = batch_size * variant.batch_multiplier
  config = train_config(depth, batch, variant.dtype)
  config.model.unroll_stacks = variant.unroll_stacks
  model = build_model(config.model, num_classes=10)
  images, labels = random_batch(batch, 10, seed)
  trainer = JaxTrainer(model, config, images, labels, None, donate=variant.donate, seed=seed)
  result = {'variant': variant.name, 'batch_size': batch, 'depth': depth,
            'xla_flags': os.environ.get('XLA_FLAGS', ''), 'threads': timing.thread_count(),
            'jax_compile_seconds': trainer.compile_seconds()}
  functions: dict[str, Callable[[], None]] = {'jax': trainer}
  if variant.time_gates:
    gates = model.default_gates()
    gated = JaxTrainer(model, config, images, labels, gates, donate=variant.donate, seed=seed)
    result['jax_gates_compile_seconds'] = gated.compile_seconds()
    functions['jax_gates'] = gated
  if variant.time_real_step:
    functions['real_step'] = RealStepTrainer(model, config, batch, seed)
  if variant.time_parts:
    functions.update(jax_step_parts(model, weights.random_variables(model, seed), images,
                                    labels))
  if torch_available():
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(timing.thread_count())
    # The PyTorch step stays in float32 whatever the JAX variant computes in.
    float32_model = dataclasses.replace(model, dtype=jnp.float32)
    variables = jax.device_get(weights.random_variables(float32_model, seed))
    functions['torch'] = TorchTrainer(float32_model, variables, config, images, labels,
                                      channels_last=variant.torch_channels_last)
    if variant.time_parts:
      functions['torch_forward'] = functions['torch'].forward
      functions['torch_forward_backward'] = functions['torch'].forward_backward
  timings = timing.time_interleaved(functions, repeats=repeats)
  for name, measured in timings.items():
    result[f'{name}_seconds'] = list(measured.seconds)
    result[f'{name}_median_seconds'] = measured.median
    result[f'{name}_warmup_seconds'] = measured.warmup_seconds
  return result


def check_xla_flag(flag: str, timeout_seconds: float) -> str:
  """Start JAX with ``flag`` in a fresh process; return XLA's message about the flag.

  Returns:
    'accepted', or XLA's warning or error line about the flag.
  """
  env = dict(os.environ, XLA_FLAGS=flag)
  command = [sys.executable, '-c', 'import jax.numpy as jnp; jnp.ones(1).block_until_ready()']
  finished = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=timeout_seconds, check=False)
  name = flag.lstrip('-').split('=')[0]
  for line in finished.stderr.splitlines():
    if name in line:
      return line.split('] ', 1)[-1].strip()
  return 'accepted' if finished.returncode == 0 else f'exit status {finished.returncode}'


def run_variant_process(variant: TrainVariant, depth: int, batch_size: int, repeats: int,
                        timeout_seconds: float) -> dict[str, Any]:
  """Run ``measure_variant`` in a fresh process with the variant's XLA flags.

  Returns:
    The worker's JSON object, or ``{'variant', 'error'}`` when the process failed
    (for instance because XLA rejected a flag), with the end of its stderr.
  """
  env = dict(os.environ)
  env['XLA_FLAGS'] = ' '.join(f for f in (env.get('XLA_FLAGS', ''), variant.xla_flags) if f)
  command = [sys.executable, '-m', 'resjax.benchmarks.training', '--variant', variant.name,
             '--depth', str(depth), '--batch-size', str(batch_size), '--repeats',
             str(repeats)]
  try:
    finished = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=timeout_seconds, check=False)
  except subprocess.TimeoutExpired:
    return {'variant': variant.name, 'error': f'timed out after {timeout_seconds:.0f} s'}
  if finished.returncode != 0:
    tail = finished.stderr.strip().splitlines()[-3:]
    return {'variant': variant.name,
            'error': f'exit status {finished.returncode}: ' + ' | '.join(tail)}
  return json.loads(finished.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Time one variant of the train step; print '
                                   'one JSON line.')
  parser.add_argument('--variant', required=True, choices=sorted(VARIANTS_BY_NAME))
  parser.add_argument('--depth', type=int, required=True, help='CIFAR ResNet depth, 6n+2.')
  parser.add_argument('--batch-size', type=int, required=True, help='images per step.')
  parser.add_argument('--repeats', type=int, required=True, help='timed steps.')
  args = parser.parse_args(argv)
  result = measure_variant(VARIANTS_BY_NAME[args.variant], args.depth, args.batch_size,
                           args.repeats)
  print(json.dumps(result))


if __name__ == '__main__':
  main()
