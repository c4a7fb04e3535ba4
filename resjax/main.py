"""Command line: ``python -m resjax.main --config=configs/<name>.py --workdir=<dir>``.

Modes:
  describe  print the model's structure as JSON (no workdir needed).
  train     train, or resume from the latest checkpoint in the workdir.
  analyze   run the analyses of ``config.analysis.names`` on the saved checkpoint.
  report    rebuild ``report.md`` and ``report.html`` from saved results.
  all       train, analyze and report; stages already done are skipped.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from resjax.errors import ResjaxError

MODES = ('describe', 'train', 'analyze', 'report', 'all')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file in configs/. With --mode=analyze or report it '
    'may be left out: the config saved in the workdir is used.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics, '
                               'analyses and the report.')
_MODE = flags.DEFINE_enum('mode', 'all', MODES, 'What to run.')


class UsageError(ResjaxError):
  """A problem with the command line, shown without a traceback."""


def describe(config) -> dict:
  """Return the JSON description of the config's model."""
  from resjax.data import num_classes_for  # pylint: disable=import-outside-toplevel
  from resjax.models import build_model  # pylint: disable=import-outside-toplevel
  return build_model(config.model, num_classes_for(config.data)).describe()


def run(mode: str, config, workdir: str | None) -> None:
  """Run one mode; the function behind the command line, usable from a notebook."""
  if mode == 'describe':
    if config is None:
      raise UsageError('--mode=describe needs --config=configs/<name>.py.')
    print(json.dumps(describe(config), indent=2))
    return
  if not workdir:
    raise UsageError(f'--mode={mode} needs --workdir=<dir>, the folder of the run.')

  from resjax import pipeline  # pylint: disable=import-outside-toplevel
  pipeline.run(mode, config, workdir)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    # Orbax and TensorFlow log hundreds of INFO lines per run; progress and results
    # are printed directly, so only warnings and errors are logged by default.
    logging.set_verbosity(logging.WARNING)
  try:
    config = _CONFIG.value
    if config is not None:
      config.to_dict()  # a file that failed to load raises here, on first use
  except OSError as error:
    # config_flags defers a failed load of the file to the first read of the value.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f'error: could not load --config: {lines[-1]}. Pass the path of a file in '
          'configs/, such as --config=configs/quickstart.py.', file=sys.stderr)
    sys.exit(2)
  try:
    run(_MODE.value, config, _WORKDIR.value)
  except ResjaxError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    # The training loop's finally blocks have closed the checkpoint manager by now, and
    # orbax renames a checkpoint into place only once it is whole.
    print(f'interrupted. Rerun the same command to resume {_WORKDIR.value} from its latest '
          'checkpoint; finished analyses are kept.', file=sys.stderr, flush=True)
    # NOTE: a normal interpreter exit here crashed with a segmentation fault while XLA
    # threads were still running (jax 0.10.2, CPU), so the process ends at once.
    os._exit(130)  # pylint: disable=protected-access


def parse_flags(argv: list[str]) -> list[str]:
  """Parse the command line; a bad flag or config file ends in one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    hint = ''
    if 'config.' in str(error) and not any(a.startswith('--config=') for a in argv):
      hint = ' Overriding config fields needs --config=configs/<name>.py as well.'
    print(f'error: {error}.{hint} Run with --helpfull to list the flags.', file=sys.stderr)
  except (OSError, KeyError, AttributeError, TypeError, ValueError) as error:
    # config_flags loads the config file and applies overrides while parsing.
    print(f'error: invalid --config or --config.<field> flag: {_flag_message(error)}',
          file=sys.stderr)
  sys.exit(2)


def _flag_message(error: BaseException) -> str:
  """Return the text of a config_flags error, unwrapped and on one line."""
  # ml_collections raises an AttributeError around a KeyError for an unknown field,
  # and a KeyError's text is its repr: "'num_epoch'\nDid you mean ...".
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  message = str(error.args[0]) if error.args else str(error)
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  if isinstance(error, KeyError) and lines:
    lines[0] = f'unknown field {lines[0]}.'
  return ' '.join(lines)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
