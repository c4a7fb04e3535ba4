"""Reading forward gates from a user's ``.npy`` or ``.csv`` file, one setting a row."""

from __future__ import annotations

import csv
import os

import numpy as np

from resjax.errors import ResjaxError
from resjax.models.resnet import GatedResNet


class SettingsFileError(ResjaxError, ValueError):
  """A settings file is missing, empty, or has rows that do not fit the model."""


def load_settings_file(path: str, model: GatedResNet) -> np.ndarray:
  """Read forward gates ``[settings, num_blocks]`` and check them against ``model``.

  A ``.npy`` file contains a 2-D numeric array (a 1-D array is one setting). A ``.csv``
  file has one setting a line, ``num_blocks`` numbers separated by commas, no header;
  blank lines are skipped.

  Raises:
    SettingsFileError: the file is missing, empty or unreadable, a row has another
      width than ``model.num_blocks``, a value is not a finite number, or a row
      deletes a unit that the model cannot delete.
  """
  width = model.num_blocks
  if not path:
    raise SettingsFileError('analysis.settings_file is empty; set it to a .npy or .csv file '
                            f'with {width} forward gates per row.')
  if not os.path.isfile(path):
    raise SettingsFileError(f'settings file {path} not found; set analysis.settings_file to '
                            f'a .npy or .csv file with {width} forward gates per row.')
  extension = os.path.splitext(path)[1].lower()
  if extension == '.npy':
    forward = _read_npy(path, width)
  elif extension == '.csv':
    forward = _read_csv(path, width)
  else:
    raise SettingsFileError(f'settings file {path} has extension {extension!r}; use .npy or '
                            '.csv.')
  if forward.shape[0] == 0:
    raise SettingsFileError(f'settings file {path} is empty; it needs at least one row of '
                            f'{width} forward gates.')
  bad = np.argwhere(~np.isfinite(forward))
  if bad.size:
    row, column = bad[0]
    raise SettingsFileError(f'settings file {path}: row {row + 1}, column {column + 1} is '
                            f'{forward[row, column]}, expected a finite number.')
  _check_deletable(path, forward, model)
  return forward


def _read_npy(path: str, width: int) -> np.ndarray:
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as error:
    raise SettingsFileError(f'cannot read settings file {path} as a .npy array: {error}. '
                            f'Save a numeric array [settings, {width}] with numpy.save.'
                            ) from error
  if array.dtype != bool and not np.issubdtype(array.dtype, np.number):
    raise SettingsFileError(f'settings file {path} contains values of dtype {array.dtype}, '
                            'expected numbers (forward gates such as 0.0 and 1.0).')
  if array.ndim == 1:
    array = array[None, :] if array.size else array.reshape(0, width)
  if array.ndim != 2:
    raise SettingsFileError(f'settings file {path} contains an array of shape {array.shape}, '
                            f'expected [settings, {width}].')
  if array.shape[0] and array.shape[1] != width:
    raise SettingsFileError(f'settings file {path}: row 1 has {array.shape[1]} values, '
                            f'expected {width} (the model\'s num_blocks).')
  return array.astype(np.float32)


def _read_csv(path: str, width: int) -> np.ndarray:
  rows = []
  with open(path, newline='', encoding='utf-8') as f:
    for line_number, cells in enumerate(csv.reader(f), start=1):
      if not cells or all(not cell.strip() for cell in cells):
        continue
      if len(cells) != width:
        raise SettingsFileError(f'settings file {path}: line {line_number} has {len(cells)} '
                                f'values, expected {width} (the model\'s num_blocks).')
      values = []
      for column, cell in enumerate(cells, start=1):
        try:
          values.append(float(cell))
        except ValueError:
          raise SettingsFileError(f'settings file {path}: line {line_number}, column '
                                  f'{column} is {cell.strip()!r}, not a number. Each line '
                                  f'holds {width} numbers and the file has no header.'
                                  ) from None
      rows.append(values)
  return np.asarray(rows, np.float32).reshape(len(rows), width)


def _check_deletable(path: str, forward: np.ndarray, model: GatedResNet) -> None:
  fixed = sorted(set(range(model.num_blocks)) - set(model.deletable_blocks))
  if not fixed:
    return
  changed = np.argwhere(forward[:, fixed] != 1)
  if changed.size:
    row, position = changed[0]
    block = fixed[position]
    raise SettingsFileError(
        f'settings file {path}: row {row + 1}, column {block + 1} sets the gate of unit '
        f'{block} to {forward[row, block]}, but the plain network cannot delete or scale '
        f'units {fixed}, whose input and output shapes differ; keep them at 1.')
