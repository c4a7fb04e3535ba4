"""The stages behind ``python -m resjax.main``: train, analyze, report, or all three.

Each stage skips work that is already done (a finished training run, an analysis
whose inputs did not change), so rerunning a finished command takes seconds.
``<workdir>/timings.json`` keeps the time of the last run of each stage that did
work, for the report.
"""

from __future__ import annotations

import glob
import os
import time
from typing import Callable

import ml_collections

from resjax.config_base import base_config
from resjax.errors import ConfigError
from resjax.results import read_json, record_timing, write_json

MODEL_FILE = 'model.json'


def _output_stamps(workdir: str, patterns: tuple[str, ...]) -> dict[str, float]:
  stamps = {}
  for pattern in patterns:
    for path in glob.glob(os.path.join(workdir, pattern)):
      stamps[path] = os.path.getmtime(path)
  return stamps


def _timed(workdir: str, stage: str, outputs: tuple[str, ...], work: Callable[[], object]):
  """Run ``work``; record its time in timings.json if it changed any of ``outputs``."""
  before = _output_stamps(workdir, outputs)
  start = time.perf_counter()
  result = work()
  seconds = time.perf_counter() - start
  if _output_stamps(workdir, outputs) != before:
    record_timing(workdir, stage, seconds)
  return result


def load_saved_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'{workdir} has no config.json: it holds no training run. Train '
                      f'first with --config=configs/<name>.py --workdir={workdir} '
                      '--mode=train, or point --workdir at a finished run.')
  return ml_collections.ConfigDict(read_json(path))


def analysis_config(config: ml_collections.ConfigDict | None,
                    workdir: str) -> ml_collections.ConfigDict:
  """Return the saved run's config with the analysis settings of ``config``, if given.

  The model, data and training fields always come from the run itself, because the
  checkpoint was trained with them; the command line may change how it is analysed.
  """
  saved = load_saved_config(workdir)
  merged = ml_collections.ConfigDict(saved.to_dict())
  defaults = base_config()
  for section in ('analysis', 'report'):
    # Fields added to resjax after the run was trained take their defaults.
    values = defaults[section].to_dict()
    values.update(saved.get(section, {}))
    if config is not None and section in config:
      values.update(config[section].to_dict())
    merged[section] = ml_collections.ConfigDict(values)
  return merged


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  # Imported here: the training stack (TensorFlow, orbax) takes seconds to load.
  from resjax.data import num_classes_for  # pylint: disable=import-outside-toplevel
  from resjax.models import build_model  # pylint: disable=import-outside-toplevel
  from resjax.training import train_and_evaluate  # pylint: disable=import-outside-toplevel
  summary = _timed(workdir, 'train', ('train_summary.json',),
                   lambda: train_and_evaluate(config, workdir))
  model_path = os.path.join(workdir, MODEL_FILE)
  if not os.path.exists(model_path):
    write_json(model_path, build_model(config.model, num_classes_for(config.data)).describe())
  print(f'test error {summary["test_error"]:.4f} after {summary["steps"]} steps; '
        f'results in {workdir}')
  return summary


def analyze(config: ml_collections.ConfigDict | None, workdir: str) -> list[str]:
  from resjax.analysis import run_analyses  # pylint: disable=import-outside-toplevel
  merged = analysis_config(config, workdir)
  # run_analyses records the time of each analysis it runs.
  written = run_analyses(merged, workdir)
  print(f'analyses in {os.path.join(workdir, "analyses")}, figures in '
        f'{os.path.join(workdir, "figures")}')
  return written


def report(workdir: str) -> tuple[str, str]:
  from resjax.report import write_report  # pylint: disable=import-outside-toplevel
  load_saved_config(workdir)  # a clear error for a workdir without a run
  paths = write_report(workdir)
  print(f'report: {paths[0]} and {paths[1]}')
  return paths


def run(mode: str, config: ml_collections.ConfigDict | None, workdir: str) -> None:
  """Run ``mode`` ('train', 'analyze', 'report' or 'all') of ``config`` in ``workdir``."""
  if mode not in ('train', 'analyze', 'report', 'all'):
    raise ConfigError(f'unknown mode {mode!r}; use train, analyze, report or all.')
  if mode in ('train', 'all') and config is None:
    raise ConfigError(f'--mode={mode} needs --config=configs/<name>.py.')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} is a file, not a folder; pass the folder of '
                      'the run, or a new path for a new run.')
  if mode in ('train', 'all'):
    train(config, workdir)
  if mode in ('analyze', 'all'):
    analyze(config, workdir)
  if mode in ('report', 'all'):
    report(workdir)

