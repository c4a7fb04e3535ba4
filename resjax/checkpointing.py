"""Checkpoints of a run's workdir: orbax ``CheckpointManager`` and the saved config.

Layout of a workdir:

- ``config.json``: the whole config of the run, written when training starts.
- ``checkpoints/<step>/variables``: params and batch_stats, all the analyses need.
- ``checkpoints/<step>/training``: optimizer state, step and rng, for resuming.

``restore_run`` is the entry point for the analyses: it rebuilds the model from the
saved config and restores the variables of the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from resjax import data as data_lib
from resjax import sharding
from resjax.errors import CheckpointError, ConfigError
from resjax.models import build_model
from resjax.models.resnet import GatedResNet
from resjax.results import write_text_atomic
from resjax.steps import TrainState

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'

# Config fields (or whole sections) that do not change the trained network, so a run
# may resume with other values. Everything else must match the saved config.
RESULT_NEUTRAL_FIELDS = (
    'train.log_every_steps',
    'train.eval_every_epochs',
    'train.eval_batch_size',
    'train.checkpoint_every_steps',
    'train.keep_checkpoints',
    'model.unroll_stacks',
    'data.path',
    'data.data_dir',
    'data.manual_dir',
    'data.cache_dir',
    'data.num_workers',
    'data.download',
    'distributed',
    'analysis',
    'report',
)


# ------------------------------------------------------------------------ config


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Return the config as plain JSON values (tuples become lists)."""
  return json.loads(config.to_json())


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Write ``<workdir>/config.json`` (process 0 only)."""
  if jax.process_index() == 0:
    text = json.dumps(config_to_dict(config), indent=2, sort_keys=True) + '\n'
    write_text_atomic(os.path.join(workdir, CONFIG_FILE), text)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Read ``<workdir>/config.json`` as a ConfigDict."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f'{path} not found: {workdir} is not the workdir of a training '
                          'run. Train first (--mode=train) or pass --config.')
  try:
    with open(path, encoding='utf-8') as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, json.JSONDecodeError) as error:
    raise CheckpointError(f'cannot read {path}: {error}. Restore the file, or pass '
                          '--config with the config the run was trained with.') from error


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{name}.'))
    else:
      flat[name] = value
  return flat


def _is_neutral(field: str) -> bool:
  return any(field == neutral or field.startswith(neutral + '.')
             for neutral in RESULT_NEUTRAL_FIELDS)


def differing_fields(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """Return the fields, other than RESULT_NEUTRAL_FIELDS, where two configs differ.

  Args:
    saved: the saved config as plain JSON values.
    config: the config of the new run.
  """
  old = _flatten(saved)
  new = _flatten(config_to_dict(config))
  return sorted(field for field in set(old) | set(new)
                if not _is_neutral(field) and old.get(field, '<missing>')
                != new.get(field, '<missing>'))


def check_resume_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raise CheckpointError when the workdir's saved config differs from ``config``.

  Only fields that change the trained network count; see RESULT_NEUTRAL_FIELDS.
  A workdir without a saved config passes.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  saved = config_to_dict(load_config(workdir))
  fields = differing_fields(saved, config)
  if fields:
    old, new = _flatten(saved), _flatten(config_to_dict(config))
    listed = '; '.join(f'{f}: saved {old.get(f, "<missing>")!r}, now {new.get(f, "<missing>")!r}'
                      for f in fields[:5])
    more = f' (and {len(fields) - 5} more)' if len(fields) > 5 else ''
    raise CheckpointError(
        f'the config differs from the one {workdir} was trained with, in fields that '
        f'change the result: {listed}{more}. Use a new --workdir, or rerun with the same '
        f'--config file and overrides as the first run (recorded in {path}).')


# ------------------------------------------------------------------- checkpoints


def checkpoint_directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def open_manager(workdir: str, *, checkpoint_every_steps: int = 1, keep_checkpoints: int = 1,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """Open the CheckpointManager of ``<workdir>/checkpoints``.

  Args:
    workdir: the run's folder.
    checkpoint_every_steps: the save interval that orbax records. The training loop
      applies it itself, because orbax's policy would also save the first step.
    keep_checkpoints: how many of the latest checkpoints are kept.
    read_only: open without creating or deleting anything (for restoring).
  """
  if read_only:
    # Interval and retention apply to saving only, and orbax warns when they are set here.
    options = ocp.CheckpointManagerOptions(save_interval_steps=0, create=False,
                                           read_only=True)
  else:
    if checkpoint_every_steps <= 0:
      raise ConfigError(f'train.checkpoint_every_steps must be positive, got '
                        f'{checkpoint_every_steps}.')
    if keep_checkpoints <= 0:
      raise ConfigError(f'train.keep_checkpoints must be positive, got {keep_checkpoints}.')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep_checkpoints,
                                           save_interval_steps=checkpoint_every_steps)
  # Named handlers let a fresh manager read an item's metadata before any restore.
  handlers = {'variables': ocp.StandardCheckpointHandler(),
              'training': ocp.StandardCheckpointHandler()}
  if not read_only:
    return ocp.CheckpointManager(checkpoint_directory(workdir), options=options,
                                 item_handlers=handlers)
  # Orbax warns on every read-only open, and every restore here opens read-only. The
  # warning would appear on each analysis run without telling the user anything.
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return ocp.CheckpointManager(checkpoint_directory(workdir), options=options,
                                 item_handlers=handlers)
  finally:
    logging.set_verbosity(verbosity)


def save_state(manager: ocp.CheckpointManager, state: TrainState) -> bool:
  """Save ``state`` as the checkpoint of step ``state.step``; return whether it saved.

  The caller decides when to save, so this saves with ``force``. A step that has a
  checkpoint already is not saved again. Saving is asynchronous, and
  ``manager.wait_until_finished()`` waits for it.
  """
  step = int(state.step)
  if step in manager.all_steps():
    return False
  training = {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}
  return manager.save(step, args=ocp.args.Composite(
      variables=ocp.args.StandardSave(state.variables),
      training=ocp.args.StandardSave(training)), force=True)


def _shape_of(leaf: Any) -> tuple[int, ...] | None:
  shape = getattr(leaf, 'shape', None)
  return None if shape is None else tuple(shape)


def _path_name(path: tuple[Any, ...]) -> str:
  # Dict keys, sequence indices and named-tuple fields all become plain names, because
  # orbax's metadata stores named tuples (optax states) as dicts.
  parts = []
  for key in path:
    for attribute in ('key', 'idx', 'name'):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def first_mismatch(saved: Any, expected: Any) -> str | None:
  """Describe the first leaf where two trees differ in structure or shape, or None."""
  saved_leaves = {_path_name(p): _shape_of(v)
                  for p, v in jax.tree_util.tree_leaves_with_path(saved)}
  expected_leaves = {_path_name(p): _shape_of(v)
                     for p, v in jax.tree_util.tree_leaves_with_path(expected)}
  # Parameters first, because their names describe a wrong model best.
  names = sorted(set(saved_leaves) | set(expected_leaves),
                 key=lambda name: (not name.startswith('params'), name))
  for name in names:
    if name not in saved_leaves:
      return f'{name} is missing from the checkpoint'
    if name not in expected_leaves:
      return f'the checkpoint has {name}, which the model does not'
    if saved_leaves[name] != expected_leaves[name]:
      return (f'{name} has shape {saved_leaves[name]} in the checkpoint, '
              f'{expected_leaves[name]} in the model')
  return None


def _step_path(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def _saved_tree(manager: ocp.CheckpointManager, step: int, item: str) -> Any:
  """Read the saved tree of one item (its leaves carry shapes), wrapping read errors."""
  try:
    metadata = manager.item_metadata(step)[item]
  except Exception as error:  # orbax raises many kinds for a damaged checkpoint
    raise _unreadable(manager, step, error) from error
  if metadata is None:
    raise _unreadable(manager, step, f'item {item!r} is missing')
  return getattr(metadata, 'tree', metadata)


def _unreadable(manager: ocp.CheckpointManager, step: int, error: Any) -> CheckpointError:
  path = _step_path(manager, step)
  # Orbax errors can carry a whole TensorStore spec; the first line names the cause.
  cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else ''
  return CheckpointError(f'the checkpoint {path} is unreadable. Delete that folder to fall '
                         'back on the previous checkpoint, or train again in a new workdir. '
                         f'Cause: {type(error).__name__}: {cause}')


def _restore_items(manager: ocp.CheckpointManager, step: int,
                   targets: dict[str, Any], what: str) -> dict[str, Any]:
  for item, target in targets.items():
    mismatch = first_mismatch(_saved_tree(manager, step, item), target)
    if mismatch:
      raise CheckpointError(f'the checkpoint {_step_path(manager, step)} does not match '
                            f'{what}: {mismatch}. Restore with the config the run was '
                            'trained with.')
  try:
    return manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.StandardRestore(target) for item, target in targets.items()}))
  except Exception as error:  # orbax raises many kinds for a damaged checkpoint
    raise _unreadable(manager, step, error) from error


def restore_state(manager: ocp.CheckpointManager, abstract_state: TrainState,
                  step: int) -> TrainState:
  """Restore the whole training state of ``step``.

  Args:
    manager: from ``open_manager``.
    abstract_state: a TrainState of ``jax.ShapeDtypeStruct`` leaves whose shardings
      place the restored arrays.
    step: a step in ``manager.all_steps()``.
  """
  variables = {'params': abstract_state.params, 'batch_stats': abstract_state.batch_stats}
  training = {'step': abstract_state.step, 'opt_state': abstract_state.opt_state,
              'rng': abstract_state.rng}
  restored = _restore_items(manager, step, {'variables': variables, 'training': training},
                            'the model and optimizer of the config')
  return TrainState(step=restored['training']['step'],
                    params=restored['variables']['params'],
                    batch_stats=restored['variables']['batch_stats'],
                    opt_state=restored['training']['opt_state'],
                    rng=restored['training']['rng'])


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A trained network, ready for evaluation.

  Attributes:
    config: the run's config.
    model: the network the config describes.
    variables: ``{'params', 'batch_stats'}`` of the checkpoint, replicated on every
      device.
    step: the optimizer step of the checkpoint.
  """

  config: ml_collections.ConfigDict
  model: GatedResNet
  variables: dict[str, Any]
  step: int


