"""The ways of running a lesion sweep that the benchmark compares.

Every method evaluates the same forward-gate rows (1 keeps a block, 0 deletes it)
on the same images. Each returns the number of correctly classified images per
setting, so the benchmark checks that the methods agree before it compares speed.

- ``engine_sweep``: resjax's ``evaluate_settings``, vmapped gate batches.
- ``forward_gate_sweep``: a minimal jitted ``jax.vmap`` over the forward gates only,
  with the block orders shared by all settings.
- ``LoopSweep``: one call of one jitted function per setting.
- ``TorchSweep``: the PyTorch twin, one eager forward pass per setting that skips the
  deleted blocks, as a PyTorch user would write it.
- ``ProcessSweep``: one fresh Python process per setting that restores a saved
  checkpoint and evaluates it (``resjax.benchmarks.lesion_worker``), the way the
  original study ran one job per lesion.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resjax import checkpointing, steps
from resjax.lesion import engine
from resjax.lesion.settings import gates_from_forward
from resjax.models import build_model
from resjax.models.resnet import GatedResNet


def lesion_settings(model: GatedResNet, num_random: int, max_deleted: int,
                    seed: int) -> np.ndarray:
  """Forward gates ``[M, num_blocks]``: every single deletion, then random multi-deletions.

  Args:
    model: the network.
    num_random: number of random settings after the single deletions.
    max_deleted: each random setting deletes k blocks, k uniform in 2..max_deleted
      (capped at the number of deletable blocks).
    seed: seed of the random settings.
  """
  deletable = np.asarray(model.deletable_blocks)
  singles = np.ones((len(deletable), model.num_blocks), np.float32)
  singles[np.arange(len(deletable)), deletable] = 0.0
  return np.concatenate([singles, random_deletions(model, num_random, max_deleted, seed)])


def random_deletions(model: GatedResNet, count: int, max_deleted: int,
                     seed: int) -> np.ndarray:
  """Forward gates ``[count, num_blocks]``, each deleting 2..max_deleted random blocks."""
  deletable = np.asarray(model.deletable_blocks)
  rng = np.random.default_rng(seed)
  top = max(2, min(max_deleted, len(deletable)))
  forward = np.ones((count, model.num_blocks), np.float32)
  for row in forward:
    deleted = min(int(rng.integers(2, top + 1)), len(deletable))
    row[rng.choice(deletable, size=deleted, replace=False)] = 0.0
  return forward


def random_images(count: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """CIFAR-sized float32 images drawn from a standard normal, and random labels."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((count, 32, 32, 3), dtype=np.float32)
  labels = rng.integers(0, num_classes, size=count, dtype=np.int32)
  return images, labels


def engine_sweep(model: GatedResNet, variables, images, labels, forward, *,
                 chunk_size: int) -> np.ndarray:
  """Correct counts per setting from ``resjax.lesion.engine.evaluate_settings``.

  ``chunk_size`` is passed explicitly, so the timed calls do not include the
  engine's memory estimate (which compiles the program once more).
  """
  results = engine.evaluate_settings(model, variables, images, labels,
                                     gates_from_forward(model, forward),
                                     batch_size=len(images), memory_budget_mb=1.0,
                                     chunk_size=chunk_size)
  return np.asarray(results.correct)


def engine_chunk_size(model: GatedResNet, batch_size: int, num_settings: int,
                      memory_budget_mb: float, devices: int = 1) -> int:
  """Settings per call for this budget, from the engine's analytic memory estimate.

  ``evaluate_settings`` prefers XLA's compiled memory analysis where the backend
  gives one, so its own choice may differ a little.
  """
  setting_bytes = engine.analytic_setting_bytes(model, (batch_size, 32, 32, 3))
  return engine.choose_chunk_size(num_settings, setting_bytes, memory_budget_mb, devices)


@functools.partial(jax.jit, static_argnums=0)
def _forward_gate_correct(model: GatedResNet, variables, images, labels, forward):
  default = model.default_gates()

  def correct(row):
    gates = default.replace(forward=row, backward_branch=jnp.ones_like(row),
                            backward_shortcut=jnp.ones_like(row))
    logits = model.apply(variables, images, gates, train=False)
    return jnp.sum(jnp.argmax(logits, axis=-1) == labels)

  return jax.vmap(correct)(forward)


def forward_gate_sweep(model: GatedResNet, variables, images, labels, forward, *,
                       chunk_size: int) -> np.ndarray:
  """Correct counts per setting from a jitted vmap over forward gates, in chunks.

  The orders are the model's defaults, closed over and shared by every setting, so
  every setting runs the same kernels and the vmap batches only the activations.
  """
  forward = np.asarray(forward, np.float32)
  counts = []
  for start in range(0, len(forward), chunk_size):
    chunk = forward[start:start + chunk_size]
    missing = chunk_size - len(chunk)
    if missing:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], missing, axis=0)])
    result = _forward_gate_correct(model, variables, images, labels, chunk)
    counts.append(np.asarray(result)[:chunk_size - missing])
  return np.concatenate(counts)


