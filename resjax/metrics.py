"""Training metrics: ``<workdir>/metrics.jsonl`` and TensorBoard event files.

Each call of ``MetricsWriter.write`` appends one JSON object with a ``step`` field to
``metrics.jsonl`` and the same scalars to ``<workdir>/tensorboard/``. Only process 0
writes, so a multihost run produces one copy.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax

from resjax.results import write_text_atomic

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _json_number(value: Any) -> Any:
  value = float(value)
  return value if math.isfinite(value) else None  # JSON has no NaN or Inf


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Read ``metrics.jsonl`` of a run; an empty list when there is none."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          # A run killed while writing leaves at most one partial last line.
          continue
  return records


def drop_metrics_after(workdir: str, step: int) -> None:
  """Remove the records of steps after ``step``, which a resumed run writes again."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  earlier = [r for r in read_metrics(workdir) if r.get('step', 0) <= step]
  write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in earlier))


class MetricsWriter:
  """Appends scalars to ``metrics.jsonl`` and to TensorBoard event files."""

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    self._path = os.path.join(workdir, METRICS_FILE)
    self._summary_writer = None
    if self._enabled:
      os.makedirs(workdir, exist_ok=True)
      # Imported here: TensorFlow takes seconds to load and only this class needs it.
      # pylint: disable=import-outside-toplevel
      import tensorflow as tf
      from tensorflow.core.framework import summary_pb2
      # pylint: enable=import-outside-toplevel
      self._tf = tf
      self._summary_writer = tf.summary.create_file_writer(
          os.path.join(workdir, TENSORBOARD_DIR))
      # tf.summary.scalar needs the tensorboard package; tf.summary.write with the
      # scalars plugin's metadata writes the same event without it.
      self._scalar_metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Write one record: ``{'step': step, **scalars}``."""
    if not self._enabled:
      return
    record = {'step': int(step)}
    record.update({name: _json_number(value) for name, value in scalars.items()})
    with open(self._path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')
    with self._summary_writer.as_default(step=int(step)):
      for name, value in scalars.items():
        self._tf.summary.write(name, self._tf.constant(float(value), self._tf.float32),
                               metadata=self._scalar_metadata)

  def flush(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.flush()

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.close()
      self._summary_writer = None
