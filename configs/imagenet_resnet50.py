"""ImageNet (ILSVRC 2012) with a ResNet-50, the standard 90-epoch recipe.

For accelerators. The images are streamed from tfds ``imagenet2012``, which needs
the downloaded archives in ``data.manual_dir``; set it on the command line
(``--config.data.manual_dir=<dir>``). Learning rate 0.1 for a batch of 256, scaled
linearly with the batch size, divided by 10 at epochs 30, 60 and 80.
"""

from resjax.config_base import base_config


def get_config():
  config = base_config()
  config.model.family = 'imagenet_resnet'
  config.model.depth = 50
  config.model.preactivation = False

  config.data.source = 'tfds'
  config.data.name = 'imagenet2012'
  config.data.test_split = 'validation'
  config.data.image_size = 224
  config.data.in_memory = False
  config.data.augment.crop_padding = 0
  config.data.augment.flip = True

  config.train.batch_size = 256
  config.train.eval_batch_size = 512
  config.train.num_epochs = 90
  config.train.learning_rate = 0.1
  config.train.lr_reference_batch_size = 256
  config.train.schedule = 'piecewise'
  config.train.boundaries_epochs = (30, 60, 80)
  config.train.decay_factor = 0.1
  config.train.momentum = 0.9
  config.train.nesterov = False
  config.train.weight_decay = 1e-4
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 5000
  return config
