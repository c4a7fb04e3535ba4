"""One pass over a split in batches, for datasets that do not fit in memory."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from resjax.data import tfds_source
from resjax.data.dataset import DataError, check_split
from resjax.data.normalization import channel_stats
from resjax.data.sources import load_split

# Images per batch while estimating channel statistics from a stream.
_STATS_BATCH = 1024


def stream_arrays(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool,
                  seed: int, shard_index: int = 0, shard_count: int = 1
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Return an iterator of (images, labels) batches: one pass over in-memory arrays.

  Shard ``shard_index`` of ``shard_count`` takes its own contiguous share of the
  examples. The last batch may be short.
  """
  indices = np.array_split(np.arange(len(labels)), shard_count)[shard_index]
  if shuffle:
    indices = np.random.default_rng(seed).permutation(indices)
  return ((images[indices[start:start + batch_size]], labels[indices[start:start + batch_size]])
          for start in range(0, len(indices), batch_size))


def stream_split(data_config, split: str, batch_size: int, *, shuffle: bool, seed: int,
                 random_crop: bool | None = None, shard_index: int = 0, shard_count: int = 1
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Return an iterator over one pass of a split in batches, every example once.

  tfds datasets are read through tf.data and never held in memory whole. Datasets of
  varying image size (ImageNet) are cropped to config.data.image_size: a random
  resized crop when ``random_crop``, else a center crop. Other datasets keep their
  stored shape, and random crop and flip are left to ``augment``. The digits and
  image folders are loaded into memory and then batched.

  Args:
    data_config: config.data.
    split: 'train' or 'test'.
    batch_size: images per batch; the last batch may be short.
    shuffle: shuffle the order, with ``seed``.
    seed: the seed of the order and of the random crops.
    random_crop: None: True for the train split, False for the test split.
    shard_index: which share of the split this process reads, in [0, shard_count).
    shard_count: number of shares, such as jax.process_count(); the shares together
      contain every example once.

  Returns:
    An iterator of (uint8 [B, H, W, C] images, int32 [B] labels), H, W, C as
    image_shape_for returns.
  """
  check_split(split)
  if batch_size < 1:
    raise DataError(f'The batch size must be >= 1, got {batch_size}.')
  if not 0 <= shard_index < shard_count:
    raise DataError(f'Invalid shard {shard_index} of {shard_count}: need '
                    '0 <= shard_index < shard_count.')
  if random_crop is None:
    random_crop = split == 'train'
  if data_config.source == 'tfds':
    return tfds_source.stream_tfds_split(
        data_config, split, batch_size, shuffle=shuffle, seed=seed, random_crop=random_crop,
        shard_index=shard_index, shard_count=shard_count)
  dataset = load_split(data_config, split)
  return stream_arrays(dataset.images, dataset.labels, batch_size, shuffle=shuffle, seed=seed,
                       shard_index=shard_index, shard_count=shard_count)


def split_size(data_config, split: str) -> int:
  """Return the number of examples of a split; for tfds without reading it where possible."""
  check_split(split)
  if data_config.source == 'tfds':
    return tfds_source.tfds_split_size(data_config, split)
  return len(load_split(data_config, split))


def estimate_channel_stats(data_config, num_examples: int, *, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
  """Return the per-channel mean and std of the train split, estimated for tfds datasets.

  tfds: channel_stats of the first ``num_examples`` images of a pass over the train split
  shuffled with ``seed`` (center crops for images of varying size), so a streamed
  dataset is never read whole. Other sources: channel_stats of the whole train split.
  """
  if data_config.source != 'tfds':
    return channel_stats(load_split(data_config, 'train').images)
  if num_examples < 1:
    raise DataError(f'The channel statistics need num_examples >= 1, got {num_examples}.')
  batches, count = [], 0
  for images, _ in stream_split(data_config, 'train', min(num_examples, _STATS_BATCH),
                                shuffle=True, seed=seed, random_crop=False):
    batches.append(images[:num_examples - count])
    count += len(batches[-1])
    if count >= num_examples:
      break
  return channel_stats(np.concatenate(batches))
