"""CIFAR-10 with a pre-activation ResNet-110: the recipe of the networks that
Veit et al. (2016) lesion.

SGD with Nesterov momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1
divided by 10 at epochs 81 and 122, 164 epochs, random crops of the images padded
by 4 pixels and horizontal flips. Needs an accelerator: on CPUs it takes days.
"""

from resjax.config_base import base_config


def get_config():
  config = base_config()
  config.model.family = 'cifar_resnet'
  config.model.depth = 110
  config.model.preactivation = True
  config.model.residual = True

  config.data.source = 'tfds'
  config.data.name = 'cifar10'
  config.data.augment.crop_padding = 4
  config.data.augment.flip = True

  config.train.batch_size = 128
  config.train.eval_batch_size = 500
  config.train.num_epochs = 164
  config.train.learning_rate = 0.1
  config.train.schedule = 'piecewise'
  config.train.boundaries_epochs = (81, 122)
  config.train.decay_factor = 0.1
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.weight_decay = 1e-4
  # Torch7's optim.sgd decays every parameter, BatchNorm scales and offsets included.
  config.train.weight_decay_scope = 'all'
  return config
