"""TensorFlow Datasets: loading whole splits into memory, or streaming them through tf.data.

Nothing is downloaded unless ``config.data.download`` is True: a dataset that is not
prepared under ``config.data.data_dir`` raises DataError at once, naming the ways to
provide it. ImageNet is prepared from the archives in ``config.data.manual_dir``.

TensorFlow and tfds are imported inside the functions, because importing them takes
seconds and the digits and image-folder sources do not need them.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from resjax.data.dataset import ArrayDataset, DataError, source_split

# Datasets whose class count and image shape are known without building a tfds builder.
# Image shape None: the images vary in size and are cropped to config.data.image_size.
KNOWN_DATASETS = {
    'cifar10': (10, (32, 32, 3)),
    'cifar100': (100, (32, 32, 3)),
    'svhn_cropped': (10, (32, 32, 3)),
    'mnist': (10, (28, 28, 1)),
    'imagenet2012': (1000, None),
}
# Images per tf.data batch while a split is copied into memory.
_LOAD_BATCH = 1024
# Tries of tf.image.stateless_sample_distorted_bounding_box before it takes the whole image.
_CROP_ATTEMPTS = 10


def _import_tfds():
  """Import TensorFlow and tfds, with TensorFlow kept off the accelerators that JAX uses."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  import tensorflow_datasets as tfds
  # pylint: enable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow already initialized its devices: leave them
    pass
  return tf, tfds


def _builder(data_config):
  _, tfds = _import_tfds()
  try:
    return tfds.builder(data_config.name, data_dir=data_config.data_dir or None)
  except tfds.core.DatasetNotFoundError:
    raise DataError(f'tfds has no dataset named {data_config.name!r} '
                    '(config.data.name). Datasets used with resjax: '
                    f'{", ".join(KNOWN_DATASETS)}; any registered tfds dataset with image '
                    'and label features works.') from None


def _features(builder) -> tuple[int, tuple[int | None, ...], tuple[str, ...]]:
  """Return the class count, image shape and class names from the builder's metadata."""
  keys = builder.info.supervised_keys
  if not keys or len(keys) != 2:
    raise DataError(f'tfds dataset {builder.name} has no (image, label) supervised keys, '
                    'so it is not an image classification dataset.')
  image_feature = builder.info.features[keys[0]]
  label_feature = builder.info.features[keys[1]]
  num_classes = getattr(label_feature, 'num_classes', None)
  if not num_classes or len(image_feature.shape) != 3:
    raise DataError(f'tfds dataset {builder.name} does not pair [H, W, C] images with '
                    f'class labels (features {keys[0]}: {image_feature.shape}, '
                    f'{keys[1]}: {type(label_feature).__name__}).')
  return num_classes, tuple(image_feature.shape), tuple(label_feature.names)


def tfds_num_classes(data_config) -> int:
  """Return the class count, from KNOWN_DATASETS or else the tfds metadata (no download)."""
  if data_config.name in KNOWN_DATASETS:
    return KNOWN_DATASETS[data_config.name][0]
  return _features(_builder(data_config))[0]


def tfds_image_shape(data_config) -> tuple[int, int, int]:
  """Return (H, W, C) of the batches: the stored shape, or image_size for varying sizes."""
  if data_config.name in KNOWN_DATASETS:
    shape = KNOWN_DATASETS[data_config.name][1]
    if shape is not None:
      return shape
    channels = 3
  else:
    shape = _features(_builder(data_config))[1]
    if None not in shape:
      return shape
    channels = shape[2] or 3
  return (data_config.image_size, data_config.image_size, channels)


def _missing_message(builder, data_config) -> str:
  lines = [f'tfds dataset {builder.name} is not prepared in {builder.data_dir_root}, and '
           'config.data.download is False, so nothing was downloaded. Provide it one of '
           'these ways:',
           f'  --config.data.data_dir=<folder> with a prepared copy in '
           f'<folder>/{builder.name}/{builder.version}/']
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None:
    instructions = ' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
    lines.append('  --config.data.manual_dir=<folder> with the archives that tfds prepares '
                 f'{builder.name} from: {instructions}')
  else:
    lines.append('  --config.data.download=True to let tfds download and prepare it '
                 '(needs network access)')
  lines.append('  --config.data.source=folder --config.data.path=<root> to read an image '
               'folder <root>/<split>/<class>/<image> instead')
  return '\n'.join(lines)


def _prepare(builder, data_config) -> None:
  """Download and prepare a missing dataset, but only when the config allows it."""
  _, tfds = _import_tfds()
  manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None and bool(data_config.manual_dir)
  if builder.is_prepared() or not (data_config.download or manual):
    return
  download_config = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir or None)
  try:
    builder.download_and_prepare(download_config=download_config)
  except (tfds.download.DownloadError, AssertionError, OSError) as error:
    # AssertionError: tfds's error for a missing or empty manual_dir.
    cause = str(error).strip().splitlines()[0] if str(error).strip() else ''
    raise DataError(f'Preparing tfds dataset {builder.name} in {builder.data_dir_root} '
                    f'failed: {type(error).__name__}: {cause}\n'
                    + _missing_message(builder, data_config)) from None


def _as_dataset(builder, data_config, split_name, *, shuffle: bool, read_config=None):
  """Return the tf.data.Dataset of (image, label) pairs, or raise DataError."""
  _prepare(builder, data_config)
  try:
    return builder.as_dataset(split=split_name, as_supervised=True, shuffle_files=shuffle,
                              read_config=read_config)
  except AssertionError:  # tfds's error when the prepared files are missing
    raise DataError(_missing_message(builder, data_config)) from None
  except ValueError as error:  # an unknown split name
    raise DataError(f'tfds cannot read split {split_name!r} of {builder.name}: {error} '
                    'Check config.data.train_split and test_split.') from None