def abstract_variables(model: GatedResNet, image_shape: tuple[int, int, int],
                       sharding: jax.sharding.Sharding | None = None) -> dict[str, Any]:
  """Return the shapes and dtypes of ``model.init`` for images of ``image_shape``."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  return jax.tree_util.tree_map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), shapes)


def restore_run(workdir: str, config: ml_collections.ConfigDict | None = None) -> RestoredRun:
  """Rebuild the model of a run and restore the variables of its latest checkpoint.

  Args:
    workdir: the run's folder.
    config: the run's config; None reads ``<workdir>/config.json``.

  Raises:
    CheckpointError: no config or checkpoint in ``workdir``, a checkpoint that does
      not match the config's model, or a damaged checkpoint.
  """
  if config is None:
    config = load_config(workdir)
  model = build_model(config.model, data_lib.num_classes_for(config.data))
  directory = checkpoint_directory(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f'no checkpoint in {workdir} ({directory} not found). Train '
                          'first with --mode=train and this --workdir.')
  manager = open_manager(workdir, read_only=True)
  try:
    step = manager.latest_step()
    if step is None:
      raise CheckpointError(f'no finished checkpoint in {directory}. Train first with '
                            '--mode=train and this --workdir.')
    target = abstract_variables(model, data_lib.image_shape_for(config.data),
                                sharding.replicated(sharding.make_mesh()))
    restored = _restore_items(manager, step, {'variables': target},
                              f'the model of the config ({config.model.family} depth '
                              f'{config.model.depth})')
  finally:
    manager.close()
  return RestoredRun(config=config, model=model, variables=restored['variables'], step=step)
