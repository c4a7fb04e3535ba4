"""The analyses of a trained run: lesion, reordering, duplication and path studies.

``run_analyses(config, workdir)`` restores the run's latest checkpoint, evaluates the
studies that ``config.analysis.names`` lists and writes ``<workdir>/analyses/<name>.json``
(with a CSV twin) and ``<workdir>/figures/<name>.png``. No analysis trains.

Each result JSON stores a fingerprint of its inputs: the checkpoint step, the model and
data config and the analysis fields the study reads. A rerun skips a study whose JSON
contains the same fingerprint, and only redraws its figure when that is missing. The path
analyses write their own JSON, so their fingerprints are kept in
``analyses/path_analyses_inputs.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from resjax import checkpointing
from resjax import data as data_lib
from resjax import paths as paths_lib
from resjax.config_base import base_config
from resjax.errors import ConfigError
from resjax.lesion import figures, studies
from resjax.lesion.engine import Calibration
from resjax.lesion.settings_file import load_settings_file
from resjax.results import read_json, record_timing, write_json, write_result

LESION_ANALYSES = ('lesion_single', 'lesion_multi', 'reorder', 'duplicate', 'user_settings')
PATH_ANALYSES = tuple(paths_lib.PATH_ANALYSES)
ANALYSES = LESION_ANALYSES + PATH_ANALYSES
PATH_INPUTS_FILE = 'path_analyses_inputs.json'

# Fields of config.analysis that change the results of every lesion study. The batch
# size and memory budget only change how the work is split, so they are left out.
_COMMON_FIELDS = ('split', 'num_examples', 'recalibrate_bn', 'recalibration_examples',
                  'recalibration_batch_size', 'seed')
# Fields that change one study's results, besides the common ones.
_STUDY_FIELDS = {
    'lesion_single': ('plain_workdir',),
    'lesion_multi': ('lesion_multi_max_k', 'lesion_multi_samples',
                     'lesion_multi_include_downsampling'),
    'reorder': ('reorder_max_swaps', 'reorder_samples'),
    'duplicate': ('duplicate_max_blocks', 'duplicate_samples'),
    'user_settings': ('settings_file',),
}


def run_analyses(config: ml_collections.ConfigDict, workdir: str,
                 names: Sequence[str] | None = None) -> list[str]:
  """Run the analyses ``names`` (default ``config.analysis.names``) on a trained run.

  Args:
    config: the run's config. Its ``analysis`` section selects the analyses and their
      settings, and its model must match the checkpoint in ``workdir``.
    workdir: the run's folder, with ``checkpoints/``.
    names: analyses to run, overriding ``config.analysis.names``.

  Returns:
    The paths of the files written; studies skipped as finished write none.

  Raises:
    ConfigError: an unknown analysis name or an invalid analysis field.
    CheckpointError: no checkpoint in ``workdir``, or one that does not match the
      config or cannot be read.
    SettingsFileError: ``user_settings`` with a missing or invalid settings file.
  """
  analysis = with_default_fields(config.analysis)
  names = analysis.names if names is None else names
  if isinstance(names, str):
    names = names.split(',')
  names = tuple(name.strip() for name in names)
  _check_names(names)
  _check_fields(analysis)
  run = checkpointing.restore_run(workdir, config)
  analyses_dir = os.path.join(workdir, 'analyses')
  figures_dir = os.path.join(workdir, 'figures')

  # Everything that can reject the inputs runs before the first study writes a file.
  if 'reorder' in names and all(len(stack) < 2 for stack in run.model.interchangeable_blocks):
    raise ConfigError('reorder needs a stage with two interchangeable blocks, and this model '
                      f'has none. {run.model.describe_blocks()} Remove reorder from '
                      'analysis.names or use a deeper model.')
  forward = None
  extras: dict[str, Any] = {}
  if 'user_settings' in names:
    forward = load_settings_file(analysis.settings_file, run.model)
    extras['user_settings'] = {'settings_sha256': _file_digest(analysis.settings_file)}
  plain_run = None
  if 'lesion_single' in names and analysis.plain_workdir:
    plain_run = _restore_plain(analysis.plain_workdir, config)
    extras['lesion_single'] = {'plain_step': int(plain_run.step)}

  written: list[str] = []
  pending = []
  for name in (name for name in names if name in LESION_ANALYSES):
    fingerprint = _fingerprint(name, config, analysis, run.step, extras.get(name, {}))
    if _is_finished(analyses_dir, name, fingerprint):
      logging.info('%s is up to date (checkpoint step %d); skipped.', name, run.step)
      written += _redraw_missing_figure(analyses_dir, figures_dir, name)
    else:
      pending.append((name, fingerprint))
  path_fingerprint = _fingerprint('paths', config, analysis, run.step, {})
  path_names = _pending_path_analyses(names, run.model, analyses_dir, path_fingerprint)
  if analysis.short_paths_workdir:
    # Cheap: two summaries read from disk, so it is redone on every run.
    paths_lib.compare_short_path_training(
        {'full': workdir, 'short_paths': analysis.short_paths_workdir}, analyses_dir)
    written.append(os.path.join(analyses_dir, f'{paths_lib.COMPARISON_NAME}.json'))
  if not pending and not path_names:
    return written

  # timings.json keeps the time of each analysis's latest run, so rerunning one
  # analysis does not replace the time of the others.
  start = time.perf_counter()
  inputs = _load_inputs(config, analysis,
                        need_train=bool(path_names) or analysis.recalibrate_bn)
  record_timing(workdir, 'analysis inputs', time.perf_counter() - start)
  if pending:
    evaluator = _evaluator(run.model, run.variables, inputs, analysis)
    plain = None
    if plain_run is not None:
      plain = _evaluator(plain_run.model, plain_run.variables, inputs, analysis)
    for name, fingerprint in pending:
      start = time.perf_counter()
      result = _run_study(name, evaluator, plain, forward, analysis)
      data = dict(result.data, fingerprint=fingerprint, checkpoint_step=int(run.step))
      written.append(write_result(analyses_dir, name, data, result.columns, result.rows))
      written.append(figures.PLOTS[name](data, os.path.join(figures_dir, f'{name}.png')))
      record_timing(workdir, f'analysis {name}', time.perf_counter() - start)
  if path_names:
    start = time.perf_counter()
    written += paths_lib.run_path_analyses(run.model, run.variables, _train_images(inputs),
                                           inputs['train'].labels, analysis, analyses_dir,
                                           figures_dir, names=path_names)
    _record_path_analyses(analyses_dir, path_names, path_fingerprint)
    record_timing(workdir, f'analysis {" and ".join(path_names)}',
                  time.perf_counter() - start)
  return written


def _pending_path_analyses(names: Sequence[str], model, analyses_dir: str,
                           fingerprint: str) -> list[str]:
  """Return the path analyses of ``names`` that apply to ``model`` and are not up to date."""
  path_names = [name for name in names if name in PATH_ANALYSES]
  if path_names and not model.residual:
    logging.warning('Skipping %s: a plain network (model.residual=False) has a single '
                    'path.', path_names)
    return []
  return [name for name in path_names
          if not _path_analysis_finished(analyses_dir, name, fingerprint)]


def with_default_fields(analysis: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Return ``analysis`` with the fields it lacks taken from ``base_config()``.

  A workdir's saved config predates any analysis field added since it was trained.
  """
  values = analysis.to_dict()
  for key, value in base_config().analysis.items():
    values.setdefault(key, value)
  return ml_collections.ConfigDict(values)