def _check_crop_config(augment_config) -> None:
  low, high = augment_config.crop_area_range
  if not 0 < low <= high <= 1:
    raise DataError('config.data.augment.crop_area_range must satisfy 0 < low <= high <= 1, '
                    f'got {tuple(augment_config.crop_area_range)}.')
  low, high = augment_config.crop_aspect_range
  if not 0 < low <= high:
    raise DataError('config.data.augment.crop_aspect_range must satisfy 0 < low <= high, '
                    f'got {tuple(augment_config.crop_aspect_range)}.')
  if not 0 < augment_config.eval_crop_fraction <= 1:
    raise DataError('config.data.augment.eval_crop_fraction must lie in (0, 1], got '
                    f'{augment_config.eval_crop_fraction}.')


def _crop_function(data_config, *, random_crop: bool, seed: int):
  """Return a tf function (index, image) -> uint8 [S, S, C] image, S = image_size.

  Evaluation: the central square of side eval_crop_fraction * shorter side, resized.
  Training: an Inception-style random crop of area and aspect ratio in the configured
  ranges, resized. The crop depends on (seed, index), so a run is reproducible.
  """
  tf, _ = _import_tfds()
  augment_config = data_config.augment
  _check_crop_config(augment_config)
  size = data_config.image_size

  def resize(image):
    resized = tf.image.resize(image, (size, size), method='bicubic', antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

  def center_crop(index, image):
    del index
    shape = tf.shape(image)
    side = tf.cast(tf.round(augment_config.eval_crop_fraction *
                            tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)), tf.int32)
    side = tf.maximum(side, 1)
    top = (shape[0] - side) // 2
    left = (shape[1] - side) // 2
    return resize(image[top:top + side, left:left + side])

  def random_resized_crop(index, image):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)]),
        min_object_covered=augment_config.crop_area_range[0],
        aspect_ratio_range=tuple(augment_config.crop_aspect_range),
        area_range=tuple(augment_config.crop_area_range),
        max_attempts=_CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    return resize(tf.slice(image, begin, crop_size))

  return random_resized_crop if random_crop else center_crop


def _pairs(data_config, split_name: str, *, shuffle: bool, seed: int, random_crop: bool):
  """Return the builder and a tf.data.Dataset of (uint8 image, int32 label) pairs."""
  tf, tfds = _import_tfds()
  builder = _builder(data_config)
  _, shape, _ = _features(builder)
  read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
  pairs = _as_dataset(builder, data_config, split_name, shuffle=shuffle,
                      read_config=read_config)
  if shuffle:
    pairs = pairs.shuffle(data_config.shuffle_buffer, seed=seed)
  crop = _crop_function(data_config, random_crop=random_crop, seed=seed) if None in shape \
      else None

  def convert(index, pair):
    image, label = pair
    if crop is not None:
      image = crop(index, image)
    return image, tf.cast(label, tf.int32)

  pairs = pairs.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)
  return builder, pairs


def load_tfds_split(data_config, split: str) -> ArrayDataset:
  """Load a whole tfds split into memory as uint8 images and int32 labels.

  Images of varying size (ImageNet) are center-cropped to config.data.image_size.
  NOTE: the batches are concatenated at the end, so the peak host memory is about twice
  the size of the split.
  """
  tf, tfds = _import_tfds()
  split_name = source_split(data_config, split)
  builder, pairs = _pairs(data_config, split_name, shuffle=False, seed=0, random_crop=False)
  images, labels = [], []
  for image_batch, label_batch in tfds.as_numpy(pairs.batch(_LOAD_BATCH).prefetch(
      tf.data.AUTOTUNE)):
    images.append(image_batch)
    labels.append(label_batch)
  if not images:
    raise DataError(f'Split {split_name!r} of tfds dataset {builder.name} is empty.')
  num_classes, _, class_names = _features(builder)
  return ArrayDataset(images=np.concatenate(images), labels=np.concatenate(labels),
                      num_classes=num_classes, class_names=class_names, name=builder.name)


def tfds_split_size(data_config, split: str) -> int:
  """Return the number of examples of a tfds split, from its metadata when that records it."""
  tf, _ = _import_tfds()
  builder = _builder(data_config)
  split_name = source_split(data_config, split)
  pairs = _as_dataset(builder, data_config, split_name, shuffle=False)
  size = int(pairs.cardinality())
  if size >= 0:
    return size
  # Unknown cardinality: count the examples, which reads the whole split once.
  return int(pairs.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def stream_tfds_split(data_config, split: str, batch_size: int, *, shuffle: bool, seed: int,
                      random_crop: bool, shard_index: int, shard_count: int
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Return an iterator of (uint8 images, int32 labels) batches: one pass over a tfds split.

  Shard ``shard_index`` of ``shard_count`` reads its own contiguous share of the split
  (tfds.even_splits), so the shards together cover every example once. The last batch
  may be short. With ``shuffle``, the file order and a buffer of
  config.data.shuffle_buffer examples are shuffled with ``seed``.
  """
  tf, tfds = _import_tfds()
  split_name = source_split(data_config, split)
  if shard_count > 1:
    split_name = tfds.even_splits(split_name, n=shard_count, drop_remainder=False)[shard_index]
  _, pairs = _pairs(data_config, split_name, shuffle=shuffle, seed=seed,
                    random_crop=random_crop)
  batches = pairs.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(batches))
