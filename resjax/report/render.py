"""Build ``report.md`` and a self-contained ``report.html`` from a run's saved results.

Nothing here recomputes a result: the report reads ``config.json``,
``train_summary.json``, ``timings.json``, ``analyses/*.json`` and ``figures/*.png``,
so ``--mode=report`` rebuilds it in a second.
"""

from __future__ import annotations

import base64
import glob
import html
import importlib.metadata
import json
import os
import platform
from typing import Any

import ml_collections

from resjax.errors import CheckpointError
from resjax.report.claims import Claim, check_claims, criteria_note
from resjax.results import read_json, write_text_atomic

ANALYSES = ('path_lengths', 'path_gradients', 'lesion_single', 'lesion_multi', 'reorder',
            'duplicate', 'user_settings', 'effective_paths')
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections',
            'tensorflow-datasets', 'numpy')
# Figures in the order the report shows them, with a caption each; others follow.
FIGURE_CAPTIONS = {
    'lesion_single': 'Test error when one block is deleted; downsampling blocks marked.',
    'lesion_multi': 'Test error against the number of deleted blocks (mean and spread).',
    'reorder': 'Test error against the Kendall tau of the block order.',
    'duplicate': 'Test error against the number of repeated blocks.',
    'path_lengths': 'Distribution of path lengths in the unraveled view.',
    'path_gradient_norm': 'Gradient norm of one path against its length (log scale).',
    'path_contribution': 'Total gradient contribution of each path length.',
}
# The network and schedule that Veit et al. (2016) analyse.
PAPER_BLOCKS, PAPER_EPOCHS = 54, 164


def load_results(workdir: str) -> dict[str, Any]:
  """Load every analysis JSON that exists under ``<workdir>/analyses``."""
  results = {}
  for name in ANALYSES:
    path = os.path.join(workdir, 'analyses', f'{name}.json')
    if os.path.exists(path):
      results[name] = read_json(path)
  return results


def _optional_json(workdir: str, name: str) -> Any:
  path = os.path.join(workdir, name)
  return read_json(path) if os.path.exists(path) else None


def _versions() -> dict[str, str]:
  versions = {'python': platform.python_version()}
  for package in PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = 'not installed'
  return versions


def scale_note(config: ml_collections.ConfigDict, num_blocks: int | None) -> str:
  """One line saying how far this run is from the paper's scale, or ''."""
  gaps = []
  if num_blocks is not None and num_blocks < PAPER_BLOCKS:
    gaps.append(f'{num_blocks} blocks instead of {PAPER_BLOCKS}')
  if config.train.num_epochs < PAPER_EPOCHS:
    gaps.append(f'{config.train.num_epochs} epochs instead of {PAPER_EPOCHS}')
  dataset = 'the scikit-learn digits' if config.data.source == 'digits' else (
      f'an image folder ({config.data.path})' if config.data.source == 'folder'
      else config.data.name)
  if config.data.source != 'tfds' or config.data.name != 'cifar10':
    gaps.append(f'{dataset} instead of CIFAR-10 from tfds')
  if not gaps:
    return ''
  return ('This run is far smaller than the paper\'s ResNet-110 on CIFAR-10: '
          + ', '.join(gaps) + '. Read the comparison as a check of the method at this scale.')


def step_note(results: dict[str, Any], summary: dict[str, Any]) -> str:
  """One line naming analyses that ran on another checkpoint than the final one, or ''."""
  final = summary.get('steps')
  stale = sorted(name for name, data in results.items()
                 if isinstance(data, dict) and data.get('checkpoint_step') not in (None, final))
  if final is None or not stale:
    return ''
  return (f'{", ".join(stale)} ran on an earlier checkpoint than the final step {final}; '
          'rerun --mode=analyze to bring them up to date.')


def _figures(workdir: str) -> list[tuple[str, str]]:
  paths = sorted(glob.glob(os.path.join(workdir, 'figures', '*.png')))
  names = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
  ordered = [(names.pop(name), caption) for name, caption in FIGURE_CAPTIONS.items()
             if name in names]
  ordered += [(path, name.replace('_', ' ')) for name, path in sorted(names.items())]
  return ordered