def _check_names(names: Sequence[str]) -> None:
  unknown = [name for name in names if name not in ANALYSES]
  if unknown:
    raise ConfigError(f'unknown analysis names {unknown} in analysis.names; choose from '
                      f'{list(ANALYSES)}.')


def _check_fields(analysis: ml_collections.ConfigDict) -> None:
  for field in ('batch_size', 'recalibration_examples', 'recalibration_batch_size',
                'lesion_multi_max_k', 'lesion_multi_samples', 'reorder_max_swaps',
                'reorder_samples', 'duplicate_max_blocks', 'duplicate_samples'):
    if analysis[field] < 1:
      raise ConfigError(f'analysis.{field} must be at least 1, got {analysis[field]}.')
  if not analysis.memory_budget_mb > 0:
    raise ConfigError(f'analysis.memory_budget_mb must be positive, got '
                      f'{analysis.memory_budget_mb}.')
  if analysis.num_examples == 0 or analysis.num_examples < -1:
    raise ConfigError(f'analysis.num_examples must be -1 (the whole split) or positive, got '
                      f'{analysis.num_examples}.')
  if analysis.split not in data_lib.SPLITS:
    raise ConfigError(f'analysis.split must be one of {list(data_lib.SPLITS)}, got '
                      f'{analysis.split!r}.')


