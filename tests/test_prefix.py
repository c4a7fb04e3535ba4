"""Tests of the prefix-sharing single-deletion evaluator (resjax.lesion.prefix)."""

import jax
import numpy as np
import pytest

from resjax.benchmarks import weights
from resjax.lesion import engine, prefix
from resjax.lesion.settings import gates_from_forward
from resjax.models import cifar_resnet

IMAGE_SHAPE = (8, 8, 3)
WIDTHS = (4, 8, 16)


def random_variables(model, seed=0):
  """Random variables with BatchNorm statistics away from 0 and 1, for 8x8x3 images."""
  return weights.random_variables(model, seed, IMAGE_SHAPE)


def data(count, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(count,) + IMAGE_SHAPE).astype(np.float32)
  labels = rng.integers(10, size=count).astype(np.int32)
  return images, labels


def one_at_a_time(model, variables, images, blocks):
  """Logits of the baseline, then of each block deleted through its forward gate.

  One jitted call per setting, the gates passed as an argument, not vmapped.
  """
  default = model.default_gates()
  apply = jax.jit(lambda v, x, forward: model.apply(v, x, default.replace(forward=forward),
                                                    train=False))
  logits = []
  for block in (None, *blocks):
    forward = np.ones((model.num_blocks,), np.float32)
    if block is not None:
      forward[block] = 0.0
    logits.append(np.asarray(apply(variables, images, forward)))
  return np.stack(logits)


@pytest.mark.parametrize('preactivation', [True, False])
@pytest.mark.parametrize('group_size', [1, 2])
def test_logits_equal_one_at_a_time(preactivation, group_size):
  model = cifar_resnet(20, preactivation=preactivation, residual=True, widths=WIDTHS)
  variables = random_variables(model)
  images, _ = data(5)
  blocks = model.deletable_blocks
  logits = jax.jit(lambda v, x: prefix.single_deletion_logits(
      model, v, x, blocks, group_size=group_size))(variables, images)
  expected = one_at_a_time(model, variables, images, blocks)
  assert logits.shape == expected.shape
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)
  # Deleting a block must change the logits, or the comparison proves nothing.
  assert np.abs(expected[1:] - expected[:1]).max() > 1e-3


