"""Quickstart: a pre-activation ResNet-32 on the scikit-learn digits, no download needed.

The whole job (train, every analysis, report) in a few minutes on two CPU cores. 15
blocks are enough for the ensemble behaviour to show. On a run of this config, single
deletions in the second and third stages left the test error between 0.8% and 3.6%
(baseline 1.1%), while the first blocks and the downsampling blocks hurt. The digits are 8x8
grayscale images (1,437 for training, 360 held out), so random crops pad by one pixel
and there are no flips.
"""

from resjax.config_base import base_config


def get_config():
  config = base_config()
  config.model.depth = 32

  config.data.source = 'digits'
  config.data.augment.crop_padding = 1
  config.data.augment.flip = False  # a mirrored digit is another symbol

  config.train.batch_size = 128
  config.train.eval_batch_size = 360
  config.train.num_epochs = 30
  config.train.learning_rate = 0.1
  config.train.schedule = 'cosine'
  config.train.warmup_epochs = 1.0
  config.train.log_every_steps = 20
  config.train.eval_every_epochs = 5
  config.train.checkpoint_every_steps = 110

  config.analysis.batch_size = 360
  config.analysis.lesion_multi_samples = 10
  config.analysis.reorder_samples = 10
  # Each count of repeated blocks spread over the stages gives new order lengths, and
  # each set of lengths compiles its own program; 3 blocks keep that to seconds.
  config.analysis.duplicate_max_blocks = 3
  config.analysis.duplicate_samples = 10
  config.analysis.path_samples = 100
  config.analysis.path_batch_size = 32
  return config
