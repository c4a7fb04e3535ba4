"""The data sources and the functions that pick one from ``config.data.source``."""

from __future__ import annotations

from resjax.data import digits, folder, tfds_source
from resjax.data.dataset import ArrayDataset, DataError

SOURCES = ('digits', 'folder', 'tfds')


def _source(data_config) -> str:
  source = data_config.source
  if source not in SOURCES:
    raise DataError(f'Unknown data source {source!r} (config.data.source): expected one of '
                    f'{", ".join(SOURCES)}.')
  return source


def num_classes_for(data_config) -> int:
  """Return the number of classes, without reading images.

  Folder: the class folders of the train split. tfds: a table of common datasets, or else
  the dataset's metadata. Neither downloads anything.
  """
  source = _source(data_config)
  if source == 'digits':
    return digits.NUM_CLASSES
  if source == 'folder':
    return len(folder.folder_class_names(data_config))
  return tfds_source.tfds_num_classes(data_config)


def image_shape_for(data_config) -> tuple[int, int, int]:
  """Return (H, W, C) of the model's input images.

  Digits: (8, 8, 1). Folder: (image_size, image_size, 3). tfds: the stored shape
  (28 x 28 x 1 for mnist), or image_size for datasets of varying image size (ImageNet).
  """
  source = _source(data_config)
  if source == 'digits':
    return digits.IMAGE_SHAPE
  if source == 'folder':
    return (data_config.image_size, data_config.image_size, 3)
  return tfds_source.tfds_image_shape(data_config)


def load_split(data_config, split: str) -> ArrayDataset:
  """Load the 'train' or 'test' split of the configured dataset into host memory."""
  source = _source(data_config)
  if source == 'digits':
    return digits.load_digits_split(data_config, split)
  if source == 'folder':
    return folder.load_folder_split(data_config, split)
  return tfds_source.load_tfds_split(data_config, split)
