"""ImageNet with a pre-activation ResNet-200 (He et al., 2016), the 90-epoch recipe.

The deepest ImageNet network here (66 blocks), for path studies at ImageNet scale.
Everything else as in ``imagenet_resnet50.py``.
"""

import importlib.util
import pathlib


def _base_config():
  # Loaded by path, so the file works wherever Python runs, not only from the repo root.
  path = pathlib.Path(__file__).with_name('imagenet_resnet50.py')
  spec = importlib.util.spec_from_file_location('imagenet_resnet50', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _base_config()
  config.model.depth = 200
  config.model.preactivation = True
  return config
