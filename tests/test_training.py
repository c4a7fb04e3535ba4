"""Tests of training: steps, sharding, checkpoints and resuming, variants, metrics."""

import functools
import glob
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from resjax import (checkpointing, metrics, progress, schedules, sharding, steps,
                    train_variants, training)
from resjax.config_base import base_config
from resjax.errors import CheckpointError, ConfigError, ResjaxError, TrainingError
from resjax.models import cifar_resnet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_WIDTHS = (4, 8, 8)


def tiny_config():
  """Depth 8, widths 4-8-8, on 179 training digits: 5 steps of 32 images per epoch."""
  config = base_config()
  config.model.depth = 8
  config.model.widths = TINY_WIDTHS
  config.data.source = 'digits'
  config.data.digits_test_fraction = 0.9
  config.data.augment.crop_padding = 1
  config.data.augment.flip = False
  config.train.batch_size = 32
  config.train.eval_batch_size = 256
  config.train.num_epochs = 2
  config.train.learning_rate = 0.05
  config.train.schedule = 'cosine'
  config.train.log_every_steps = 2
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 4
  config.train.keep_checkpoints = 5
  return config


def load_config_file(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs',
                                                                   f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def assert_trees_close(actual, expected, rtol, atol):
  paths = jax.tree_util.tree_leaves_with_path(expected)
  for (path, want), got in zip(paths, jax.tree_util.tree_leaves(actual)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """An uninterrupted tiny run, and how often its train step was traced."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  traces = []
  original = steps.train_step

  def counting_train_step(*args, **kwargs):
    traces.append(1)  # runs only while jax traces the step
    return original(*args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(steps, 'train_step', counting_train_step)
    summary = training.train_and_evaluate(tiny_config(), workdir)
  return {'workdir': workdir, 'summary': summary, 'traces': len(traces)}


# -------------------------------------------------------------- whole runs


def test_run_writes_summary_metrics_and_config(trained):
  workdir, summary = trained['workdir'], trained['summary']
  assert summary['steps'] == 10
  assert summary['test_examples'] == 1618
  assert 0 <= summary['test_error'] <= 1
  assert summary['images_per_second'] > 0
  with open(os.path.join(workdir, training.SUMMARY_FILE)) as f:
    assert json.load(f) == summary
  with open(os.path.join(workdir, checkpointing.CONFIG_FILE)) as f:
    assert json.load(f) == checkpointing.config_to_dict(tiny_config())
  records = metrics.read_metrics(workdir)
  train_records = [r for r in records if 'loss' in r]
  test_records = [r for r in records if 'test_error' in r]
  assert [r['step'] for r in train_records] == [2, 4, 5, 6, 8, 10]
  assert [r['step'] for r in test_records] == [5, 10]
  assert test_records[-1]['test_error'] == summary['test_error']
  for name in ('loss', 'train_error', 'learning_rate', 'grad_norm', 'param_norm',
               'images_per_second'):
    assert np.isfinite(train_records[-1][name]), name
  assert glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))


def test_tensorboard_events_hold_scalars(trained):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  path = glob.glob(os.path.join(trained['workdir'], 'tensorboard', 'events.out.tfevents.*'))[0]
  tags = set()
  for event in tf.compat.v1.train.summary_iterator(path):
    for value in event.summary.value:
      assert value.metadata.plugin_data.plugin_name == 'scalars'
      tags.add(value.tag)
  assert {'loss', 'test_error', 'learning_rate', 'grad_norm'} <= tags


def test_train_step_traced_once(trained):
  # Ten steps over two epochs, with evaluations and checkpoints between them.
  assert trained['traces'] == 1


def test_finished_run_returns_saved_summary(trained):
  config = tiny_config()
  config.train.log_every_steps = 3  # does not change the result
  assert training.train_and_evaluate(config, trained['workdir']) == trained['summary']


def test_resume_rejects_changed_config(trained):
  config = tiny_config()
  config.train.learning_rate = 0.2
  with pytest.raises(CheckpointError, match=r'train\.learning_rate: saved 0\.05, now 0\.2'):
    training.train_and_evaluate(config, trained['workdir'])


def test_killed_run_resumes_to_same_result(trained, tmp_path):
  workdir = str(tmp_path)
  # Stopped after step 6: the checkpoint of step 4 survives, steps 5 and 6 are redone.
  stopped = training.train_and_evaluate(tiny_config(), workdir, stop_after_step=6)
  assert stopped == {'steps': 6, 'stopped': True}
  assert not os.path.exists(os.path.join(workdir, training.SUMMARY_FILE))
  summary = training.train_and_evaluate(tiny_config(), workdir)
  assert summary['resumed_from_step'] == 4
  assert summary['steps'] == 10
  assert summary['test_error'] == pytest.approx(trained['summary']['test_error'], abs=1e-9)

  resumed = checkpointing.restore_run(workdir)
  uninterrupted = checkpointing.restore_run(trained['workdir'])
  assert resumed.step == uninterrupted.step == 10
  assert_trees_close(resumed.variables, uninterrupted.variables, rtol=1e-5, atol=1e-6)
  steps_logged = [r['step'] for r in metrics.read_metrics(workdir) if 'loss' in r]
  assert steps_logged == [2, 4, 5, 6, 8, 10]


def test_command_line_on_four_devices_equals_one(trained, tmp_path):
  # The command line in a process with four CPU devices, against the fixture's run on one.
  if jax.default_backend() != 'cpu':
    pytest.skip('the fixture ran on an accelerator, whose numerics differ from the CPU run')
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(textwrap.dedent(f'''
      import json
      import ml_collections

      def get_config():
        return ml_collections.ConfigDict(json.loads({tiny_config().to_json()!r}))
  '''))
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'resjax.main', f'--config={config_file}', f'--workdir={workdir}',
       '--mode=train'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'test error' in result.stdout
  with open(os.path.join(workdir, training.SUMMARY_FILE)) as f:
    summary = json.load(f)
  assert summary['num_devices'] == 4
  assert summary['test_error'] == pytest.approx(trained['summary']['test_error'], abs=2e-3)
  sharded = checkpointing.restore_run(workdir)
  single = checkpointing.restore_run(trained['workdir'])
  assert_trees_close(sharded.variables, single.variables, rtol=1e-3, atol=1e-4)


def test_mock_cifar10_streamed_steps(tmp_path):
  # Streamed through tf.data, the path of ImageNet; in-memory data is the digits' path.
  config = tiny_config()
  config.data.source = 'tfds'
  config.data.name = 'cifar10'
  config.data.in_memory = False
  config.data.stats_examples = 16
  config.data.augment.crop_padding = 4
  config.data.augment.flip = True
  config.train.batch_size = 8
  config.train.eval_batch_size = 12  # 20 test images: one full batch, one padded
  config.train.num_epochs = 1
  with tfds.testing.mock_data(num_examples=20):
    summary = training.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 2
  assert summary['test_examples'] == 20
  assert np.isfinite(summary['test_loss'])


def write_image_folder(root, images_per_class):
  """Write PNGs in ``root/<split>/<class>/``: dark images for 'dark', bright for 'bright'."""
  rng = np.random.default_rng(0)
  for split, count in images_per_class.items():
    for name, low in (('dark', 0), ('bright', 160)):
      folder = os.path.join(root, split, name)
      os.makedirs(folder)
      for i in range(count):
        pixels = rng.integers(low, low + 96, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f'{i}.png'))


def test_image_folder_short_run(tmp_path):
  root = str(tmp_path / 'images')
  write_image_folder(root, {'train': 16, 'test': 5})
  config = tiny_config()
  config.data.source = 'folder'
  config.data.path = root
  config.data.image_size = 8
  config.train.batch_size = 8
  config.train.eval_batch_size = 8  # 10 test images: one full batch, one padded
  config.train.num_epochs = 3
  summary = training.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['steps'] == 12
  assert summary['test_examples'] == 10
  assert summary['test_error'] < 0.5


def test_quickstart_loss_decreases(tmp_path):
  config = load_config_file('quickstart')
  config.train.log_every_steps = 8
  training.train_and_evaluate(config, str(tmp_path), stop_after_step=32)
  losses = [r['loss'] for r in metrics.read_metrics(str(tmp_path)) if 'loss' in r]
  assert len(losses) == 4
  assert losses[-1] < 0.5 * losses[0]


def test_nan_loss_stops_run_and_keeps_good_checkpoint(tmp_path):
  config = tiny_config()
  config.train.learning_rate = 1e8
  config.train.checkpoint_every_steps = 1
  workdir = str(tmp_path)
  with pytest.raises(TrainingError, match=r'training stopped at step \d+') as error:
    training.train_and_evaluate(config, workdir)
  bad_step = int(re.search(r'at step (\d+)', str(error.value)).group(1))
  assert not os.path.exists(os.path.join(workdir, training.SUMMARY_FILE))
  directory = checkpointing.checkpoint_directory(workdir)
  saved = sorted(int(name) for name in os.listdir(directory) if name.isdigit())
  assert all(step < bad_step for step in saved)
  if saved:
    restored = checkpointing.restore_run(workdir)
    for leaf in jax.tree_util.tree_leaves(restored.variables):
      assert np.all(np.isfinite(leaf))


def test_batch_size_check_names_fix():
  four_devices = types.SimpleNamespace(size=4)  # check_batch_size reads only mesh.size
  sharding.check_batch_size(128, four_devices, 'train.batch_size')
  with pytest.raises(ConfigError, match=r'train.batch_size=130 must be a positive multiple '
                     r'of the device count \(4\); set --config.train.batch_size=128 or 132'):
    sharding.check_batch_size(130, four_devices, 'train.batch_size')


def test_batch_size_must_divide_over_devices(tmp_path):
  config = tiny_config()
  config.train.batch_size = 0
  with pytest.raises(ConfigError, match='train.batch_size=0 must be a positive multiple'):
    training.train_and_evaluate(config, str(tmp_path))


def test_bad_warmup_rejected_before_data_and_workdir(tmp_path):
  config = tiny_config()
  config.train.warmup_epochs = 3  # longer than the 2 epochs of training
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError, match='train.warmup_epochs=3.0 must be at least 0'):
    training.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_data_error_leaves_no_empty_workdir(tmp_path):
  config = tiny_config()
  config.data.source = 'folder'
  config.data.path = str(tmp_path / 'images')
  for name in ('cat', 'dog'):  # classes, but no image in them and no test split
    (tmp_path / 'images' / 'train' / name).mkdir(parents=True)
  workdir = tmp_path / 'run'
  with pytest.raises(ResjaxError):
    training.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  kept = tmp_path / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine')
  with pytest.raises(ResjaxError):
    training.train_and_evaluate(config, str(kept))
  assert (kept / 'notes.txt').read_text() == 'mine'


# ---------------------------------------------------------------- restore_run


def test_restore_run_without_config(tmp_path):
  with pytest.raises(CheckpointError, match='config.json not found'):
    checkpointing.restore_run(str(tmp_path))


def test_restore_run_without_checkpoint(tmp_path):
  checkpointing.save_config(str(tmp_path), tiny_config())
  with pytest.raises(CheckpointError, match='no checkpoint in'):
    checkpointing.restore_run(str(tmp_path))


def test_restore_run_names_mismatching_parameter(trained):
  config = tiny_config()
  config.model.widths = (4, 8, 16)
  with pytest.raises(CheckpointError, match=r'does not match .*params/classifier/bn/bias has '
                     r'shape \(8,\) in the checkpoint, \(16,\) in the model'):
    checkpointing.restore_run(trained['workdir'], config)


def test_restore_run_reports_damaged_checkpoint(trained, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(trained['workdir'], workdir)
  variables = os.path.join(checkpointing.checkpoint_directory(workdir), '10', 'variables')
  damaged = 0
  for path in glob.glob(os.path.join(variables, '**', 'd', '*'), recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(3)
    damaged += 1
  assert damaged
  with pytest.raises(CheckpointError, match='is unreadable'):
    checkpointing.restore_run(workdir)


def test_restore_run_returns_model_and_variables(trained):
  run = checkpointing.restore_run(trained['workdir'])
  assert run.step == 10
  assert run.model.widths == TINY_WIDTHS
  logits = run.model.apply(run.variables, jnp.zeros((2, 8, 8, 1)), train=False)
  assert logits.shape == (2, 10)


def test_errors_share_base_class():
  for error in (CheckpointError, ConfigError, TrainingError):
    assert issubclass(error, ResjaxError)


# ---------------------------------------------------------------- steps


def test_eval_step_ignores_masked_images():
  model = cifar_resnet(8, widths=TINY_WIDTHS, preactivation=True, residual=True)
  config = tiny_config()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  images = jax.random.randint(jax.random.PRNGKey(1), (6, 8, 8, 1), 0, 256).astype(jnp.uint8)
  labels = jnp.arange(6, dtype=jnp.int32)
  eval_step = jax.jit(functools.partial(
      steps.eval_step, model=model, config=config, channel_mean=np.zeros(1, np.float32),
      channel_std=np.ones(1, np.float32)))
  full = eval_step(variables, None, {'images': images[:4], 'labels': labels[:4]},
                   jnp.ones(4, bool))
  padded = eval_step(variables, None, {'images': images, 'labels': labels},
                     jnp.arange(6) < 4)
  assert int(padded['count']) == 4
  assert int(padded['error_count']) == int(full['error_count'])
  np.testing.assert_allclose(padded['loss_sum'], full['loss_sum'], rtol=1e-6)


def test_batch_indices_resume_mid_epoch():
  fresh = training.batch_indices(seed=3, num_examples=20, batch_size=6, steps_in_epoch=3,
                                 start_step=0)
  all_steps = [next(fresh) for _ in range(7)]
  resumed = training.batch_indices(seed=3, num_examples=20, batch_size=6, steps_in_epoch=3,
                                   start_step=4)
  for expected in all_steps[4:]:
    np.testing.assert_array_equal(next(resumed), expected)
  epoch = np.concatenate(all_steps[:3])
  assert len(set(epoch.tolist())) == 18


# ---------------------------------------------------------------- schedules


def test_piecewise_schedule_boundaries_in_epochs():
  train = base_config().train
  train.learning_rate = 0.1
  train.boundaries_epochs = (2, 3)
  train.num_epochs = 4
  schedule = schedules.learning_rate_schedule(train, steps_in_epoch=10)
  assert float(schedule(19)) == pytest.approx(0.1)
  assert float(schedule(20)) == pytest.approx(0.01)
  assert float(schedule(30)) == pytest.approx(0.001)


def test_warmup_keeps_piecewise_boundaries():
  train = base_config().train
  train.learning_rate = 0.1
  train.boundaries_epochs = (2,)
  train.num_epochs = 4
  train.warmup_epochs = 1
  schedule = schedules.learning_rate_schedule(train, steps_in_epoch=10)
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(0.05)
  assert float(schedule(19)) == pytest.approx(0.1)
  assert float(schedule(20)) == pytest.approx(0.01)


def test_cosine_schedule_ends_at_zero():
  train = base_config().train
  train.schedule = 'cosine'
  train.num_epochs = 2
  schedule = schedules.learning_rate_schedule(train, steps_in_epoch=10)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(10)) == pytest.approx(0.05)
  assert float(schedule(20)) == pytest.approx(0.0, abs=1e-9)


def test_learning_rate_scales_with_batch():
  train = base_config().train
  train.batch_size = 1024
  train.lr_reference_batch_size = 256
  assert schedules.peak_learning_rate(train) == pytest.approx(0.4)


def test_weight_decay_only_on_kernels():
  train = base_config().train
  train.learning_rate = 1.0
  train.momentum = 0.0
  train.weight_decay = 0.5
  optimizer, _ = schedules.build_optimizer(train, steps_in_epoch=10)
  params = {'conv': {'kernel': jnp.ones(2)}, 'bn': {'scale': jnp.ones(2),
                                                     'bias': jnp.ones(2)}}
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = optimizer.update(zeros, optimizer.init(params), params)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)
  np.testing.assert_allclose(updates['bn']['bias'], 0.0)


@pytest.mark.parametrize('field, value, message', [
    ('schedule', 'linear', 'unknown train.schedule'),
    ('boundaries_epochs', (3, 2), 'must be positive and increasing'),
    ('warmup_epochs', 5.0, 'train.warmup_epochs=5.0'),
    ('weight_decay_scope', 'norms', 'unknown train.weight_decay_scope'),
])
def test_optimizer_rejects_bad_fields(field, value, message):
  train = base_config().train
  train.num_epochs = 4
  setattr(train, field, value)
  with pytest.raises(ConfigError, match=message):
    schedules.build_optimizer(train, steps_in_epoch=10)


def test_steps_per_epoch_rejects_large_batch():
  with pytest.raises(ConfigError, match='larger than the training split'):
    schedules.steps_per_epoch(100, 128)


# ---------------------------------------------------------------- variants


def variant_config(variant):
  config = base_config()
  config.train.variant = variant
  return config


def test_stochastic_depth_survival_rates():
  model = cifar_resnet(20, preactivation=True, residual=True)
  config = variant_config('stochastic_depth')
  probabilities = train_variants.survival_probabilities(model, 0.5)
  assert probabilities[-1] == pytest.approx(0.5)
  assert probabilities[0] == pytest.approx(1 - 0.5 / model.num_blocks)
  assert np.all(np.diff(probabilities) < 0)
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  forward = jax.vmap(lambda k: train_variants.train_gates(k, model, config).forward)(keys)
  assert set(np.unique(forward).tolist()) <= {0.0, 1.0}
  # 4,000 draws: the standard error of each rate is at most 0.008.
  np.testing.assert_allclose(forward.mean(axis=0), probabilities, atol=0.035)


def test_stochastic_depth_test_gates_scale_branches():
  model = cifar_resnet(20, preactivation=True, residual=True)
  gates = train_variants.eval_gates(model, variant_config('stochastic_depth'))
  np.testing.assert_allclose(gates.forward, train_variants.survival_probabilities(model, 0.5))
  np.testing.assert_array_equal(gates.backward_branch, 1.0)


def test_short_paths_open_exactly_k_branches():
  model = cifar_resnet(110, preactivation=True, residual=True)
  config = variant_config('short_paths')
  keys = jax.random.split(jax.random.PRNGKey(0), 500)
  gates = jax.vmap(lambda k: train_variants.train_gates(k, model, config))(keys)
  np.testing.assert_array_equal(gates.backward_branch.sum(axis=1), 23)
  np.testing.assert_array_equal(gates.backward_shortcut, 1.0)
  np.testing.assert_array_equal(gates.forward, 1.0)
  # Every block is chosen about 23/54 of the time.
  np.testing.assert_allclose(gates.backward_branch.mean(axis=0), 23 / 54, atol=0.1)
  np.testing.assert_array_equal(
      train_variants.eval_gates(model, config).forward, model.default_gates().forward)


def test_short_paths_gradient_reaches_only_open_branches():
  model = cifar_resnet(8, widths=TINY_WIDTHS, preactivation=True, residual=True)
  config = variant_config('short_paths')
  config.train.short_path_blocks = 2
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  gates = train_variants.train_gates(jax.random.PRNGKey(3), model, config)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                            images, gates, train=True)
    return jnp.sum(logits ** 2)

  grads = jax.jit(jax.grad(loss))(variables['params'])
  for block in range(model.num_blocks):
    norm = optax.global_norm(model.block_parameters({'params': grads, 'batch_stats': grads},
                                                    block)['params'])
    assert (float(norm) > 0) == bool(gates.backward_branch[block]), block


def test_stochastic_depth_train_step_runs():
  # Short-path gates go through a jitted gradient in the test of their branches.
  config = tiny_config()
  config.train.variant = 'stochastic_depth'
  model = cifar_resnet(8, widths=TINY_WIDTHS, preactivation=True, residual=True)
  optimizer, _ = schedules.build_optimizer(config.train, steps_in_epoch=5)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, (8, 8, 1))
  train_step = jax.jit(functools.partial(
      steps.train_step, model=model, optimizer=optimizer, config=config,
      channel_mean=np.zeros(1, np.float32), channel_std=np.ones(1, np.float32)))
  batch = {'images': jnp.full((4, 8, 8, 1), 128, jnp.uint8),
           'labels': jnp.arange(4, dtype=jnp.int32)}
  new_state, step_metrics = train_step(state, batch)
  assert int(new_state.step) == 1
  assert np.isfinite(float(step_metrics['loss']))
  assert float(step_metrics['grad_norm']) > 0


@pytest.mark.parametrize('variant, field, value, message', [
    ('dropout', None, None, 'unknown train.variant'),
    ('stochastic_depth', 'survival_prob_last', 0.0, 'survival_prob_last must be in'),
    ('short_paths', 'short_path_blocks', 55, 'short_path_blocks must be between 1 and'),
])
def test_variant_rejects_bad_settings(variant, field, value, message):
  model = cifar_resnet(110, preactivation=True, residual=True)
  config = variant_config(variant)
  if field:
    setattr(config.train, field, value)
  with pytest.raises(ConfigError, match=message):
    train_variants.check_variant(model, config)


def test_variant_rejects_plain_network():
  model = cifar_resnet(20, preactivation=True, residual=False)
  with pytest.raises(ConfigError, match='plain network'):
    train_variants.check_variant(model, variant_config('short_paths'))


# ---------------------------------------------------------------- metrics, progress


def test_drop_metrics_after_step(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in (1, 2, 3):
    writer.write(step, {'loss': 1.0 / step, 'grad_norm': float('nan')})
  writer.close()
  metrics.drop_metrics_after(str(tmp_path), 2)
  records = metrics.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [1, 2]
  assert records[0]['grad_norm'] is None  # NaN is written as null


def test_progress_rate_and_eta():
  now = [0.0]
  stream = io.StringIO()
  bar = progress.Progress(100, 'train', unit='steps', stream=stream, interval_s=0,
                          clock=lambda: now[0])
  bar.update(10, loss=2.5)  # includes compilation: not counted in the rate
  now[0] = 5.0
  bar.update(10, loss=1.25)
  assert bar.rate() == pytest.approx(2.0)
  assert bar.eta_seconds() == pytest.approx(40.0)
  bar.close()
  lines = stream.getvalue().splitlines()
  assert lines[0] == 'train 10/100 (10.0%), loss 2.5, ETA ?'
  assert lines[-1] == 'train 20/100 (20.0%), loss 1.25, 2 steps/s, ETA 0:40'
  assert len(lines) == 2


def test_format_duration():
  assert progress.format_duration(59.6) == '1:00'
  assert progress.format_duration(3725) == '1:02:05'


def test_config_differences_ignore_neutral_fields():
  saved = checkpointing.config_to_dict(tiny_config())
  config = tiny_config()
  config.train.log_every_steps = 7
  config.analysis.seed = 5
  assert checkpointing.differing_fields(saved, config) == []
  config.model.depth = 14
  config.train.nesterov = False
  assert checkpointing.differing_fields(saved, config) == ['model.depth', 'train.nesterov']
