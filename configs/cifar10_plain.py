"""CIFAR-10 with the plain 110-layer network: the ResNet-110 recipe without skips.

The contrast for the lesion studies: deleting a unit of a plain network breaks it,
where a residual network degrades smoothly.
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
  config.model.residual = False
  return config
