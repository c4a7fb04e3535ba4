"""Tests of scripts/benchmark.py, its records and the PyTorch twin."""

import json
import os
import subprocess
import sys

# PyTorch's OpenMP threads spin at barriers by default, which makes its calls many times
# slower on a CPU shared with other processes. It must be set before torch is imported.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# pylint: disable=wrong-import-position
import numpy as np
import pytest

from resjax.benchmarks import records, report, timing, training, weights
from resjax.models import cifar_resnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'benchmark.py')
HAS_TORCH = training.torch_available()


def run_benchmark(output_dir, *arguments, env=None):
  return subprocess.run([sys.executable, SCRIPT, '--smoke', '--output-dir', output_dir,
                         *arguments], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=900, check=False)


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('benchmark'))
  finished = run_benchmark(output_dir)
  with open(os.path.join(output_dir, 'benchmarks.json'), encoding='utf-8') as f:
    document = json.load(f)
  with open(os.path.join(output_dir, 'benchmarks.md'), encoding='utf-8') as f:
    markdown = f.read()
  return finished, document, markdown


def test_smoke_run_succeeds(smoke_run):
  finished, document, _ = smoke_run
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert document['failed'] == []
  assert document['smoke'] is True


def test_measurements_have_required_fields(smoke_run):
  _, document, _ = smoke_run
  ids = [m['id'] for m in document['measurements']]
  assert len(ids) == len(set(ids))
  for measurement in document['measurements']:
    for field in ('id', 'name', 'value', 'unit'):
      assert field in measurement, (measurement['id'], field)
    assert measurement['value'] is not None, measurement['id']


def test_ratios_name_measurements_of_run(smoke_run):
  _, document, _ = smoke_run
  by_id = {m['id']: m for m in document['measurements']}
  ratios = [m for m in document['measurements'] if m['unit'] == 'ratio']
  assert ratios
  for ratio in ratios:
    numerator, denominator = by_id[ratio['numerator']], by_id[ratio['denominator']]
    assert ratio['value'] == pytest.approx(numerator['value'] / denominator['value'])


def test_headline_keys_present(smoke_run):
  _, document, _ = smoke_run
  expected = {'lesion_vmap_vs_loop', 'lesion_prefix_vs_vmap', 'gate_overhead_train',
              'exact_paths_vs_backward', 'scan_backward_vs_unrolled', 'compile_14_vs_8'}
  if HAS_TORCH:
    expected |= {'lesion_vmap_vs_torch', 'train_vs_torch'}
  assert expected <= set(document['headlines'])
  by_id = {m['id']: m for m in document['measurements']}
  for name, measurement_id in document['headlines'].items():
    assert by_id[measurement_id]['name'] == name


def test_methods_agree_on_correct_counts(smoke_run):
  _, document, _ = smoke_run
  checked = [m for m in document['measurements']
             if 'max_correct_difference_vs_loop' in m]
  assert {m['name'] for m in checked} >= {'lesion_throughput_engine_vmap',
                                          'lesion_throughput_process_per_setting'}
  for measurement in checked:
    assert measurement['max_correct_difference_vs_loop'] == 0, measurement['id']
  prefix_rows = [m for m in document['measurements']
                 if 'max_correct_difference_vs_engine' in m]
  assert prefix_rows
  for measurement in prefix_rows:
    assert measurement['max_correct_difference_vs_engine'] == 0, measurement['id']


def test_memory_rows_report_budget_and_chunk(smoke_run):
  _, document, _ = smoke_run
  sweeps = [m for m in document['measurements'] if m['name'] == 'peak_rss_sweep']
  assert [m['budget_mb'] for m in sweeps] == document['sizes']['memory_budgets_mb']
  for measurement in sweeps:
    assert measurement['unit'] == 'MiB'
    assert measurement['chunk_size'] >= 1
    assert measurement['settings'] == document['sizes']['memory_settings']


def test_markdown_names_machine_and_command(smoke_run):
  _, document, markdown = smoke_run
  assert document['machine']['cpu'] in markdown
  assert document['machine']['jax'] in markdown
  assert '--smoke' in markdown
  assert document['date'] in markdown
  for name in document['headlines']:
    assert f'`{name}`' in markdown


def test_torch_rows_match_installation(smoke_run):
  _, document, _ = smoke_run
  names = {m['name'] for m in document['measurements']}
  skipped = {entry['group'] for entry in document['skipped']}
  if HAS_TORCH:
    assert {'lesion_throughput_torch_eager', 'train_step_torch'} <= names
    assert not skipped
  else:
    assert 'lesion_throughput_torch_eager' not in names
    assert {'lesion/torch_eager', 'train/torch'} <= skipped


