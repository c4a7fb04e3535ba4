"""Writing a benchmark run: ``benchmarks.json`` and the ``benchmarks.md`` page.

Both files are written through a temporary file and a rename, so a failed or
interrupted run never leaves a half-written file in place of an older one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from resjax.benchmarks.records import Recorder
from resjax.benchmarks.sizes import BenchmarkSizes
from resjax.results import to_json_value, write_json, write_text_atomic

# The keys the benchmark exists to report, in the order of the page. The value is
# the model or variant whose measurement is the headline one.
HEADLINES = (
    ('lesion_vmap_vs_loop', 'largest lesion depth'),
    ('lesion_vmap_vs_torch', 'largest lesion depth'),
    ('lesion_forward_vmap_vs_loop', 'largest lesion depth'),
    ('lesion_forward_vmap_vs_torch', 'largest lesion depth'),
    ('lesion_vmap_vs_process', 'largest lesion depth'),
    ('lesion_prefix_vs_vmap', 'prefix depth'),
    ('lesion_prefix_vs_forward_vmap', 'prefix depth'),
    ('train_vs_torch', 'as_is'),
    ('gate_overhead_train', 'as_is'),
    ('train_forward_vs_torch', 'as_is'),
    ('train_forward_backward_vs_torch', 'as_is'),
    ('exact_paths_vs_backward', 'largest paths depth'),
    ('scan_backward_vs_unrolled', 'largest paths depth'),
    ('scan_stem_backward_vs_unrolled', 'largest paths depth'),
)


METHODS = [
    '', '## Methods', '',
    '- `engine_vmap`: `resjax.lesion.engine.evaluate_settings`, the settings as vmapped '
    'gate batches in chunks set by a memory budget.',
    '- `forward_gate_vmap`: one jitted `jax.vmap` over the forward gates only, the block '
    'orders shared by all settings.',
    '- `jit_loop`: the same jitted function called once per setting.',
    '- `torch_eager`: the PyTorch twin (`resjax/benchmarks/torch_resnet.py`, same weights), '
    'one eager forward pass per setting that skips the deleted blocks, under '
    '`torch.inference_mode()`, with as many threads as JAX uses.',
    '- `process_per_setting`: a fresh Python process per setting that restores the run '
    'from its orbax checkpoint (`resjax.checkpointing.restore_run`), jits and evaluates.',
    '- `prefix`: `resjax.lesion.prefix.evaluate_single_deletions`, which computes the '
    'blocks before each deleted block once for all settings (see its module docstring).',
    '- Train steps run in one fresh process per variant, the JAX and PyTorch steps '
    'interleaved in that process.',
]


def headline_ids(recorder: Recorder, sizes: BenchmarkSizes) -> dict[str, str]:
  """Map each headline key to the id of its measurement in this run, where it exists."""
  picks = {
      'largest lesion depth': f'cifar_resnet{max(sizes.lesion_depths)}',
      'prefix depth': f'cifar_resnet{sizes.prefix_depth}',
      'as_is': 'as_is',
      'largest paths depth': f'cifar_resnet{max(sizes.paths_depths)}',
  }
  ids = {}
  for name, pick in HEADLINES:
    wanted = f'{name}[{picks[pick]}]'
    if any(m['id'] == wanted for m in recorder.measurements):
      ids[name] = wanted
  for measurement in recorder.measurements:
    if measurement['name'].startswith('compile_') and measurement['unit'] == 'ratio':
      ids[measurement['name']] = measurement['id']
  return ids


def build_document(recorder: Recorder, sizes: BenchmarkSizes, *, machine: dict[str, Any],
                   command: str, date: str, wall_seconds: float, smoke: bool,
                   failed: list[dict[str, str]]) -> dict[str, Any]:
  """Return the JSON document of one run."""
  return {
      'command': command,
      'date': date,
      'smoke': smoke,
      'wall_seconds': wall_seconds,
      'machine': machine,
      'weights': 'random, He-normal kernels and BatchNorm statistics near 0 and 1 '
                 '(resjax.benchmarks.weights): speed does not depend on training',
      'images': 'random normal CIFAR-sized images (32 x 32 x 3) and random labels',
      'sizes': dataclasses.asdict(sizes),
      'headlines': headline_ids(recorder, sizes),
      'measurements': recorder.measurements,
      'skipped': recorder.skipped,
      'failed': failed,
      'notes': recorder.notes,
  }


def _format(value: Any) -> str:
  if value is None:
    return '-'
  if isinstance(value, bool):
    return 'yes' if value else 'no'
  if isinstance(value, float):
    if value == 0 or 0.01 <= abs(value) < 1e5:
      return f'{value:.3g}' if abs(value) < 100 else f'{value:,.0f}'
    return f'{value:.3e}'
  return str(value)


def render_markdown(document: dict[str, Any]) -> str:
  """Render the page ``benchmarks.md`` from a run's JSON document."""
  by_id = {m['id']: m for m in document['measurements']}
  lines = ['# Benchmarks', '']
  if document['smoke']:
    lines += ['**Smoke run: tiny models and sizes, for checking the pipeline only. The '
              'numbers mean nothing.**', '']
  lines += _machine_lines(document)
  lines += METHODS
  lines += _headline_lines(document, by_id)
  lines += _measurement_lines(document)
  lines += _variant_lines(by_id)
  lines += ['', '## Sizes', '', '```',
            *(f'{key} = {value}' for key, value in document['sizes'].items()), '```']
  for title, entries in (('Skipped', document['skipped']), ('Failed', document['failed'])):
    if entries:
      lines += ['', f'## {title}', '']
      lines += [f'- {entry["group"]}: {entry["reason"]}' for entry in entries]
  if document['notes']:
    lines += ['', '## Notes', '', *(f'- {note}' for note in document['notes'])]
  return '\n'.join(lines) + '\n'


