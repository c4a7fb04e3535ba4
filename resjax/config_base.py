"""The base config that every file in ``configs/`` starts from.

Every number a researcher would tune lives here or in a config file, never in the
training loop or the analyses. Config files call ``base_config()`` and change a few
fields; any field can be overridden on the command line (``--config.train.num_epochs=3``).
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Return the defaults: a CIFAR pre-activation ResNet-110 on CIFAR-10 from tfds."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.family = 'cifar_resnet'  # or 'imagenet_resnet'
  config.model.depth = 110
  config.model.preactivation = True
  config.model.residual = True  # False: the plain network without skips
  config.model.widths = ()  # empty: the family's standard widths
  config.model.dtype = 'float32'  # compute dtype; parameters stay float32
  config.model.bn_momentum = 0.9
  config.model.bn_epsilon = 1e-5
  config.model.zero_init_last_bn = False

  config.data = ml_collections.ConfigDict()
  config.data.source = 'tfds'  # 'tfds', 'folder' or 'digits'
  config.data.name = 'cifar10'  # tfds dataset name
  config.data.path = ''  # image-folder root, for source='folder'
  config.data.data_dir = ''  # tfds data_dir; empty: the tfds default
  config.data.manual_dir = ''  # tfds manual_dir, for imagenet2012
  config.data.train_split = 'train'
  config.data.test_split = 'test'
  config.data.image_size = 32  # images are resized to this side (folder and ImageNet)
  config.data.in_memory = True  # hold the dataset as uint8 arrays on the device
  config.data.digits_test_fraction = 0.2  # share of the scikit-learn digits held out
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.crop_padding = 4  # pixels of padding before a random crop; 0: none
  config.data.augment.flip = True  # random horizontal flip
  config.data.augment.normalize = True  # per-channel mean and std from the train split

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128  # global, over all devices
  config.train.eval_batch_size = 500
  config.train.num_epochs = 164
  config.train.learning_rate = 0.1
  config.train.schedule = 'piecewise'  # 'piecewise' or 'cosine'
  config.train.boundaries_epochs = (81, 122)  # for 'piecewise'
  config.train.decay_factor = 0.1  # learning rate factor at each boundary
  config.train.warmup_epochs = 0.0
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.weight_decay = 1e-4
  config.train.label_smoothing = 0.0
  config.train.variant = 'standard'  # 'standard', 'stochastic_depth' or 'short_paths'
  config.train.survival_prob_last = 0.5  # stochastic depth: p_L of the last block
  config.train.short_path_blocks = 23  # short paths: blocks whose branch takes gradient
  config.train.log_every_steps = 50
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3

  config.distributed = ml_collections.ConfigDict()
  config.distributed.multihost = False  # True: jax.distributed.initialize() joins hosts

  config.analysis = ml_collections.ConfigDict()
  config.analysis.names = ('lesion_single', 'lesion_multi', 'reorder', 'duplicate',
                           'path_lengths', 'path_gradients')
  config.analysis.seed = 0
  config.analysis.split = 'test'  # split the lesion studies evaluate on
  config.analysis.num_examples = -1  # -1: the whole split
  config.analysis.batch_size = 500  # images per evaluation batch
  config.analysis.memory_budget_mb = 2048  # bounds the settings evaluated per call
  config.analysis.plain_workdir = ''  # workdir of a trained plain network, for contrast
  config.analysis.lesion_multi_max_k = 20
  config.analysis.lesion_multi_samples = 50
  config.analysis.lesion_multi_include_downsampling = False
  config.analysis.reorder_max_swaps = 10
  config.analysis.reorder_samples = 50
  config.analysis.duplicate_max_blocks = 10
  config.analysis.settings_file = ''  # .npy or .csv of forward gates, one row a setting
  config.analysis.recalibrate_bn = False  # also re-estimate BatchNorm per setting
  config.analysis.recalibration_examples = 1024
  config.analysis.path_samples = 1000  # sampled paths per length
  config.analysis.path_batch_size = 64  # training images in the path-gradient batch
  config.analysis.path_effective_share = 0.9  # share of the gradient the range covers
  return config
