"""Random weights for the benchmarks, made without running ``model.init``.

Speed does not depend on what the weights learned, and ``model.init`` of a deep
network takes seconds to tens of seconds on a CPU, once per process. Here the
shapes come from ``jax.eval_shape(model.init)`` and the values from numpy.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from resjax.models.resnet import GatedResNet


def random_variables(model: GatedResNet, seed: int,
                     image_shape: Sequence[int] = (32, 32, 3)) -> dict[str, Any]:
  """Return ``{'params', 'batch_stats'}`` in the shapes of ``model.init``.

  Kernels are He-normal (variance 2 / fan-in); BatchNorm scales and running
  variances are near 1 and biases and running means near 0, so no BatchNorm is the
  identity and the running statistics differ from their initial values.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      # Stacked kernels carry a leading axis of blocks; the fan-in is per block.
      fan_in = int(np.prod(leaf.shape[-4:-1] if leaf.ndim >= 4 else leaf.shape[-2:-1]))
      values = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
    elif name in ('scale', 'var'):
      values = np.abs(rng.normal(1.0, 0.2, leaf.shape))
    else:
      values = rng.normal(0.0, 0.1, leaf.shape)
    return jnp.asarray(values, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