def _machine_lines(document: dict[str, Any]) -> list[str]:
  machine = document['machine']
  return [
      f'Command: `{document["command"]}`  ',
      f'Date: {document["date"]}  ',
      f'Wall time of the whole run: {document["wall_seconds"]:.0f} s',
      '',
      '| machine | |', '|---|---|',
      f'| CPU | {machine["cpu"]} |',
      f'| cores (threads used by JAX and PyTorch) | {machine["cores"]} '
      f'({machine["threads_used"]}) |',
      f'| load average at start (1, 5, 15 min) | {machine["load_average_at_start"]} |',
      f'| jax / jaxlib / flax | {machine["jax"]} / {machine["jaxlib"]} / {machine["flax"]} |',
      f'| torch | {machine["torch"] or "not installed"} |',
      f'| python | {machine["python"]} |',
      f'| environment | {machine["environment"] or "-"} |',
      '',
      f'Weights: {document["weights"]}. Images: {document["images"]}. Every value is the '
      'median of the timed repeats (the first call, which includes compilation, is '
      'reported separately as warm-up), and every ratio divides two measurements of this '
      'run, timed in interleaved rounds.',
  ]


def _headline_lines(document: dict[str, Any], by_id: dict[str, Any]) -> list[str]:
  lines = ['', '## Headlines', '',
           '| key | value | unit | target | met | compares |',
           '|---|---|---|---|---|---|']
  for name, measurement_id in document['headlines'].items():
    m = by_id[measurement_id]
    compares = f'`{m["numerator"]}` / `{m["denominator"]}`' if 'numerator' in m else ''
    lines.append(f'| `{name}` | {_format(m["value"])} | {m["unit"]} | '
                 f'{m.get("target") or "-"} | {_format(m.get("meets_target"))} | {compares} |')
  return lines


def readme_table(document: dict[str, Any]) -> str:
  """Render the headline table that the README quotes (key, value, unit, target, met)."""
  by_id = {m['id']: m for m in document['measurements']}
  lines = ['| key | value | unit | target | met |', '|---|---|---|---|---|']
  for name, measurement_id in document['headlines'].items():
    m = by_id[measurement_id]
    lines.append(f'| `{name}` | {_format(m["value"])} | {m["unit"]} | '
                 f'{m.get("target") or "-"} | {_format(m.get("meets_target"))} |')
  return '\n'.join(lines) + '\n'


def _measurement_lines(document: dict[str, Any]) -> list[str]:
  lines = ['', '## All measurements', '',
           '| id | value | unit | median s | repeats | warm-up s | compile s |',
           '|---|---|---|---|---|---|---|']
  for m in document['measurements']:
    if m['id'] == 'train_variants_tried':
      continue
    lines.append(f'| `{m["id"]}` | {_format(m["value"])} | {m["unit"]} | '
                 f'{_format(m.get("median_seconds"))} | {_format(m.get("repeats"))} | '
                 f'{_format(m.get("warmup_seconds"))} | {_format(m.get("compile_seconds"))} |')
  return lines


def _variant_lines(by_id: dict[str, Any]) -> list[str]:
  tried = by_id.get('train_variants_tried')
  if not tried:
    return []
  lines = ['', '## Train step: what was tried', '']
  for variant in tried['variants']:
    ratio = by_id.get(f'train_vs_torch[{variant["variant"]}]')
    if ratio:
      outcome = f'train_vs_torch = {_format(ratio["value"])}'
    else:
      outcome = variant.get('error', 'no PyTorch ratio')
    lines.append(f'- `{variant["variant"]}`: {variant["description"]}: {outcome}')
  return lines


def write_outputs(output_dir: str, document: dict[str, Any]) -> tuple[str, str]:
  """Write ``benchmarks.json`` and ``benchmarks.md`` into ``output_dir``; return the paths."""
  json_path = os.path.join(output_dir, 'benchmarks.json')
  markdown_path = os.path.join(output_dir, 'benchmarks.md')
  document = to_json_value(document)
  markdown = render_markdown(document)
  write_json(json_path, document)
  write_text_atomic(markdown_path, markdown)
  return json_path, markdown_path
