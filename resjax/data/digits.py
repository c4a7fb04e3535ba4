"""The handwritten digits bundled with scikit-learn: 1,797 8x8 images, no download."""

from __future__ import annotations

import numpy as np

from resjax.data.dataset import ArrayDataset, DataError, check_split

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
# The bundled images contain integer ink counts 0..16 (4x4 pixel blocks of a 32x32 bitmap).
_MAX_PIXEL_VALUE = 16


def load_digits_split(data_config, split: str) -> ArrayDataset:
  """Load one split of the digits as uint8 [N, 8, 8, 1] images scaled to 0..255.

  The split is stratified by class and depends only on
  ``data_config.digits_test_fraction`` and ``data_config.digits_split_seed``, so
  the train and test splits are disjoint and together contain every image once.
  """
  # Imported here: scikit-learn takes about a second to import and only this source uses it.
  from sklearn import datasets, model_selection  # pylint: disable=import-outside-toplevel

  check_split(split)
  fraction = data_config.digits_test_fraction
  if not 0 < fraction < 1:
    raise DataError(f'config.data.digits_test_fraction must lie strictly between 0 and 1, '
                    f'got {fraction}. Set --config.data.digits_test_fraction=0.2, say.')

  digits = datasets.load_digits()
  labels = digits.target.astype(np.int32)
  try:
    train_indices, test_indices = model_selection.train_test_split(
        np.arange(len(labels)), test_size=fraction, stratify=labels,
        random_state=data_config.digits_split_seed)
  except ValueError as error:  # too few images in a split for every class
    raise DataError(f'Cannot split the {len(labels)} digits with '
                    f'config.data.digits_test_fraction={fraction}: {error}') from None

  # Sorted, so that the order inside each split follows the bundled order.
  indices = np.sort(train_indices if split == 'train' else test_indices)
  scaled = np.round(digits.images[indices] * (255 / _MAX_PIXEL_VALUE))
  images = scaled.astype(np.uint8).reshape((-1,) + IMAGE_SHAPE)
  return ArrayDataset(images=images, labels=labels[indices], num_classes=NUM_CLASSES,
                      class_names=tuple(str(d) for d in range(NUM_CLASSES)), name='digits')