# ------------------------------------------------------------------- fingerprints


def _fingerprint(name: str, config: ml_collections.ConfigDict,
                 analysis: ml_collections.ConfigDict, step: int, extra: dict[str, Any]) -> str:
  if name == 'paths':
    fields = sorted(key for key in analysis.keys() if key.startswith('path_')) + ['seed']
  else:
    fields = list(_COMMON_FIELDS) + list(_STUDY_FIELDS[name])
  inputs = {'analysis': name, 'checkpoint_step': int(step),
            'model': checkpointing.config_to_dict(config.model),
            'data': checkpointing.config_to_dict(config.data),
            'fields': {field: _plain(analysis[field]) for field in fields}, 'extra': extra}
  text = json.dumps(inputs, sort_keys=True)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def _plain(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def _file_digest(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _is_finished(analyses_dir: str, name: str, fingerprint: str) -> bool:
  path = os.path.join(analyses_dir, f'{name}.json')
  if not os.path.exists(path):
    return False
  try:
    return read_json(path).get('fingerprint') == fingerprint
  except (OSError, ValueError, AttributeError):
    return False  # an unreadable result is recomputed


def _redraw_missing_figure(analyses_dir: str, figures_dir: str, name: str) -> list[str]:
  path = os.path.join(figures_dir, f'{name}.png')
  if os.path.exists(path):
    return []
  return [figures.PLOTS[name](read_json(os.path.join(analyses_dir, f'{name}.json')), path)]


def _path_analysis_finished(analyses_dir: str, name: str, fingerprint: str) -> bool:
  inputs_path = os.path.join(analyses_dir, PATH_INPUTS_FILE)
  if not (os.path.exists(inputs_path) and os.path.exists(os.path.join(analyses_dir,
                                                                      f'{name}.json'))):
    return False
  try:
    return read_json(inputs_path).get(name) == fingerprint
  except (OSError, ValueError, AttributeError):
    return False


def _record_path_analyses(analyses_dir: str, names: Sequence[str], fingerprint: str) -> None:
  path = os.path.join(analyses_dir, PATH_INPUTS_FILE)
  recorded = {}
  if os.path.exists(path):
    try:
      recorded = read_json(path)
    except (OSError, ValueError):
      recorded = {}
  recorded.update({name: fingerprint for name in names})
  write_json(path, recorded)


# ------------------------------------------------------------------- data and runs


def _restore_plain(plain_workdir: str, config: ml_collections.ConfigDict):
  """Restore the plain network that ``lesion_single`` contrasts with the residual one."""
  plain_run = checkpointing.restore_run(plain_workdir)
  if plain_run.model.residual:
    raise ConfigError(f'analysis.plain_workdir={plain_workdir} contains a residual network; '
                      'point it at a run trained with model.residual=False '
                      '(configs/cifar10_plain.py).')
  fields = ('source', 'name', 'path', 'train_split', 'test_split', 'image_size')
  differ = [field for field in fields
            if plain_run.config.data.get(field) != config.data.get(field)]
  if differ:
    raise ConfigError(f'the plain network in {plain_workdir} was trained on other data than '
                      f'this run (data.{differ[0]}: {plain_run.config.data.get(differ[0])!r} '
                      f'there, {config.data.get(differ[0])!r} here); train it on the same '
                      'dataset.')
  return plain_run


def _load_inputs(config: ml_collections.ConfigDict, analysis: ml_collections.ConfigDict, *,
                 need_train: bool) -> dict[str, Any]:
  """Load and preprocess the evaluation split; keep the uint8 training split when needed.

  The mean and std that normalise the images come from the training split, as in
  training.
  """
  normalize = config.data.augment.normalize
  train = None
  mean = std = None
  if normalize or need_train or analysis.split == 'train':
    train = data_lib.load_split(config.data, 'train')
    mean, std = data_lib.channel_stats(train.images)
  evaluation = train if analysis.split == 'train' else data_lib.load_split(
      config.data, analysis.split)
  count = len(evaluation.images)
  if analysis.num_examples > count:
    logging.warning('analysis.num_examples=%d exceeds the %d images of the %s split; using '
                    'all of them.', analysis.num_examples, count, analysis.split)
  chosen = np.arange(count)
  if analysis.num_examples != -1 and analysis.num_examples < count:
    # A seeded random subset: image folders list the images class by class, so the first
    # images of a split would cover only a few classes.
    rng = np.random.default_rng(analysis.seed)
    chosen = np.sort(rng.choice(count, size=analysis.num_examples, replace=False))
  return {'images': _preprocess(evaluation.images[chosen], mean, std, normalize),
          'labels': evaluation.labels[chosen].astype(np.int32), 'train': train,
          'mean': mean, 'std': std, 'normalize': normalize}


def _preprocess(images: np.ndarray, mean, std, normalize: bool) -> np.ndarray:
  return np.asarray(data_lib.preprocess(images, mean, std, normalize=normalize))


def _train_images(inputs: dict[str, Any], indices=slice(None)) -> np.ndarray:
  return _preprocess(inputs['train'].images[indices], inputs['mean'], inputs['std'],
                     inputs['normalize'])


def _calibration(inputs: dict[str, Any], analysis: ml_collections.ConfigDict) -> Calibration:
  """Draw a seeded random subset of ``recalibration_examples`` training images."""
  total = len(inputs['train'].images)
  count = min(analysis.recalibration_examples, total)
  if count < analysis.recalibration_examples:
    logging.warning('analysis.recalibration_examples=%d exceeds the %d training images; '
                    'using all of them.', analysis.recalibration_examples, total)
  chosen = np.sort(np.random.default_rng(analysis.seed).choice(total, count, replace=False))
  return Calibration(images=_train_images(inputs, chosen),
                     batch_size=analysis.recalibration_batch_size)


def _evaluator(model, variables, inputs: dict[str, Any],
               analysis: ml_collections.ConfigDict) -> studies.Evaluator:
  calibration = _calibration(inputs, analysis) if analysis.recalibrate_bn else None
  return studies.Evaluator(model=model, variables=variables, images=inputs['images'],
                           labels=inputs['labels'], batch_size=analysis.batch_size,
                           memory_budget_mb=analysis.memory_budget_mb,
                           calibration=calibration)


def _run_study(name: str, evaluator: studies.Evaluator, plain: studies.Evaluator | None,
               forward: np.ndarray | None,
               analysis: ml_collections.ConfigDict) -> studies.StudyResult:
  if name == 'lesion_single':
    return studies.lesion_single(evaluator, plain)
  if name == 'lesion_multi':
    return studies.lesion_multi(
        evaluator, max_k=analysis.lesion_multi_max_k, samples=analysis.lesion_multi_samples,
        include_downsampling=analysis.lesion_multi_include_downsampling, seed=analysis.seed)
  if name == 'reorder':
    return studies.reorder(evaluator, max_swaps=analysis.reorder_max_swaps,
                           samples=analysis.reorder_samples, seed=analysis.seed)
  if name == 'duplicate':
    return studies.duplicate(evaluator, max_blocks=analysis.duplicate_max_blocks,
                             samples=analysis.duplicate_samples, seed=analysis.seed)
  if name == 'user_settings':
    return studies.user_settings(evaluator, forward, analysis.settings_file)
  raise AssertionError(f'no study named {name!r}')
