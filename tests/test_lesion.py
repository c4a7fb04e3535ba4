"""Tests of the gate-batch engine, the setting builders and the settings file reader."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from resjax.benchmarks import weights
from resjax.gates import share_leaves, stack_gates, unstack_gates, varying_leaves
from resjax.lesion import engine, recalibration, settings, studies
from resjax.lesion.settings_file import SettingsFileError, load_settings_file
from resjax.models import cifar_resnet
from resjax.models.layers import option_a_shortcut

IMAGE_SHAPE = (8, 8, 3)
NUM_IMAGES = 37  # not a multiple of the batch sizes used below


def _data(count=NUM_IMAGES, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(count,) + IMAGE_SHAPE).astype(np.float32)
  labels = rng.integers(10, size=count).astype(np.int32)
  return images, labels


_MODELS = {}


def _model(preactivation=True, residual=True):
  key = (preactivation, residual)
  if key not in _MODELS:
    model = cifar_resnet(14, preactivation=preactivation, residual=residual, num_classes=10)
    _MODELS[key] = (model, weights.random_variables(model, 0, IMAGE_SHAPE))
  return _MODELS[key]


_APPLY = {}


def _apply(model, variables, images, gates=None):
  """``model.apply`` in eval mode, jitted once per model."""
  if model not in _APPLY:
    _APPLY[model] = jax.jit(lambda v, x, g: model.apply(v, x, g, train=False))
  return _APPLY[model](variables, images, gates)


def _direct_totals(model, variables, images, labels, gates=None):
  logits = _apply(model, variables, images, gates)
  correct = int(np.sum(np.argmax(logits, -1) == labels))
  loss = float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
  return correct, loss


def _rebuilt_logits(model, variables, images, deleted):
  """Run the network without block ``deleted``, built by hand from its units, no gates."""
  x, _ = model.embed(variables, images, train=False)
  for layout in model.layouts:
    for block in layout.blocks:
      head = block == layout.head
      unit = model._unit(layout.index, head=head)  # pylint: disable=protected-access
      if block == deleted:
        if head:
          x = option_a_shortcut(x, model.widths[layout.index], unit.strides)
        continue
      shortcut, branch = unit.apply(model.block_parameters(variables, block), x, train=False)
      x = model.combine(x, shortcut, branch, None)
  classifier = {'params': variables['params']['classifier'],
                'batch_stats': variables['batch_stats']['classifier']}
  return model._classifier().apply(classifier, x, train=False)  # pylint: disable=protected-access


def _evaluate(model, variables, batch, **options):
  images, labels = _data()
  options.setdefault('batch_size', 16)
  options.setdefault('memory_budget_mb', 64)
  return engine.evaluate_settings(model, variables, images, labels, batch, **options)


# ------------------------------------------------------------------ engine: results


@pytest.mark.parametrize('preactivation', [True, False])
def test_deletion_equals_rebuilt_network(preactivation):
  model, variables = _model(preactivation)
  images, labels = _data()
  ordinary = model.interchangeable_blocks[1][0]
  downsampling = model.downsampling_blocks[0]
  forward = settings.single_deletions(model, [ordinary, downsampling])
  results = _evaluate(model, variables, settings.gates_from_forward(model, forward))

  for row, block in enumerate([ordinary, downsampling], start=1):
    logits = _rebuilt_logits(model, variables, images, block)
    gates = unstack_gates(settings.gates_from_forward(model, forward))[row]
    np.testing.assert_allclose(_apply(model, variables, images, gates), logits,
                               rtol=1e-5, atol=1e-5)
    correct = int(np.sum(np.argmax(logits, -1) == labels))
    loss = float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
    assert results.correct[row] == correct
    np.testing.assert_allclose(results.mean_loss[row], loss, rtol=1e-5)


def _mixed_batch(model):
  """Deletions, a scaled gate, a swap and the baseline: settings of one shape."""
  forward = settings.single_deletions(model, list(range(model.num_blocks)))
  forward = np.concatenate([forward, np.full((1, model.num_blocks), 0.5, np.float32)])
  batch = settings.gates_from_forward(model, forward)
  swapped = settings.original_orders(model)
  swapped[0] = swapped[0][::-1].copy()
  swap = settings.gates_from_orders(model, [swapped])
  return stack_gates(unstack_gates(batch) + unstack_gates(swap))


def test_batch_equals_one_at_a_time():
  model, variables = _model()
  images, labels = _data()
  batch = _mixed_batch(model)
  results = _evaluate(model, variables, batch)
  for row, gates in enumerate(unstack_gates(batch)):
    correct, loss = _direct_totals(model, variables, images, labels, gates)
    assert results.correct[row] == correct, f'setting {row}'
    np.testing.assert_allclose(results.mean_loss[row], loss, rtol=1e-5, err_msg=f'setting {row}')
  np.testing.assert_allclose(results.error, 1 - results.correct / NUM_IMAGES)


def test_repeated_blocks_equal_one_at_a_time():
  model, variables = _model()
  images, labels = _data()
  _, _, orders = settings.random_duplications(model, 2, 3, np.random.default_rng(0))
  rows = max(settings.group_by_shape(orders).values(), key=len)
  batch = settings.gates_from_orders(model, [orders[row] for row in rows])
  assert any(order.shape[1] > len(stack)
             for order, stack in zip(batch.order, model.interchangeable_blocks))
  results = _evaluate(model, variables, batch)
  for row, gates in enumerate(unstack_gates(batch)):
    correct, loss = _direct_totals(model, variables, images, labels, gates)
    assert results.correct[row] == correct, f'setting {row}'
    np.testing.assert_allclose(results.mean_loss[row], loss, rtol=1e-5, err_msg=f'setting {row}')


def test_only_differing_gates_are_vmapped():
  model, _ = _model()
  deletions = settings.gates_from_forward(
      model, settings.single_deletions(model, list(range(model.num_blocks))))
  # Forward gates always vary; the shared orders and backward gates lose their axis.
  varying = varying_leaves(deletions)
  assert varying == (True,) + (False,) * (len(varying) - 1)
  shared = share_leaves(deletions, varying)
  assert shared.forward.shape == deletions.forward.shape
  assert [order.shape for order in shared.order] == [
      order.shape[1:] for order in deletions.order]
  # The mixed batch swaps blocks of the first stack only.
  mixed = _mixed_batch(model)
  later_stacks = (False,) * (len(mixed.order) - 1)
  assert varying_leaves(mixed) == (True, False, False, True) + later_stacks


@pytest.mark.parametrize('chunk_size', [1, 3, 100])
def test_any_chunk_size_same_results(chunk_size):
  model, variables = _model()
  batch = _mixed_batch(model)
  reference = _evaluate(model, variables, batch)
  results = _evaluate(model, variables, batch, chunk_size=chunk_size)
  np.testing.assert_array_equal(results.correct, reference.correct)
  np.testing.assert_allclose(results.mean_loss, reference.mean_loss, rtol=1e-6)


@pytest.mark.parametrize('batch_size', [5, 16, 64])
def test_every_image_counted_once(batch_size):
  model, variables = _model()
  images, labels = _data()
  results = _evaluate(model, variables, settings.gates_from_forward(
      model, np.ones((1, model.num_blocks))), batch_size=batch_size)
  correct, loss = _direct_totals(model, variables, images, labels)
  assert results.count == NUM_IMAGES
  assert results.correct[0] == correct
  np.testing.assert_allclose(results.mean_loss[0], loss, rtol=1e-5)


_MULTI_DEVICE_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh
    from resjax.lesion import engine, settings
    sys.path.insert(0, sys.argv[1])
    import test_lesion
    model, variables = test_lesion._model()
    images, labels = test_lesion._data(21)
    forward = settings.single_deletions(model, list(range(model.num_blocks)))
    batch = settings.gates_from_forward(model, forward)
    out = {'devices': jax.device_count()}
    runs = [('one', jax.devices()[:1], None), ('four', jax.devices(), None),
            ('four_chunks_of_4', jax.devices(), 4)]
    for name, devices, chunk_size in runs:
      mesh = Mesh(np.asarray(devices), ('settings',))
      results = engine.evaluate_settings(model, variables, images, labels, batch,
                                         batch_size=8, memory_budget_mb=64, mesh=mesh,
                                         chunk_size=chunk_size)
      out[name] = {'correct': results.correct.tolist(), 'loss': results.mean_loss.tolist()}
    print(json.dumps(out))
''')


def test_four_devices_equal_one_device():
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
                     JAX_PLATFORMS='cpu')
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  completed = subprocess.run([sys.executable, '-c', _MULTI_DEVICE_SCRIPT, tests_dir],
                             env=environment,
                             capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  out = json.loads(completed.stdout.strip().splitlines()[-1])
  assert out['devices'] == 4
  for name in ('four', 'four_chunks_of_4'):
    assert out[name]['correct'] == out['one']['correct'], name
    np.testing.assert_allclose(out[name]['loss'], out['one']['loss'], rtol=1e-6, err_msg=name)


def test_recalibrated_statistics_average_batches():
  model, variables = _model()
  images, _ = _data(32)
  batches = recalibration.calibration_batches(images, 16)
  batch = settings.gates_from_forward(model, settings.single_deletions(model, [2]))
  statistics = recalibration.recalibrated_statistics(model, variables, batch,
                                                     jnp.asarray(batches))
  zero_momentum = dataclasses.replace(model, bn_momentum=0.0)
  gates = unstack_gates(batch)[1]
  train_apply = jax.jit(lambda v, x, g: zero_momentum.apply(v, x, g, train=True))
  per_batch = [train_apply(variables, x, gates)[1]['batch_stats'] for x in batches]
  stem = [stats['stem'] for stats in per_batch]
  classifier = [stats['classifier']['bn'] for stats in per_batch]
  assert not stem[0]  # the pre-activation stem has no BatchNorm
  mean = (classifier[0]['mean'] + classifier[1]['mean']) / 2
  second = sum(c['var'] + c['mean'] ** 2 for c in classifier) / 2
  np.testing.assert_allclose(statistics['classifier']['bn']['mean'][1], mean, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(statistics['classifier']['bn']['var'][1], second - mean ** 2,
                             rtol=1e-4, atol=1e-5)


def test_recalibrated_evaluation_uses_new_statistics():
  model, variables = _model()
  images, labels = _data()
  batch = settings.gates_from_forward(model, settings.single_deletions(model, [1]))
  calibration = engine.Calibration(images=images[:32], batch_size=16)
  results = _evaluate(model, variables, batch, calibration=calibration)
  statistics = recalibration.recalibrated_statistics(
      model, variables, batch, jnp.asarray(recalibration.calibration_batches(images[:32], 16)))
  for row, gates in enumerate(unstack_gates(batch)):
    setting_stats = jax.tree_util.tree_map(lambda leaf, row=row: leaf[row], statistics)
    setting_variables = {'params': variables['params'], 'batch_stats': setting_stats}
    correct, loss = _direct_totals(model, setting_variables, images, labels, gates)
    assert results.correct[row] == correct
    np.testing.assert_allclose(results.mean_loss[row], loss, rtol=1e-5)


# ------------------------------------------------------------- engine: chunk sizes


def test_chunk_size_fits_budget():
  setting_bytes = 3 * 2**20
  size = engine.choose_chunk_size(1000, setting_bytes, memory_budget_mb=64, devices=4)
  assert size % 4 == 0
  assert size / 4 * setting_bytes <= 64 * 2**20
  assert engine.choose_chunk_size(3, setting_bytes, memory_budget_mb=64, devices=4) == 4


def test_chunk_size_rejects_small_budget():
  with pytest.raises(ValueError, match='analysis.batch_size'):
    engine.choose_chunk_size(10, 2**30, memory_budget_mb=64, devices=1)


def test_analytic_estimate_of_cifar_stem():
  model, _ = _model()
  # The largest feature map is the stem output: 16 images of 8 x 8 x 16 float32 values.
  expected = engine.ACTIVATION_COPIES * 16 * 8 * 8 * 16 * 4
  assert engine.analytic_setting_bytes(model, (16,) + IMAGE_SHAPE) == expected


@pytest.mark.parametrize('activation_copies', [engine.ACTIVATION_COPIES, 1])
def test_chunks_fit_memory_budget(monkeypatch, activation_copies):
  # With 1 copy the analytic estimate is too low, so the compiled check must shrink the chunk.
  monkeypatch.setattr(engine, 'ACTIVATION_COPIES', activation_copies)
  # Programs cached by other tests were compiled without this budget.
  monkeypatch.setattr(engine, '_PROGRAMS', {})
  model, variables = _model()
  # Deletions share the orders, so the settings of a chunk run in one vmap and its
  # memory grows with the chunk (a batch whose orders differ runs one setting at a time).
  batch = settings.gates_from_forward(
      model, settings.single_deletions(model, list(range(model.num_blocks))))
  budget_mb = 1.5
  calls = []
  results = _evaluate(model, variables, batch, memory_budget_mb=budget_mb,
                      progress=calls.append)
  reference = _evaluate(model, variables, batch, chunk_size=100)
  np.testing.assert_array_equal(results.correct, reference.correct)
  assert sum(calls) == len(results.correct)
  assert len(calls) > 1
  chunk = max(calls)
  fitted = [programs for programs in engine._PROGRAMS.values()  # pylint: disable=protected-access
            if programs.chunk_size == chunk and programs.recalibrate is None]
  assert fitted
  assert all(programs.temp_bytes <= budget_mb * 2**20 for programs in fitted)


# ------------------------------------------------------------- engine: bad inputs


def test_plain_network_rejects_head_deletion():
  model, variables = _model(residual=False)
  head = model.layouts[1].head
  batch = settings.gates_from_forward(model, settings.single_deletions(model, [head]))
  with pytest.raises(ValueError, match='plain network cannot delete'):
    _evaluate(model, variables, batch)


def test_rejects_mismatched_labels():
  model, variables = _model()
  images, labels = _data()
  batch = settings.gates_from_forward(model, np.ones((1, model.num_blocks)))
  with pytest.raises(ValueError, match='one label per image'):
    engine.evaluate_settings(model, variables, images, labels[:-1], batch, batch_size=8,
                             memory_budget_mb=64)


def test_rejects_wrong_gate_width():
  model, _ = _model()
  with pytest.raises(ValueError, match=f'{model.num_blocks}'):
    settings.gates_from_forward(model, np.ones((2, model.num_blocks + 1)))


# ---------------------------------------------------------------------- settings


def test_kendall_tau_matches_scipy():
  rng = np.random.default_rng(0)
  original = np.arange(20)
  cases = [original.copy(), original[::-1].copy()] + [rng.permutation(20) for _ in range(20)]
  for order in cases:
    expected = scipy.stats.kendalltau(original, order).statistic
    assert settings.kendall_tau(original, order) == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_of_unsorted_items():
  first = np.asarray([5, 3, 9, 1])
  second = np.asarray([3, 5, 9, 1])
  positions = [list(second).index(item) for item in first]
  expected = scipy.stats.kendalltau(np.arange(4), positions).statistic
  assert settings.kendall_tau(first, second) == pytest.approx(expected)


def test_swaps_stay_within_stage():
  model = cifar_resnet(20, preactivation=True, residual=True, num_classes=10)
  swaps, orders = settings.random_swaps(model, 4, 5, np.random.default_rng(0))
  assert swaps == [k for k in range(1, 5) for _ in range(5)]
  for order in orders:
    for stage, stack in enumerate(model.interchangeable_blocks):
      assert sorted(order[stage].tolist()) == list(stack)
    sequence = settings.full_order(model, order)
    for head in model.downsampling_blocks:
      assert sequence[head] == head


def test_duplications_repeat_in_place():
  model = cifar_resnet(20, preactivation=True, residual=True, num_classes=10)
  counts, repeated, orders = settings.random_duplications(model, 3, 4,
                                                          np.random.default_rng(0))
  assert counts == [c for c in range(1, 4) for _ in range(4)]
  for count, blocks, order in zip(counts, repeated, orders):
    assert len(blocks) == count
    flat = np.concatenate(order).tolist()
    for block in blocks:
      at = flat.index(block)
      assert flat[at + 1] == block
    stacks = [b for stack in model.interchangeable_blocks for b in stack]
    assert sorted(set(flat)) == stacks
    assert len(flat) == len(stacks) + count


def test_random_deletions_distinct_sets():
  ks, deleted = settings.random_deletions(list(range(6)), 7, 10, np.random.default_rng(0))
  assert max(ks) == 6  # capped at the number of eligible blocks
  for k in range(1, 7):
    sets = [tuple(d) for d, k_row in zip(deleted, ks) if k_row == k]
    assert len(sets) == min(10, len(set(sets)))
    assert all(len(s) == k for s in sets)
  assert ks.count(1) == 6  # all 6 single deletions, fewer than the 10 requested


def test_group_by_shape():
  model = cifar_resnet(14, preactivation=True, residual=True, num_classes=10)
  _, _, orders = settings.random_duplications(model, 2, 3, np.random.default_rng(1))
  groups = settings.group_by_shape(orders)
  assert sorted(row for rows in groups.values() for row in rows) == list(range(len(orders)))
  for lengths, rows in groups.items():
    batch = settings.gates_from_orders(model, [orders[row] for row in rows])
    assert tuple(order.shape[1] for order in batch.order) == lengths


def test_study_multi_excludes_downsampling():
  model, variables = _model()
  images, labels = _data(16)
  evaluator = studies.Evaluator(model, variables, images, labels, batch_size=8,
                                memory_budget_mb=64)
  result = studies.lesion_multi(evaluator, max_k=20, samples=3, include_downsampling=False,
                                seed=0)
  eligible = set(result.data['eligible_blocks'])
  assert not eligible & set(model.downsampling_blocks)
  assert result.data['k'] == list(range(1, len(eligible) + 1))
  assert all(set(blocks) <= eligible for per_k in result.data['deleted_blocks']
             for blocks in per_k)
  assert len(result.rows) == sum(result.data['samples_per_k'])


# ------------------------------------------------------------------ settings file


def test_settings_file_csv_and_npy(tmp_path):
  model, _ = _model()
  rows = np.ones((3, model.num_blocks), np.float32)
  rows[1, 2] = 0.0
  rows[2, 0] = 0.5
  csv_path = tmp_path / 'gates.csv'
  csv_path.write_text('\n'.join(','.join(str(v) for v in row) for row in rows) + '\n\n')
  npy_path = tmp_path / 'gates.npy'
  np.save(npy_path, rows)
  np.testing.assert_array_equal(load_settings_file(str(csv_path), model), rows)
  np.testing.assert_array_equal(load_settings_file(str(npy_path), model), rows)


@pytest.mark.parametrize('name, content, message', [
    ('wide.csv', '1,1,1,1\n', r'line 1 has 4 values, expected 6'),
    ('text.csv', '1,1,1,1,1,1\n1,x,1,1,1,1\n', r"line 2, column 2 is 'x', not a number"),
    ('empty.csv', '', r'is empty'),
    ('nan.csv', '1,nan,1,1,1,1\n', r'row 1, column 2 is nan'),
    ('gates.txt', '1,1,1,1,1,1\n', r"extension '.txt'"),
])
def test_settings_file_errors(tmp_path, name, content, message):
  model, _ = _model()
  assert model.num_blocks == 6
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(SettingsFileError, match=message) as error:
    load_settings_file(str(path), model)
  assert str(path) in str(error.value)


def test_settings_file_npy_errors(tmp_path):
  model, _ = _model()
  wide = tmp_path / 'wide.npy'
  np.save(wide, np.ones((2, 5)))
  with pytest.raises(SettingsFileError, match=r'has 5 values, expected 6'):
    load_settings_file(str(wide), model)
  text = tmp_path / 'text.npy'
  np.save(text, np.asarray([list('abcdef')]))
  with pytest.raises(SettingsFileError, match='expected numbers'):
    load_settings_file(str(text), model)
  with pytest.raises(SettingsFileError, match='not found'):
    load_settings_file(str(tmp_path / 'missing.npy'), model)


def test_settings_file_plain_fixed_unit(tmp_path):
  model, _ = _model(residual=False)
  head = model.layouts[1].head
  rows = np.ones((1, model.num_blocks))
  rows[0, head] = 0
  path = tmp_path / 'plain.npy'
  np.save(path, rows)
  with pytest.raises(SettingsFileError, match=f'column {head + 1} sets the gate of unit {head}'):
    load_settings_file(str(path), model)
