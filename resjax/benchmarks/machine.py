"""A description of the machine and the software versions behind a benchmark run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from resjax.benchmarks import timing

# Environment variables that change what the benchmark measures.
ENVIRONMENT_KEYS = ('XLA_FLAGS', 'OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'JAX_PLATFORMS')


def cpu_model() -> str:
  """Return the CPU model name from /proc/cpuinfo, or the platform's processor string."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def package_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def load_average() -> list[float] | None:
  """Return the 1, 5 and 15 minute load averages; above the core count, CPUs are shared."""
  try:
    return [round(value, 2) for value in os.getloadavg()]
  except OSError:
    return None


def describe_machine() -> dict[str, Any]:
  """Return the CPU, core count, versions and relevant environment variables."""
  import jax  # pylint: disable=import-outside-toplevel
  return {
      'cpu': cpu_model(),
      'cores': os.cpu_count(),
      'threads_used': timing.thread_count(),
      'platform': platform.platform(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jaxlib': package_version('jaxlib'),
      'flax': package_version('flax'),
      'torch': package_version('torch'),
      'jax_devices': [str(device) for device in jax.devices()],
      'environment': {key: os.environ[key] for key in ENVIRONMENT_KEYS if key in os.environ},
      'load_average_at_start': load_average(),
  }
