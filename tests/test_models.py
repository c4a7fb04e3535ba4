"""Tests of the gated ResNets: structure, gate semantics and vmapping."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resjax.gates import Gates, stack_gates
from resjax.models import cifar_resnet, imagenet_resnet
from resjax.models.layers import option_a_shortcut

FORMS = [pytest.param(False, id='post_activation'), pytest.param(True, id='pre_activation')]


@functools.lru_cache
def _compiled_apply(model):
  # One jitted apply per model: eager apply would dispatch op by op.
  return jax.jit(lambda v, x, g: model.apply(v, x, g, train=False))


def _logits(model, variables, images, gates=None):
  return _compiled_apply(model)(variables, images, gates)


def _images(batch=3, size=16, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


@functools.lru_cache
def _model_and_variables(preactivation, depth=14, residual=True, seed=0):
  model = cifar_resnet(depth, preactivation=preactivation, residual=residual)
  variables = jax.jit(model.init)(jax.random.key(seed), _images())
  # Random BatchNorm statistics, so that running averages matter in every check.
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables['batch_stats'])
  keys = jax.random.split(jax.random.key(seed + 7), len(leaves))
  randomized = []
  for key, (path, leaf) in zip(keys, leaves):
    noise = jax.random.uniform(key, leaf.shape)
    is_mean = jax.tree_util.keystr(path).endswith("['mean']")
    randomized.append(0.4 * (noise - 0.5) if is_mean else 0.5 + noise)
  variables = {'params': variables['params'],
               'batch_stats': jax.tree_util.tree_unflatten(tree, randomized)}
  return model, variables


def _run_blocks_by_hand(model, variables, images, blocks, deleted=()):
  """Assemble the network block by block from a list of global block indices.

  Blocks in ``deleted`` keep only their shortcut. This is the model built without
  the gate machinery, to compare the gated model against.
  """
  x, _ = model.embed(variables, images, train=False)
  heads = {layout.head: layout.index for layout in model.layouts}
  stage_of = model.stage_of_block()
  for block in blocks:
    unit = model._unit(stage_of[block], head=block in heads)
    shortcut, branch = unit.apply(model.block_parameters(variables, block), x, train=False)
    if block in deleted:
      total = shortcut
    else:
      total = shortcut + branch
    x = total if model.preactivation else jax.nn.relu(total)
  classifier_vars = {'params': variables['params']['classifier'],
                     'batch_stats': variables['batch_stats']['classifier']}
  return model._classifier().apply(classifier_vars, x, train=False)


# ------------------------------------------------------------------ structure


def test_cifar_resnet110_parameter_count():
  model = cifar_resnet(110, preactivation=True, residual=True)
  assert model.num_blocks == 54
  assert model.num_params() == pytest.approx(1.7e6, rel=0.03)
  assert model.downsampling_blocks == (18, 36)


def test_imagenet_parameter_counts():
  resnet50 = imagenet_resnet(50, preactivation=False, residual=True)
  assert resnet50.num_params() == pytest.approx(25.6e6, rel=0.01)
  resnet18 = imagenet_resnet(18, preactivation=False, residual=True)
  assert resnet18.num_params() == pytest.approx(11.7e6, rel=0.01)
  resnet200 = imagenet_resnet(200, preactivation=True, residual=True)
  assert resnet200.num_blocks == 66
  assert resnet200.downsampling_blocks == (3, 27, 63)


def test_imagenet_output_shape():
  model = imagenet_resnet(50, preactivation=False, residual=True, num_classes=7)
  images = jnp.zeros((2, 64, 64, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  logits = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
  assert logits.shape == (2, 7)
  assert logits.dtype == jnp.float32


def test_bottleneck_first_stage_head_is_not_downsampling():
  model = imagenet_resnet(50, preactivation=False, residual=True)
  assert model.layouts[0].head == 0
  assert 0 not in model.downsampling_blocks
  assert model.interchangeable_blocks[0] == (1, 2)


def test_cifar_depth_must_be_6n_plus_2():
  with pytest.raises(ValueError, match='6n\\+2'):
    cifar_resnet(21, preactivation=True, residual=True)


def test_path_length_counts_sum_to_all_paths():
  for depth in (8, 20, 110):
    model = cifar_resnet(depth, preactivation=True, residual=True)
    counts = model.path_length_counts()
    assert len(counts) == model.num_blocks + 1
    assert sum(counts) == 2 ** model.num_blocks
    assert counts[1] == model.num_blocks


def test_describe_keys():
  model = cifar_resnet(20, preactivation=True, residual=False)
  description = model.describe()
  for key in ('num_blocks', 'num_params', 'downsampling_blocks', 'stages',
              'path_length_counts'):
    assert key in description
  assert description['num_blocks'] == 9
  assert description['downsampling_blocks'] == [3, 6]
  assert description['deletable_blocks'] == [0, 1, 2, 4, 5, 7, 8]


# ---------------------------------------------------------------- forward gates


@pytest.mark.parametrize('preactivation', FORMS)
def test_default_gates_equal_ungated(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  ungated = _logits(model, variables, images)
  gated = _logits(model, variables, images, model.default_gates())
  np.testing.assert_array_equal(np.asarray(gated), np.asarray(ungated))


def test_default_gates_equal_ungated_plain():
  model, variables = _model_and_variables(True, residual=False)
  images = _images()
  ungated = _logits(model, variables, images)
  gated = _logits(model, variables, images, model.default_gates())
  np.testing.assert_array_equal(np.asarray(gated), np.asarray(ungated))


@pytest.mark.parametrize('preactivation', FORMS)
def test_ungated_equals_network_by_hand(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  expected = _run_blocks_by_hand(model, variables, images, range(model.num_blocks))
  actual = _logits(model, variables, images)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('preactivation', FORMS)
@pytest.mark.parametrize('block', [1, 2], ids=['ordinary', 'downsampling'])
def test_zero_forward_gate_deletes_block(preactivation, block):
  model, variables = _model_and_variables(preactivation)
  assert (block in model.downsampling_blocks) == (block == 2)
  images = _images()
  gates = model.default_gates()
  forward = np.ones(model.num_blocks, np.float32)
  forward[block] = 0.0
  deleted = _logits(model, variables, images, gates.replace(forward=forward))
  expected = _run_blocks_by_hand(model, variables, images, range(model.num_blocks),
                                 deleted={block})
  np.testing.assert_allclose(deleted, expected, rtol=1e-5, atol=1e-5)
  intact = _logits(model, variables, images)
  assert not np.allclose(deleted, intact)


def test_fractional_forward_gate_interpolates_branch():
  model, variables = _model_and_variables(True)
  images = _images()
  forward = np.ones(model.num_blocks, np.float32)
  forward[-1] = 0.5
  gates = model.default_gates().replace(forward=forward)
  half = model.features(variables, images, gates, train=False)[0]
  ones = model.features(variables, images, None, train=False)[0]
  forward[-1] = 0.0
  zero = model.features(variables, images, gates.replace(forward=forward), train=False)[0]
  np.testing.assert_allclose(half, (ones + zero) / 2, rtol=1e-5, atol=1e-5)


def test_plain_deletion_is_identity():
  model, variables = _model_and_variables(False, residual=False)
  images = _images()
  x, _ = model.embed(variables, images, train=False)
  forward = np.ones(model.num_blocks, np.float32)
  forward[0] = 0.0
  gates = model.default_gates().replace(forward=forward)
  # With unit 0 deleted, the stage runs unit 1 directly on the stem output.
  layout = model.layouts[0]
  stage_params = variables['params']['stage0']
  stage_stats = variables['batch_stats']['stage0']
  deleted, _ = model.run_stage(stage_params, stage_stats, layout, x, gates, train=False)
  only_second = gates.replace(order=(np.array([1], np.int32),) + gates.order[1:])
  expected, _ = model.run_stage(stage_params, stage_stats, layout, x, only_second,
                                train=False)
  np.testing.assert_allclose(deleted, expected, rtol=1e-6, atol=1e-6)


def test_plain_rejects_deleting_shape_changing_unit():
  model, variables = _model_and_variables(True, residual=False)
  forward = np.ones(model.num_blocks, np.float32)
  forward[2] = 0.0
  with pytest.raises(ValueError, match='cannot delete or scale units \\[2, 4\\]'):
    model.apply(variables, _images(), model.default_gates().replace(forward=forward),
                train=False)


# --------------------------------------------------------------- backward gates


@pytest.mark.parametrize('preactivation', FORMS)
def test_backward_gates_leave_logits_unchanged(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  rng = np.random.default_rng(0)
  gates = model.default_gates().replace(
      backward_branch=rng.integers(0, 2, model.num_blocks).astype(np.float32),
      backward_shortcut=rng.random(model.num_blocks).astype(np.float32))
  np.testing.assert_array_equal(
      np.asarray(_logits(model, variables, images, gates)),
      np.asarray(_logits(model, variables, images, model.default_gates())))


@pytest.mark.parametrize('preactivation', FORMS)
def test_closed_branch_gate_zeroes_branch_gradient(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  closed = 1  # position 1 of stage 0's stack
  backward_branch = np.ones(model.num_blocks, np.float32)
  backward_branch[closed] = 0.0
  gates = model.default_gates().replace(backward_branch=backward_branch)

  def loss(params):
    logits = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                         images, gates, train=False)
    return jnp.sum(logits ** 2)

  grads = jax.jit(jax.grad(loss))(variables['params'])
  stack = grads['stage0']['stack']
  for leaf in jax.tree_util.tree_leaves(stack):
    assert np.all(np.asarray(leaf[closed]) == 0.0)
    assert np.any(np.asarray(leaf[0]) != 0.0)


def test_single_path_gradient_through_backward_gates():
  """Branch gates open on a set S and shortcut gates open elsewhere select one path."""
  model, variables = _model_and_variables(True, depth=8)
  images = _images()
  x, _ = model.embed(variables, images, train=False)

  def output(x_in, gates):
    # Everything after the stem, as a function of the stem output.
    features = x_in
    for layout in model.layouts:
      features, _ = model.run_stage(variables['params'][f'stage{layout.index}'],
                                    variables['batch_stats'][f'stage{layout.index}'],
                                    layout, features, gates, train=False)
    return jnp.sum(features)

  gradient = jax.jit(jax.grad(output))
  total = gradient(x, model.default_gates())
  summed = jnp.zeros_like(total)
  n = model.num_blocks
  for mask in range(2 ** n):
    on_path = np.array([(mask >> i) & 1 for i in range(n)], np.float32)
    gates = model.default_gates().replace(backward_branch=on_path,
                                          backward_shortcut=1.0 - on_path)
    summed = summed + gradient(x, gates)
  # The 2^n single-path gradients add up to the whole gradient.
  np.testing.assert_allclose(summed, total, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ orders


@pytest.mark.parametrize('preactivation', FORMS)
def test_swapped_order_equals_swapped_parameters(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  assert model.interchangeable_blocks[0] == (0, 1)
  gates = model.default_gates()
  swapped = gates.replace(order=(np.array([1, 0], np.int32),) + gates.order[1:])
  by_order = _logits(model, variables, images, swapped)

  def swap(tree):
    return jax.tree_util.tree_map(lambda leaf: leaf[::-1], tree)

  params = dict(variables['params'])
  stats = dict(variables['batch_stats'])
  params['stage0'] = {'stack': swap(params['stage0']['stack'])}
  stats['stage0'] = {'stack': swap(stats['stage0']['stack'])}
  by_params = _logits(model, {'params': params, 'batch_stats': stats}, images)
  np.testing.assert_allclose(by_order, by_params, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('preactivation', FORMS)
def test_repeated_index_runs_block_twice(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  gates = model.default_gates()
  repeated = gates.replace(order=(np.array([0, 1, 1], np.int32),) + gates.order[1:])
  actual = _logits(model, variables, images, repeated)
  blocks = [0, 1, 1] + list(range(2, model.num_blocks))
  expected = _run_blocks_by_hand(model, variables, images, blocks)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_order_naming_downsampling_block_is_rejected():
  model, variables = _model_and_variables(True)
  gates = model.default_gates()
  bad = gates.replace(order=(np.array([0, 2], np.int32),) + gates.order[1:])
  with pytest.raises(ValueError, match=r'names blocks \[2\].*6 blocks.*stage 0: 0\.\.1'):
    model.apply(variables, _images(), bad, train=False)


def test_gate_of_wrong_length_is_rejected():
  model, variables = _model_and_variables(True)
  gates = model.default_gates().replace(forward=np.ones(5, np.float32))
  with pytest.raises(ValueError, match='gates.forward has shape \\(5,\\).*num_blocks=6'):
    jax.jit(lambda g: model.apply(variables, _images(), g, train=False))(gates)


def test_batched_gates_without_vmap_are_rejected():
  model, variables = _model_and_variables(True)
  batch = stack_gates([model.default_gates()] * 2)
  with pytest.raises(ValueError, match='jax.vmap'):
    model.apply(variables, _images(), batch, train=False)


# ---------------------------------------------------------------- vmapping


@pytest.mark.parametrize('preactivation', FORMS)
def test_vmapped_settings_equal_loop(preactivation):
  model, variables = _model_and_variables(preactivation)
  images = _images()
  rng = np.random.default_rng(3)
  settings = []
  for _ in range(16):
    stage0 = rng.permutation([0, 1]).astype(np.int32)
    settings.append(model.default_gates().replace(
        forward=rng.random(model.num_blocks).astype(np.float32),
        order=(stage0,) + model.default_gates().order[1:]))
  run = jax.jit(jax.vmap(lambda g: _logits(model, variables, images, g)))
  batched = run(stack_gates(settings))
  looped = np.stack([_logits(model, variables, images, s) for s in settings])
  np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)


def test_gate_values_do_not_retrace():
  model, variables = _model_and_variables(True)
  images = _images()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(gates):
    return _logits(model, variables, images, gates)

  for value in (1.0, 0.0, 0.5):
    forward = np.full(model.num_blocks, value, np.float32)
    run(model.default_gates().replace(forward=forward))
  chex.clear_trace_counter()


# ----------------------------------------------------------- training mode


def test_train_mode_updates_batch_statistics():
  model, variables = _model_and_variables(False)
  images = _images()
  logits, updates = model.apply(variables, images, model.default_gates(), train=True)
  assert logits.shape == (3, 10)
  assert (jax.tree_util.tree_structure(updates['batch_stats'])
          == jax.tree_util.tree_structure(variables['batch_stats']))
  old = variables['batch_stats']['stage0']['stack']['bn1']['mean']
  new = updates['batch_stats']['stage0']['stack']['bn1']['mean']
  assert not np.allclose(old, new)


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
  model = cifar_resnet(8, preactivation=True, residual=True, dtype=jnp.bfloat16)
  images = _images()
  variables = model.init(jax.random.key(0), images)
  for leaf in jax.tree_util.tree_leaves(variables['params']):
    assert leaf.dtype == jnp.float32
  logits = _logits(model, variables, images, model.default_gates())
  assert logits.dtype == jnp.float32
  reference = cifar_resnet(8, preactivation=True, residual=True).apply(
      variables, images, train=False)
  np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)


def test_option_a_shortcut_pads_channels():
  x = jnp.arange(2 * 4 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 4, 2)
  y = option_a_shortcut(x, 6, 2)
  assert y.shape == (2, 2, 2, 6)
  np.testing.assert_array_equal(y[..., 2:4], x[:, ::2, ::2, :])
  assert float(jnp.abs(y[..., :2]).sum() + jnp.abs(y[..., 4:]).sum()) == 0.0


def test_gates_are_a_pytree():
  model = cifar_resnet(8, preactivation=True, residual=True)
  gates = model.default_gates()
  leaves = jax.tree_util.tree_leaves(gates)
  assert len(leaves) == 3 + len(gates.order)
  assert isinstance(jax.tree_util.tree_map(lambda x: x, gates), Gates)
  assert math.isclose(float(np.sum(gates.forward)), model.num_blocks)