def _claims_markdown(claims: list[Claim]) -> str:
  lines = ['| claim | paper | this run | holds here |', '| --- | --- | --- | --- |']
  for claim in claims:
    cells = [claim.claim, claim.paper, claim.this_run, claim.holds]
    lines.append('| ' + ' | '.join(cell.replace('|', '/') for cell in cells) + ' |')
  return '\n'.join(lines)


def _key_value_markdown(rows: dict[str, Any], header: tuple[str, str]) -> str:
  lines = [f'| {header[0]} | {header[1]} |', '| --- | --- |']
  lines += [f'| {key} | {value} |' for key, value in rows.items()]
  return '\n'.join(lines)


def _format_seconds(seconds: float) -> str:
  return f'{seconds:.1f} s' if seconds < 120 else f'{seconds / 60:.1f} min'


def build_report(workdir: str) -> dict[str, Any]:
  """Collect everything the report shows, as plain data."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise CheckpointError(f'{workdir} has no config.json, so it holds no run to report on. '
                          'Train first: python -m resjax.main --config=configs/<name>.py '
                          f'--workdir={workdir}')
  config = ml_collections.ConfigDict(read_json(config_path))
  results = load_results(workdir)
  description = _optional_json(workdir, 'model.json') or {}
  summary = _optional_json(workdir, 'train_summary.json') or {}
  timings = _optional_json(workdir, 'timings.json') or {}
  return {
      'step_note': step_note(results, summary),
      'workdir': workdir,
      'config': config,
      'results': results,
      'claims': check_claims(results, config),
      'criteria': criteria_note(config),
      'summary': summary,
      'timings': timings,
      'description': description,
      'scale_note': scale_note(config, description.get('num_blocks')),
      'figures': _figures(workdir),
      'versions': _versions(),
  }


def _summary_rows(report: dict[str, Any]) -> dict[str, str]:
  config, summary = report['config'], report['summary']
  model = config.model
  kind = 'pre-activation' if model.preactivation else 'post-activation'
  network = 'ResNet' if model.residual else 'plain network'
  rows = {'model': f'{kind} {network}-{model.depth} ({model.family})'}
  if report['description']:
    rows['blocks'] = str(report['description']['num_blocks'])
    rows['parameters'] = f'{report["description"]["num_params"]:,}'
  rows['data'] = config.data.source if config.data.source != 'tfds' else config.data.name
  if summary:
    for key, label in (('test_error', 'test error'), ('steps', 'training steps'),
                       ('train_seconds', 'training time'),
                       ('images_per_second', 'training images per second')):
      if key in summary:
        value = summary[key]
        if key == 'test_error':
          value = f'{100 * value:.2f}%'
        elif key == 'train_seconds':
          value = _format_seconds(value)
        elif isinstance(value, float):
          value = f'{value:,.0f}'
        rows[label] = str(value)
  return rows


def render_markdown(report: dict[str, Any]) -> str:
  parts = ['# resjax report', '',
           f'Run in `{report["workdir"]}`. Claims of Veit, Wilber and Belongie, "Residual '
           'Networks Behave Like Ensembles of Relatively Shallow Networks" (NeurIPS 2016), '
           'against this run.', '']
  for note in (report['scale_note'], report['step_note']):
    if note:
      parts += [f'> {note}', '']
  parts += ['## Claims', '', _claims_markdown(report['claims']), '', report['criteria'], '',
            '## Run', '', _key_value_markdown(_summary_rows(report), ('', '')), '']
  if report['timings']:
    timings = {stage: _format_seconds(seconds) for stage, seconds in report['timings'].items()}
    parts += ['## Time per stage', '', _key_value_markdown(timings, ('stage', 'time')), '']
  parts += ['## Figures', '']
  for path, caption in report['figures']:
    relative = os.path.relpath(path, report['workdir'])
    parts += [f'![{caption}]({relative})', '', f'*{caption}*', '']
  if not report['figures']:
    parts += ['No figures yet: run `--mode=analyze` first.', '']
  parts += ['## Software', '', _key_value_markdown(report['versions'], ('package', 'version')),
            '', '## Config', '', '```json', report['config'].to_json(indent=2), '```', '']
  return '\n'.join(parts)


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
.yes { color: #11772a; font-weight: bold; } .no { color: #b00020; font-weight: bold; }
.note { background: #fff6d5; padding: 0.6em 1em; border-left: 4px solid #e0b000; }
img { max-width: 100%; } figure { margin: 1.5em 0; } pre { background: #f4f4f4; padding: 1em; }
"""


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
  head = ''.join(f'<th>{html.escape(cell)}</th>' for cell in header)
  body = []
  for i, row in enumerate(rows):
    cells = ''.join(f'<td>{html.escape(cell)}</td>' for cell in row[:-1])
    css = f' class="{classes[i]}"' if classes and classes[i] else ''
    cells += f'<td{css}>{html.escape(row[-1])}</td>'
    body.append(f'<tr>{cells}</tr>')
  return f'<table><tr>{head}</tr>{"".join(body)}</table>'


