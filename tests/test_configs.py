"""Every file in configs/ loads, builds its model and its optimizer."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from resjax import checkpointing, data, schedules, train_variants
from resjax.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name):
  return load(os.path.join(REPO, 'configs', f'{name}.py')).get_config()


def test_config_files_found():
  names = {os.path.basename(path) for path in CONFIG_FILES}
  assert {'quickstart.py', 'cifar10_resnet110.py', 'cifar10_plain.py',
          'cifar10_stochastic_depth.py', 'cifar10_short_paths.py', 'cifar10_cpu.py',
          'imagenet_resnet50.py', 'imagenet_resnet200.py'} <= names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_config_builds_model_and_optimizer(path):
  module = load(path)
  assert module.__doc__ and module.__doc__.strip(), 'each config says what it is for'
  config = module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)

  model = build_model(config.model, data.num_classes_for(config.data))
  image_shape = data.image_shape_for(config.data)
  # Shapes only: ImageNet-size models are never initialised for real here.
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *image_shape)), train=False),
                          variables)
  assert logits.shape == (2, model.num_classes)

  train_variants.check_variant(model, config)
  train_variants.eval_gates(model, config)
  optimizer, schedule = schedules.build_optimizer(config.train, steps_in_epoch=100)
  jax.eval_shape(optimizer.init, variables['params'])
  assert float(schedule(0)) >= 0
  assert config.train.eval_batch_size > 0
  assert config.train.batch_size > 0
  # config.json round trip: a saved config compares equal to the one it came from.
  saved = checkpointing.config_to_dict(config)
  assert checkpointing.differing_fields(saved, ml_collections.ConfigDict(saved)) == []


def test_resnet110_recipe():
  config = load_config('cifar10_resnet110')
  train = config.train
  assert (config.model.depth, config.model.preactivation, config.model.residual) == (
      110, True, True)
  assert (train.batch_size, train.learning_rate, train.num_epochs) == (128, 0.1, 164)
  assert tuple(train.boundaries_epochs) == (81, 122)
  assert train.decay_factor == 0.1
  assert (train.momentum, train.nesterov, train.weight_decay) == (0.9, True, 1e-4)
  assert (config.data.augment.crop_padding, config.data.augment.flip) == (4, True)
  schedule = schedules.learning_rate_schedule(train, steps_in_epoch=391)
  assert float(schedule(81 * 391 - 1)) == pytest.approx(0.1)
  assert float(schedule(81 * 391)) == pytest.approx(0.01)
  assert float(schedule(122 * 391)) == pytest.approx(0.001)


def test_variant_configs_change_only_their_fields():
  base = checkpointing.config_to_dict(load_config('cifar10_resnet110'))
  expected = {
      'cifar10_plain': ['model.residual'],
      'cifar10_stochastic_depth': ['train.variant'],
      'cifar10_short_paths': ['train.variant'],
  }
  for name, fields in expected.items():
    assert checkpointing.differing_fields(base, load_config(name)) == fields, name


def test_short_paths_config_opens_23_of_54_blocks():
  config = load_config('cifar10_short_paths')
  model = build_model(config.model, 10)
  assert model.num_blocks == 54
  assert config.train.short_path_blocks == 23


def test_imagenet_configs_stream_and_scale_learning_rate():
  for name, depth in (('imagenet_resnet50', 50), ('imagenet_resnet200', 200)):
    config = load_config(name)
    assert config.model.depth == depth
    assert config.data.name == 'imagenet2012'
    assert not config.data.in_memory
    assert config.data.image_size == 224
    assert config.train.batch_size == 256
    assert config.train.num_epochs == 90
    assert schedules.peak_learning_rate(config.train) == pytest.approx(0.1)
    config.train.batch_size = 1024
    assert schedules.peak_learning_rate(config.train) == pytest.approx(0.4)


def test_cpu_config_accepts_image_folder():
  config = load_config('cifar10_cpu')
  config.data.source = 'folder'
  config.data.path = '/data/cifar10'
  assert data.image_shape_for(config.data) == (32, 32, 3)