class LoopSweep:
  """One jitted call per setting: the same compiled function for every setting."""

  def __init__(self, model: GatedResNet, variables, images, labels):
    self.model = model
    self.variables = variables
    self.images = jnp.asarray(images)
    self.labels = jnp.asarray(labels)
    self.default = jax.tree_util.tree_map(jnp.asarray, model.default_gates())

    def correct(variables, images, labels, forward):
      gates = self.default.replace(forward=forward)
      logits = model.apply(variables, images, gates, train=False)
      return jnp.sum(jnp.argmax(logits, axis=-1) == labels)

    self.jitted = jax.jit(correct)
    self.compiled = None

  def compile(self) -> None:
    """Compile ahead of the calls, so that compile time can be timed on its own."""
    row = jnp.ones((self.model.num_blocks,), jnp.float32)
    self.compiled = self.jitted.lower(self.variables, self.images, self.labels, row).compile()

  def __call__(self, forward) -> np.ndarray:
    function = self.compiled or self.jitted
    counts = [function(self.variables, self.images, self.labels, jnp.asarray(row))
              for row in np.asarray(forward, np.float32)]
    return np.asarray(jax.device_get(counts))


class TorchSweep:
  """One eager PyTorch forward pass per setting, skipping the deleted blocks."""

  def __init__(self, model: GatedResNet, variables, images, labels, *, threads: int):
    # Imported here, so that the JAX methods run without PyTorch installed.
    import torch  # pylint: disable=import-outside-toplevel
    from resjax.benchmarks import torch_resnet  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(threads)
    self.torch = torch
    self.twin = torch_resnet.torch_twin(model, jax.device_get(variables))
    self.images = torch_resnet.to_torch_images(images)
    self.labels = torch.from_numpy(np.asarray(labels, np.int64))

  def logits(self, deleted) -> np.ndarray:
    with self.torch.inference_mode():
      return self.twin(self.images, deleted).numpy()

  def __call__(self, forward) -> np.ndarray:
    counts = []
    with self.torch.inference_mode():
      for row in np.asarray(forward):
        logits = self.twin(self.images, np.flatnonzero(row == 0).tolist())
        counts.append(int((logits.argmax(dim=-1) == self.labels).sum()))
    return np.asarray(counts)


def save_run(workdir: str, config, model: GatedResNet, variables) -> None:
  """Save ``variables`` as a resjax run (config.json and an orbax checkpoint at step 0)."""
  optimizer = optax.sgd(config.train.learning_rate, momentum=config.train.momentum)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                           batch_stats=variables['batch_stats'],
                           opt_state=optimizer.init(variables['params']),
                           rng=jax.random.PRNGKey(config.seed))
  checkpointing.save_config(workdir, config)
  manager = checkpointing.open_manager(workdir)
  checkpointing.save_state(manager, state)
  manager.wait_until_finished()
  manager.close()
  config_model = build_model(config.model, num_classes=model.num_classes)
  if config_model != model:
    raise ValueError(f'config.model builds {config_model}, not the model of the variables '
                     f'({model}); pass the config the model was built from.')


@dataclasses.dataclass
class ProcessSweep:
  """One fresh process per setting: start Python, restore the checkpoint, evaluate.

  Attributes:
    workdir: a run saved by ``save_run``.
    data_path: ``.npz`` with 'images' and 'labels'.
    timeout_seconds: limit for one process.
  """

  workdir: str
  data_path: str
  timeout_seconds: float

  def run_one(self, row: np.ndarray) -> dict[str, Any]:
    deleted = ','.join(str(b) for b in np.flatnonzero(np.asarray(row) == 0))
    command = [sys.executable, '-m', 'resjax.benchmarks.lesion_worker', '--workdir',
               self.workdir, '--data', self.data_path, '--delete', deleted]
    finished = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=self.timeout_seconds, env=dict(os.environ))
    if finished.returncode != 0:
      tail = ' | '.join(finished.stderr.strip().splitlines()[-3:])
      raise RuntimeError(f'the lesion worker failed for deleted blocks [{deleted}] with '
                         f'exit status {finished.returncode}: {tail}')
    return json.loads(finished.stdout.strip().splitlines()[-1])

  def __call__(self, forward) -> np.ndarray:
    return np.asarray([self.run_one(row)['correct'] for row in np.asarray(forward)])
