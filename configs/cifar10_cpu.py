"""CIFAR-10 on two CPU cores: the whole pipeline on real images, without an accelerator.

A pre-activation ResNet-20 (9 blocks) trained for 6 epochs (2,340 steps) with a cosine
schedule, then every analysis on a seeded 2,000-image subset of the test set. The
ResNet-110 that Veit et al. (2016) study needs an accelerator
(configs/cifar10_resnet110.py). Reads CIFAR-10 from tfds; to read an image folder of
CIFAR-10 instead, pass --config.data.source=folder --config.data.path=<root>.

Measured on the CIFAR-10 image folder: 20.97% test error after 44 minutes of training
on 2 CPU cores that other jobs shared (load average 5-8), at about 0.8 steps/s.
"""

from resjax.config_base import base_config


def get_config():
  config = base_config()
  config.model.depth = 20
  config.model.preactivation = True

  config.data.source = 'tfds'
  config.data.name = 'cifar10'

  config.train.batch_size = 128
  config.train.eval_batch_size = 1000
  config.train.num_epochs = 6
  config.train.learning_rate = 0.1
  config.train.schedule = 'cosine'
  config.train.warmup_epochs = 0.5
  config.train.eval_every_epochs = 2
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 500

  # The analyses evaluate hundreds of settings; a test subset keeps them to minutes.
  config.analysis.num_examples = 2000
  config.analysis.batch_size = 500
  config.analysis.lesion_multi_samples = 20
  config.analysis.reorder_samples = 20
  config.analysis.path_samples = 100
  config.analysis.path_batch_size = 32
  return config