def test_plain_network_deletes_shape_preserving_units():
  model = cifar_resnet(14, preactivation=False, residual=False, widths=WIDTHS)
  variables = random_variables(model, seed=1)
  images, _ = data(4)
  blocks = model.deletable_blocks
  logits = prefix.single_deletion_logits(model, variables, images, blocks, group_size=2)
  np.testing.assert_allclose(np.asarray(logits),
                             one_at_a_time(model, variables, images, blocks),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('preactivation', [True, False])
def test_results_equal_engine(preactivation):
  model = cifar_resnet(14, preactivation=preactivation, residual=True, widths=WIDTHS)
  variables = random_variables(model, seed=2)
  images, labels = data(23)  # not a multiple of the batch size below
  blocks = model.deletable_blocks
  forward = np.ones((len(blocks), model.num_blocks), np.float32)
  forward[np.arange(len(blocks)), blocks] = 0.0
  expected = engine.evaluate_settings(model, variables, images, labels,
                                      gates_from_forward(model, forward), batch_size=8,
                                      memory_budget_mb=64)
  result = prefix.evaluate_single_deletions(model, variables, images, labels, blocks,
                                            batch_size=8)
  assert result.blocks == tuple(blocks)
  assert result.deletions.count == len(images)
  np.testing.assert_array_equal(result.deletions.correct, expected.correct)
  np.testing.assert_allclose(result.deletions.mean_loss, expected.mean_loss, rtol=1e-5)
  np.testing.assert_allclose(result.deletions.error, expected.error)


def test_every_image_counted_once():
  model = cifar_resnet(8, preactivation=True, residual=True, widths=WIDTHS)
  variables = random_variables(model, seed=3)
  images, _ = data(11)
  baseline = np.argmax(np.asarray(model.apply(variables, images, train=False)), axis=-1)
  # Labels equal to the baseline's predictions: the baseline classifies every image
  # correctly, so its correct count is the number of images counted.
  result = prefix.evaluate_single_deletions(model, variables, images,
                                            baseline.astype(np.int32), batch_size=4)
  assert result.baseline.count == 11
  assert result.baseline.correct.tolist() == [11]
  assert result.baseline.error.tolist() == [0.0]


def test_results_follow_requested_order():
  model = cifar_resnet(14, preactivation=True, residual=True, widths=WIDTHS)
  variables = random_variables(model, seed=4)
  images, labels = data(9)
  ascending = prefix.evaluate_single_deletions(model, variables, images, labels, (0, 2, 4),
                                               batch_size=9)
  shuffled = prefix.evaluate_single_deletions(model, variables, images, labels, (4, 0, 2),
                                              batch_size=9)
  assert shuffled.blocks == (4, 0, 2)
  np.testing.assert_allclose(shuffled.deletions.mean_loss,
                             ascending.deletions.mean_loss[[2, 0, 1]], rtol=1e-6)


def test_memory_budget_lowers_batch_size():
  model = cifar_resnet(14, preactivation=True, residual=True, widths=WIDTHS)
  blocks = model.deletable_blocks
  per_image = prefix.image_bytes(model, blocks, IMAGE_SHAPE)
  budget_mb = 3.5 * per_image / 2**20
  assert prefix.choose_batch_size(model, blocks, IMAGE_SHAPE, 100, budget_mb) == 3
  assert prefix.choose_batch_size(model, blocks, IMAGE_SHAPE, 2, budget_mb) == 2
  with pytest.raises(ValueError, match='over the memory budget'):
    prefix.choose_batch_size(model, blocks, IMAGE_SHAPE, 100, 0.5 * per_image / 2**20)


def test_rows_at_blocks_counts_resnet110_work():
  model = cifar_resnet(110, preactivation=True, residual=True)
  rows = prefix.rows_at_blocks(model, model.deletable_blocks)
  assert rows[0] == 1
  assert rows[-1] == 54
  # 54 * 55 / 2 block evaluations, against 54 * 54 for 54 whole networks.
  assert sum(rows) == 1485


@pytest.mark.parametrize('blocks, message', [
    ((), 'blocks is empty'),
    ((1, 1), 'listed more than once'),
    ((99,), 'cannot be deleted'),
    ((1.5,), 'integer block indices'),
])
def test_bad_blocks_rejected(blocks, message):
  model = cifar_resnet(14, preactivation=True, residual=True, widths=WIDTHS)
  with pytest.raises(ValueError, match=message):
    prefix.check_blocks(model, blocks)


def test_plain_head_cannot_be_deleted():
  model = cifar_resnet(14, preactivation=True, residual=False, widths=WIDTHS)
  head = model.layouts[1].head
  with pytest.raises(ValueError, match=f'blocks \\[{head}\\] cannot be deleted'):
    prefix.check_blocks(model, (head,))


@pytest.mark.parametrize('change, message', [
    (lambda x, y: (x[0], y), 'expected \\[N, H, W, C\\]'),
    (lambda x, y: (x.astype(np.int32), y), 'expected float32 images'),
    (lambda x, y: (x, y[:-1]), 'one label per image'),
    (lambda x, y: (x[:0], y[:0]), 'images is empty'),
])
def test_bad_data_rejected(change, message):
  model = cifar_resnet(8, preactivation=True, residual=True, widths=WIDTHS)
  variables = random_variables(model)
  images, labels = change(*data(3))
  with pytest.raises(ValueError, match=message):
    prefix.evaluate_single_deletions(model, variables, images, labels, batch_size=2)


@pytest.mark.parametrize('group_size', [0, 1.5, True])
def test_bad_group_size_rejected(group_size):
  model = cifar_resnet(8, preactivation=True, residual=True, widths=WIDTHS)
  images, labels = data(2)
  with pytest.raises(ValueError, match='group_size must be a positive integer'):
    prefix.evaluate_single_deletions(model, random_variables(model), images, labels,
                                     batch_size=2, group_size=group_size)
