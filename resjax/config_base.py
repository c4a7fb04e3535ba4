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
  # 'auto': unroll the block scans on CPUs, where rolled scans slow gradients down;
  # 'never' keeps compile time flat in depth, 'always' trades it for speed.
  config.model.unroll_stacks = 'auto'

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
  config.data.digits_split_seed = 0  # seed of the stratified digits train/test split
  config.data.download = False  # True: let tfds download and prepare a missing dataset
  # Cache of decoded folder images. Empty: <path>/.resjax_cache, or ~/.cache/resjax when
  # <path> is read-only.
  config.data.cache_dir = ''
  config.data.num_workers = 0  # processes decoding folder images; 0: one per CPU core
  config.data.shuffle_buffer = 10_000  # examples in the shuffle buffer of streamed data
  config.data.stats_examples = 10_000  # train images that estimate a streamed mean and std
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.crop_padding = 4  # pixels of padding before a random crop; 0: none
  config.data.augment.flip = True  # random horizontal flip
  config.data.augment.normalize = True  # per-channel mean and std from the train split
  # Streamed datasets of varying image size (ImageNet): random resized crop for training,
  # center crop for evaluation.
  config.data.augment.crop_area_range = (0.08, 1.0)  # crop area, share of the image
  config.data.augment.crop_aspect_range = (3 / 4, 4 / 3)  # crop width / height
  config.data.augment.eval_crop_fraction = 0.875  # center crop side / resized shorter side

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
  config.train.weight_decay_scope = 'kernels'  # 'kernels' (conv and dense) or 'all' params
  config.train.lr_reference_batch_size = 0  # > 0: scale learning_rate by batch / this
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
  # For multihost runs outside a cluster that jax detects (Cloud TPU, SLURM, ...):
  config.distributed.coordinator_address = ''  # 'host:port' of process 0; empty: detect
  config.distributed.num_processes = 0  # 0: detect
  config.distributed.process_id = -1  # -1: detect

  config.analysis = ml_collections.ConfigDict()
  config.analysis.names = ('lesion_single', 'lesion_multi', 'reorder', 'duplicate',
                           'path_lengths', 'path_gradients')
  config.analysis.seed = 0
  config.analysis.split = 'test'  # split the lesion studies evaluate on
  config.analysis.num_examples = -1  # -1: the whole split
  config.analysis.batch_size = 500  # images per evaluation batch
  config.analysis.memory_budget_mb = 2048  # bounds the settings evaluated per call
  config.analysis.plain_workdir = ''  # workdir of a trained plain network, for contrast
  # workdir of a run of configs/cifar10_short_paths.py, compared with this (full) run
  config.analysis.short_paths_workdir = ''
  config.analysis.lesion_multi_max_k = 20
  config.analysis.lesion_multi_samples = 50
  config.analysis.lesion_multi_include_downsampling = False
  config.analysis.reorder_max_swaps = 10
  config.analysis.reorder_samples = 50
  config.analysis.duplicate_max_blocks = 10
  config.analysis.duplicate_samples = 20  # random sets of repeated blocks per count
  config.analysis.settings_file = ''  # .npy or .csv of forward gates, one row a setting
  config.analysis.recalibrate_bn = False  # also re-estimate BatchNorm per setting
  config.analysis.recalibration_examples = 1024
  config.analysis.recalibration_batch_size = 256  # full batches; the remainder is left out
  config.analysis.path_samples = 1000  # sampled paths per length
  config.analysis.path_batch_size = 64  # training images in the path-gradient batch
  config.analysis.path_effective_share = 0.9  # share of the gradient the range covers
  # BatchNorm in the path analyses: 'train' (batch statistics, as in a training step) or
  # 'eval' (running averages).
  config.analysis.path_batchnorm = 'train'
  # Scans per stage in the exact decomposition: more waste less work, compile more code.
  config.analysis.path_exact_segments = 4
  # Largest accepted |sum of the exact per-length gradients - ordinary gradient| / |ordinary|.
  config.analysis.path_exact_tolerance = 1e-3

  # Thresholds that decide whether a claim of the paper holds in a run's report.
  config.report = ml_collections.ConfigDict()
  config.report.single_deletion_tolerance = 0.05  # max median error increase
  config.report.plain_gap = 0.2  # min plain-minus-residual median deletion error
  config.report.min_rank_correlation = 0.8  # |Spearman rho| for 'grows smoothly'
  config.report.short_path_tolerance = 0.005  # short-path error minus full error
  return config
