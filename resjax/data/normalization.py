"""Per-channel statistics of a training split and the uint8 -> float32 conversion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from resjax.data.dataset import DataError

# Images summed at a time, which bounds the temporary uint32 squares (12 MB for CIFAR).
_STATS_CHUNK = 1024


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Return the per-channel mean and standard deviation of uint8 images scaled to [0, 1].

  The sums are exact integers, so the result does not depend on the image order. A
  channel that is constant gets standard deviation 1 instead of 0, so that normalizing
  never divides by zero.

  Args:
    images: uint8 [N, H, W, C], N >= 1.

  Returns:
    float32 [C] mean and float32 [C] standard deviation.
  """
  if images.dtype != np.uint8 or images.ndim != 4 or not images.shape[0]:
    raise DataError(f'channel_stats needs uint8 images [N, H, W, C] with N >= 1, got '
                    f'{images.dtype} {images.shape}.')
  channels = images.shape[-1]
  total = np.zeros(channels, np.uint64)
  total_squares = np.zeros(channels, np.uint64)
  for start in range(0, images.shape[0], _STATS_CHUNK):
    chunk = images[start:start + _STATS_CHUNK].reshape(-1, channels).astype(np.uint32)
    total += chunk.sum(axis=0, dtype=np.uint64)
    total_squares += (chunk * chunk).sum(axis=0, dtype=np.uint64)
  count = images.size // channels
  mean = total / count
  variance = np.maximum(total_squares / count - mean * mean, 0.0)
  std = np.sqrt(variance) / 255
  std = np.where(std > 0, std, 1.0)
  return (mean / 255).astype(np.float32), std.astype(np.float32)


def preprocess(images_uint8: jax.Array, mean, std, *, normalize: bool) -> jax.Array:
  """Convert uint8 images to float32 x / 255, then to (x / 255 - mean) / std if ``normalize``.

  Args:
    images_uint8: uint8 [..., C].
    mean: per-channel mean from channel_stats; ignored unless ``normalize``.
    std: per-channel standard deviation from channel_stats; ignored unless ``normalize``.
    normalize: config.data.augment.normalize.
  """
  images = images_uint8.astype(jnp.float32) / 255.0
  if normalize:
    images = (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return images