def render_html(report: dict[str, Any]) -> str:
  claims = report['claims']
  parts = ['<!DOCTYPE html><html><head><meta charset="utf-8"><title>resjax report</title>',
           f'<style>{HTML_STYLE}</style></head><body><h1>resjax report</h1>',
           f'<p>Run in <code>{html.escape(report["workdir"])}</code>. Claims of Veit, Wilber '
           'and Belongie, "Residual Networks Behave Like Ensembles of Relatively Shallow '
           'Networks" (NeurIPS 2016), against this run.</p>']
  for note in (report['scale_note'], report['step_note']):
    if note:
      parts.append(f'<p class="note">{html.escape(note)}</p>')
  parts.append('<h2>Claims</h2>')
  parts.append(_html_table(['claim', 'paper', 'this run', 'holds here'],
                           [[c.claim, c.paper, c.this_run, c.holds] for c in claims],
                           [c.holds if c.holds in ('yes', 'no') else '' for c in claims]))
  parts.append(f'<p>{html.escape(report["criteria"])}</p>')
  parts.append('<h2>Run</h2>')
  parts.append(_html_table(['', ''], [[k, v] for k, v in _summary_rows(report).items()]))
  if report['timings']:
    parts.append('<h2>Time per stage</h2>')
    parts.append(_html_table(['stage', 'time'], [[stage, _format_seconds(seconds)] for
                                                 stage, seconds in report['timings'].items()]))
  parts.append('<h2>Figures</h2>')
  for path, caption in report['figures']:
    with open(path, 'rb') as f:
      encoded = base64.b64encode(f.read()).decode('ascii')
    parts.append(f'<figure><img alt="{html.escape(caption)}" '
                 f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(caption)}'
                 '</figcaption></figure>')
  parts.append('<h2>Software</h2>')
  parts.append(_html_table(['package', 'version'], [[k, v] for k, v in
                                                     report['versions'].items()]))
  parts.append('<h2>Config</h2>')
  parts.append(f'<pre>{html.escape(report["config"].to_json(indent=2))}</pre></body></html>')
  return '\n'.join(parts)


def write_report(workdir: str) -> tuple[str, str]:
  """Write ``<workdir>/report.md`` and ``<workdir>/report.html``; return their paths."""
  report = build_report(workdir)
  markdown_path = os.path.join(workdir, 'report.md')
  html_path = os.path.join(workdir, 'report.html')
  write_text_atomic(markdown_path, render_markdown(report))
  write_text_atomic(html_path, render_html(report))
  return markdown_path, html_path


def claims_as_json(workdir: str) -> str:
  """Return the claims table as JSON, for scripts that compare runs."""
  return json.dumps([vars(claim) for claim in build_report(workdir)['claims']], indent=2)
