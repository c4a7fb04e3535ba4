"""End-to-end tests of ``run_analyses`` on workdirs written by ``resjax.checkpointing``.

The runs are checkpoints of freshly initialised networks: training even a few steps
would compile the training step, which costs more than all the analyses here together.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resjax import checkpointing, schedules, steps
from resjax.analysis import ANALYSES, run_analyses
from resjax.benchmarks import weights
from resjax.config_base import base_config
from resjax.data import image_shape_for, num_classes_for
from resjax.errors import CheckpointError, ConfigError
from resjax.lesion.settings_file import SettingsFileError
from resjax.models import build_model
from resjax.results import read_json

LESION_NAMES = ('lesion_single', 'lesion_multi', 'reorder', 'duplicate', 'user_settings')


def _config(residual=True):
  config = base_config()
  config.model.depth = 14
  config.model.residual = residual
  config.data.source = 'digits'
  config.data.augment.crop_padding = 1
  config.data.augment.flip = False
  config.train.batch_size = 128
  config.train.eval_batch_size = 360
  analysis = config.analysis
  analysis.names = LESION_NAMES + ('path_lengths',)
  analysis.num_examples = 48
  analysis.batch_size = 32
  analysis.memory_budget_mb = 64
  analysis.lesion_multi_max_k = 3
  analysis.lesion_multi_samples = 2
  analysis.reorder_max_swaps = 2
  analysis.reorder_samples = 2
  analysis.duplicate_max_blocks = 2
  analysis.duplicate_samples = 1
  analysis.recalibration_examples = 40
  analysis.recalibration_batch_size = 16
  return config


def _save_untrained(workdir, config):
  """Write the config and a step-0 checkpoint of random variables of ``config``'s model."""
  model = build_model(config.model, num_classes_for(config.data))
  variables = weights.random_variables(model, 0, image_shape_for(config.data))
  optimizer, _ = schedules.build_optimizer(config.train, steps_in_epoch=1)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                           batch_stats=variables['batch_stats'],
                           opt_state=optimizer.init(variables['params']),
                           rng=jax.random.PRNGKey(0))
  checkpointing.save_config(workdir, config)
  manager = checkpointing.open_manager(workdir)
  checkpointing.save_state(manager, state)
  manager.wait_until_finished()
  manager.close()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Workdirs of a residual network and of a plain one, each with a step-0 checkpoint."""
  root = tmp_path_factory.mktemp('runs')
  workdir = str(root / 'resnet')
  _save_untrained(workdir, _config())
  plain = str(root / 'plain')
  _save_untrained(plain, _config(residual=False))
  return workdir, plain


def _copy(workdir, tmp_path):
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('analyses', 'figures'))
  return copy


def _settings_file(tmp_path, rows):
  path = str(tmp_path / 'gates.csv')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(','.join(str(v) for v in row) for row in rows) + '\n')
  return path


def _result_files(workdir):
  analyses = os.path.join(workdir, 'analyses')
  return sorted(os.listdir(analyses)) if os.path.isdir(analyses) else []


def test_run_analyses_end_to_end(runs, tmp_path):
  workdir, plain = runs
  workdir = _copy(workdir, tmp_path)
  config = _config()
  config.analysis.plain_workdir = plain
  rows = np.ones((2, 6))
  rows[1, [1, 3]] = 0
  config.analysis.settings_file = _settings_file(tmp_path, rows)

  written = run_analyses(config, workdir)

  for name in LESION_NAMES:
    assert os.path.join(workdir, 'analyses', f'{name}.json') in written
    assert os.path.exists(os.path.join(workdir, 'analyses', f'{name}.csv'))
    assert os.path.exists(os.path.join(workdir, 'figures', f'{name}.png'))
  assert os.path.exists(os.path.join(workdir, 'analyses', 'path_lengths.json'))

  single = read_json(os.path.join(workdir, 'analyses', 'lesion_single.json'))
  assert 0 <= single['baseline_error'] <= 1
  assert [block['index'] for block in single['blocks']] == list(range(6))
  assert [block['downsampling'] for block in single['blocks']] == [
      False, False, True, False, True, False]
  assert {'index', 'stage', 'downsampling', 'error'} <= set(single['blocks'][0])
  assert [block['index'] for block in single['plain']['blocks']] == [0, 1, 3, 5]
  assert single['num_examples'] == 48

  multi = read_json(os.path.join(workdir, 'analyses', 'lesion_multi.json'))
  assert multi['k'] == [1, 2, 3]
  assert multi['samples_per_k'] == [2, 2, 2]
  assert [len(errors) for errors in multi['errors']] == [2, 2, 2]
  assert len(multi['mean_error']) == len(multi['std_error']) == 3
  assert 'baseline_error' in multi

  reorder = read_json(os.path.join(workdir, 'analyses', 'reorder.json'))
  assert reorder['swaps'] == [1, 1, 2, 2]
  assert len(reorder['kendall_tau']) == len(reorder['error']) == 4
  assert all(-1 <= tau <= 1 for tau in reorder["kendall_tau"])

  duplicate = read_json(os.path.join(workdir, 'analyses', 'duplicate.json'))
  assert duplicate['blocks_repeated'] == [1, 2]
  assert [len(blocks) for blocks in duplicate['repeated_blocks']] == [1, 2]
  assert len(duplicate['error']) == 2

  user = read_json(os.path.join(workdir, 'analyses', 'user_settings.json'))
  assert len(user['error']) == 2
  assert user['error'][0] == pytest.approx(user['baseline_error'])


def test_recalibrated_error_reported(runs, tmp_path):
  workdir, _ = runs
  workdir = _copy(workdir, tmp_path)
  config = _config()
  config.analysis.recalibrate_bn = True
  run_analyses(config, workdir, names=['lesion_single'])

  single = read_json(os.path.join(workdir, 'analyses', 'lesion_single.json'))
  assert 0 <= single['recalibrated_baseline_error'] <= 1
  for block in single['blocks']:
    assert 0 <= block['recalibrated_error'] <= 1
  with open(os.path.join(workdir, 'analyses', 'lesion_single.csv'), encoding='utf-8') as f:
    assert f.readline().strip().endswith('recalibrated_error')


def test_rerun_skips_finished(runs, tmp_path):
  workdir, _ = runs
  workdir = _copy(workdir, tmp_path)
  config = _config()
  config.analysis.names = ('lesion_single', 'reorder', 'path_lengths')
  first = run_analyses(config, workdir)
  assert first
  first_timings = read_json(os.path.join(workdir, 'timings.json'))
  stamps = {name: os.path.getmtime(os.path.join(workdir, 'analyses', name))
            for name in _result_files(workdir)}

  assert run_analyses(config, workdir) == []
  assert stamps == {name: os.path.getmtime(os.path.join(workdir, 'analyses', name))
                    for name in _result_files(workdir)}

  os.remove(os.path.join(workdir, 'figures', 'lesion_single.png'))
  config.analysis.reorder_samples = 3
  written = run_analyses(config, workdir)
  assert sorted(os.path.basename(path) for path in written) == [
      'lesion_single.png', 'reorder.json', 'reorder.png']
  assert len(read_json(os.path.join(workdir, 'analyses', 'reorder.json'))['error']) == 6
  # Rerunning reorder replaces its time only; the others keep theirs.
  timings = read_json(os.path.join(workdir, 'timings.json'))
  assert set(timings) >= {'analysis inputs', 'analysis lesion_single', 'analysis reorder',
                          'analysis path_lengths'}
  assert all(seconds > 0 for seconds in timings.values())
  assert timings['analysis lesion_single'] == first_timings['analysis lesion_single']


def test_unknown_name_lists_valid(runs, tmp_path):
  workdir, _ = runs
  with pytest.raises(ConfigError, match='lesion_multi') as error:
    run_analyses(_config(), workdir, names=['lesion_singel'])
  for name in ANALYSES:
    assert name in str(error.value)


@pytest.mark.parametrize('content, message', [
    ('1,1,1\n', r'line 1 has 3 values, expected 6'),
    ('1,1,1,1,1,1\n1,1,one,1,1,1\n', r"line 2, column 3 is 'one', not a number"),
    ('', r'is empty'),
    (None, r'not found'),
])
def test_bad_settings_file_writes_nothing(runs, tmp_path, content, message):
  workdir, _ = runs
  workdir = _copy(workdir, tmp_path)
  path = tmp_path / 'gates.csv'
  if content is not None:
    path.write_text(content)
  config = _config()
  config.analysis.names = ('lesion_single', 'user_settings')
  config.analysis.settings_file = str(path)
  with pytest.raises(SettingsFileError, match=message) as error:
    run_analyses(config, workdir)
  assert str(path) in str(error.value)
  assert _result_files(workdir) == []


def test_missing_checkpoint(tmp_path):
  with pytest.raises(CheckpointError):
    run_analyses(_config(), str(tmp_path / 'empty'))
  assert _result_files(str(tmp_path / 'empty')) == []


def test_checkpoint_of_other_model(runs, tmp_path):
  workdir, _ = runs
  workdir = _copy(workdir, tmp_path)
  config = _config()
  config.model.depth = 20
  with pytest.raises(CheckpointError, match='does not match'):
    run_analyses(config, workdir)
  assert _result_files(workdir) == []


def test_truncated_checkpoint(runs, tmp_path):
  workdir, _ = runs
  workdir = _copy(workdir, tmp_path)
  step_dir = os.path.join(checkpointing.checkpoint_directory(workdir),
                          os.listdir(checkpointing.checkpoint_directory(workdir))[0])
  for folder, _, files in os.walk(os.path.join(step_dir, 'variables')):
    for name in files:
      with open(os.path.join(folder, name), 'r+b') as f:
        f.truncate(max(0, os.path.getsize(os.path.join(folder, name)) // 3))
  with pytest.raises(CheckpointError):
    run_analyses(_config(), workdir)
  assert _result_files(workdir) == []


def test_reorder_needs_two_interchangeable_blocks(tmp_path):
  workdir = str(tmp_path / 'resnet8')
  config = _config()
  config.model.depth = 8
  _save_untrained(workdir, config)
  with pytest.raises(ConfigError, match='reorder needs a stage with two interchangeable'):
    run_analyses(config, workdir, names=['lesion_single', 'reorder'])
  assert _result_files(workdir) == []