def test_runs_without_torch(tmp_path):
  # A package named torch that fails to import hides any installed PyTorch, also from
  # the worker processes, which inherit PYTHONPATH.
  fake = tmp_path / 'fake'
  (fake / 'torch').mkdir(parents=True)
  (fake / 'torch' / '__init__.py').write_text('raise ImportError("hidden by the test")\n')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(fake), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
  output_dir = str(tmp_path / 'out')
  finished = run_benchmark(output_dir, '--only', 'lesion', env=env)
  assert finished.returncode == 0, finished.stderr[-3000:]
  with open(os.path.join(output_dir, 'benchmarks.json'), encoding='utf-8') as f:
    document = json.load(f)
  names = {m['name'] for m in document['measurements']}
  assert 'lesion_throughput_engine_vmap' in names
  assert 'lesion_throughput_torch_eager' not in names
  reasons = [entry['reason'] for entry in document['skipped']]
  assert any('requirements-bench.txt' in reason for reason in reasons)


def test_unknown_group_rejected(tmp_path):
  output_dir = str(tmp_path / 'out')
  finished = run_benchmark(output_dir, '--only', 'lesion,bogus')
  assert finished.returncode == 2
  assert "unknown benchmark groups ['bogus']" in finished.stderr
  assert not os.path.exists(output_dir)


def test_ratio_of_different_units_rejected():
  recorder = records.Recorder()
  recorder.add('a', 'a', 2.0, 's')
  recorder.add('b', 'b', 4.0, 'images / s')
  with pytest.raises(ValueError, match='the units differ'):
    recorder.add_ratio('a_vs_b', 'a_vs_b', 'a', 'b')


def test_duplicate_id_rejected():
  recorder = records.Recorder()
  recorder.add('a', 'a', 1.0, 's')
  with pytest.raises(ValueError, match='recorded twice'):
    recorder.add('a', 'a', 2.0, 's')


def test_interleaved_timing_keeps_first_result():
  calls = []
  timed = timing.time_interleaved({'one': lambda: calls.append(1) or len(calls)},
                                  repeats=3)
  assert timed['one'].first_result == 1
  assert len(timed['one'].seconds) == 3
  assert len(calls) == 4


@pytest.mark.skipif(not HAS_TORCH, reason='PyTorch is not installed (requirements-bench.txt)')
@pytest.mark.parametrize('preactivation', [True, False])
@pytest.mark.parametrize('residual, shortcut', [(True, 'option_a'), (True, 'projection'),
                                                (False, 'option_a')])
def test_torch_twin_logits_agree(preactivation, residual, shortcut):
  import torch  # pylint: disable=import-outside-toplevel
  from resjax.benchmarks import torch_resnet  # pylint: disable=import-outside-toplevel

  model = cifar_resnet(14, preactivation=preactivation, residual=residual,
                       shortcut=shortcut, widths=(4, 8, 16))
  variables = weights.random_variables(model, 1, (16, 16, 3))
  images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  twin = torch_resnet.torch_twin(model, variables)
  deleted = [1, model.layouts[1].head] if residual else [1]
  gates = model.default_gates()
  forward = np.array(gates.forward)
  forward[deleted] = 0.0
  for blocks, setting in (([], None), (deleted, gates.replace(forward=forward))):
    expected = np.asarray(model.apply(variables, images, setting, train=False))
    with torch.inference_mode():
      logits = twin(torch_resnet.to_torch_images(images), blocks).numpy()
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAS_TORCH, reason='PyTorch is not installed (requirements-bench.txt)')
def test_torch_twin_rejects_undeletable_block():
  from resjax.benchmarks import torch_resnet  # pylint: disable=import-outside-toplevel

  model = cifar_resnet(14, preactivation=True, residual=False, widths=(4, 8, 16))
  twin = torch_resnet.torch_twin(model, weights.random_variables(model, 2, (16, 16, 3)))
  head = model.layouts[1].head
  with pytest.raises(ValueError, match=f'blocks \\[{head}\\] cannot be deleted'):
    twin(torch_resnet.to_torch_images(np.zeros((1, 16, 16, 3), np.float32)), [head])


def test_readme_quotes_docs_headlines():
  with open(os.path.join(ROOT, 'docs', 'benchmarks.json'), encoding='utf-8') as f:
    document = json.load(f)
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  assert not document['smoke'], 'docs/benchmarks.json must hold a full run, not --smoke'
  assert document['failed'] == []
  # Regenerate the README table with resjax.benchmarks.report.readme_table after a run.
  assert report.readme_table(document) in readme
