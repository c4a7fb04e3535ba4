"""CIFAR-10 ResNet-110 trained with stochastic depth (Huang et al., 2016).

Each step drops block l with probability 1 - p_l, where p_l falls linearly from 1 at
the input to 0.5 at the last block. At test time each branch is scaled by p_l.
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
  config.train.variant = 'stochastic_depth'
  config.train.survival_prob_last = 0.5
  return config
