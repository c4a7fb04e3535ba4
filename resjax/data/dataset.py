"""The in-memory dataset type and the error every data problem raises."""

from __future__ import annotations

import dataclasses

import numpy as np

from resjax.errors import ResjaxError

# The split names that callers pass. config.data.train_split and test_split name the
# tfds split or image-folder subfolder that each one reads.
SPLITS = ('train', 'test')


class DataError(ResjaxError):
  """A problem with a dataset or its config; the message is shown without a traceback."""


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """One split held in host memory.

  Attributes:
    images: uint8 [N, H, W, C].
    labels: int32 [N], class numbers in [0, num_classes).
    num_classes: number of classes of the dataset, also of classes absent from this split.
    class_names: name of each class number.
    name: where the data came from, such as 'digits', 'cifar10' or 'folder:/data/cifar10'.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  name: str

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(f'images must be uint8 [N, H, W, C], got {self.images.dtype} '
                       f'{self.images.shape}.')
    if self.labels.dtype != np.int32 or self.labels.shape != self.images.shape[:1]:
      raise ValueError(f'labels must be int32 [{self.images.shape[0]}], got '
                       f'{self.labels.dtype} {self.labels.shape}.')
    if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
      raise ValueError(f'labels must lie in [0, {self.num_classes}), got '
                       f'[{self.labels.min()}, {self.labels.max()}].')
    if len(self.class_names) != self.num_classes:
      raise ValueError(f'{len(self.class_names)} class names for {self.num_classes} '
                       'classes.')

  def __len__(self) -> int:
    return int(self.labels.shape[0])


def check_split(split: str) -> None:
  """Raise DataError unless ``split`` is one of SPLITS."""
  if split not in SPLITS:
    raise DataError(f'Invalid split {split!r}: expected one of {", ".join(SPLITS)}. '
                    'config.data.train_split and test_split choose the tfds split or '
                    'folder each one reads.')


def source_split(data_config, split: str) -> str:
  """Return the tfds split or folder name that ``split`` ('train' or 'test') reads."""
  check_split(split)
  return data_config.train_split if split == 'train' else data_config.test_split
