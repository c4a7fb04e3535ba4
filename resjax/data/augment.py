"""Random crop and flip of uint8 image batches, on the device and inside jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resjax.data.dataset import DataError


def _crop_padding(augment_config) -> int:
  padding = augment_config.crop_padding
  if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
    raise DataError('config.data.augment.crop_padding must be an integer >= 0 (0: no '
                    f'random crop), got {padding!r}.')
  return padding


def augment(rng: jax.Array, images_uint8: jax.Array, augment_config) -> jax.Array:
  """Randomly crop and flip each image of a batch; uint8 in, uint8 out, same shape.

  The crop takes an H x W window at a random offset from the image zero-padded by
  ``augment_config.crop_padding`` pixels on every side (0: no crop). With
  ``augment_config.flip``, each image is mirrored left-right with probability 1/2.
  Every image draws its own offset and flip from ``rng``. The config is read when the
  function is traced, so under jit pass it through a closure, not as an argument.

  Args:
    rng: a JAX PRNG key.
    images_uint8: uint8 [N, H, W, C].
    augment_config: config.data.augment.
  """
  padding = _crop_padding(augment_config)
  flip = bool(augment_config.flip)
  if images_uint8.ndim != 4:
    raise ValueError(f'augment expects images [N, H, W, C], got shape {images_uint8.shape}.')
  if padding == 0 and not flip:
    return images_uint8

  def augment_one(key, image):
    crop_key, flip_key = jax.random.split(key)
    if padding:
      padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
      top, left = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1)
      image = jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)
    if flip:
      image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    return image

  keys = jax.random.split(rng, images_uint8.shape[0])
  return jax.vmap(augment_one)(keys, images_uint8)
