"""Writing analysis results: one JSON file and its CSV twin, written atomically.

A result is written to a temporary file and renamed into place, so an interrupted or
failed analysis never leaves a partial file where a finished one is expected.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np


def to_json_value(value: Any) -> Any:
  """Convert numpy scalars and arrays (also nested) to plain JSON values."""
  if isinstance(value, Mapping):
    return {str(k): to_json_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_value(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_json_value(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, float) and not np.isfinite(value):
    return None  # JSON has no NaN or Inf
  return value


def write_text_atomic(path: str, text: str) -> None:
  """Write ``text`` to ``path`` through a temporary file and a rename."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f'{path}.tmp-{os.getpid()}'
  with open(temporary, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(temporary, path)


def write_json(path: str, data: Mapping[str, Any]) -> None:
  write_text_atomic(path, json.dumps(to_json_value(data), indent=2) + '\n')


def write_csv(path: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  """Write a CSV with a header row; nested values are written as JSON."""
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(columns)
  for row in rows:
    writer.writerow([json.dumps(to_json_value(v)) if isinstance(v, (list, tuple, dict,
                                                                      np.ndarray))
                     else to_json_value(v) for v in row])
  write_text_atomic(path, buffer.getvalue())


TIMINGS_FILE = 'timings.json'


def record_timing(workdir: str, stage: str, seconds: float) -> None:
  """Set the time of ``stage`` in ``<workdir>/timings.json``, keeping the other stages."""
  path = os.path.join(workdir, TIMINGS_FILE)
  timings = read_json(path) if os.path.exists(path) else {}
  timings[stage] = round(seconds, 2)
  write_json(path, timings)


def write_result(directory: str, name: str, data: Mapping[str, Any],
                 columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """Write ``<directory>/<name>.json`` and its CSV twin ``<name>.csv``.

  Args:
    directory: usually ``<workdir>/analyses``.
    name: file stem, such as 'lesion_single'.
    data: the JSON object.
    columns: CSV header.
    rows: CSV rows, one per setting or per length.

  Returns:
    The path of the JSON file.
  """
  json_path = os.path.join(directory, f'{name}.json')
  write_csv(os.path.join(directory, f'{name}.csv'), columns, rows)
  write_json(json_path, data)
  return json_path


def read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)
