"""Errors that reach the user as one line, without a traceback.

``resjax.main`` catches ``ResjaxError`` and prints its message, so every subclass
message names the value that is wrong and how to fix it.
"""

from __future__ import annotations


class ResjaxError(Exception):
  """Base class of the errors a user can fix: bad inputs, data, configs, checkpoints."""


class ConfigError(ResjaxError, ValueError):
  """A config field has a value that resjax cannot use."""


class CheckpointError(ResjaxError):
  """A workdir or checkpoint is missing, unreadable or does not match the config."""


class TrainingError(ResjaxError):
  """Training cannot go on, for example because the loss became NaN or Inf."""
