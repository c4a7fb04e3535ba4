"""CIFAR-10 ResNet-110 trained on short paths only (Veit et al., 2016).

Each step lets the gradient back through the branches of 23 of the 54 blocks, chosen
at random, and through every shortcut, so the gradient reaches the parameters only
along paths of at most 23 branches. The forward pass is the ordinary network.
"""

import importlib.util
import pathlib


def _base_config():
  # Loaded by path, so the file works wherever Python runs, not only from the repo root.
  path = pathlib.Path(__file__).with_name('cifar10_resnet110.py')
  spec = importlib.util.spec_from_file_location('cifar10_resnet110', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _base_config()
  config.train.variant = 'short_paths'
  config.train.short_path_blocks = 23
  return config
