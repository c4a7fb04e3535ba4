"""Tests of the path analyses against a brute force over all 2**n paths of tiny networks."""

import itertools
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resjax.config_base import base_config
from resjax.errors import ConfigError
from resjax.gates import Gates
from resjax.models import cifar_resnet
from resjax.paths import counts, exact, objective, sampled, study

# (pre-activation, BatchNorm mode): both unit forms and both BatchNorm modes are covered.
FORMS = [pytest.param((False, 'train'), id='post_activation-train'),
         pytest.param((True, 'eval'), id='pre_activation-eval')]
NUM_IMAGES = 3


def _tiny_model(preactivation, residual=True):
  # Depth 14: stages of 2 blocks, so 6 blocks and 64 paths. Stage 0 has no head (the
  # stem is as wide as stage 0); stages 1 and 2 open with an option-A head.
  return cifar_resnet(14, preactivation=preactivation, residual=residual, widths=(4, 8, 16))


def _images_and_labels(count=NUM_IMAGES, seed=0):
  images = jax.random.normal(jax.random.key(seed), (count, 8, 8, 3))
  return images, jnp.arange(count, dtype=jnp.int32) % 10


def _variables(model, images, seed=1):
  """Random variables of the shapes ``model.init`` gives, drawn with numpy.

  ``model.init`` of the tiny model takes 15 to 20 s of CPU time, eager or jitted, so
  the tests fill the shapes directly: He-scaled kernels, BatchNorm scales and running
  variances around 1, biases and running means around 0. The running averages are far
  from their initial values, so that the 'eval' mode matters in every check.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_in = math.prod(shape.shape[-4:-1]) if 'conv' in name else shape.shape[-2]
      return rng.normal(0, math.sqrt(2 / fan_in), shape.shape)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return rng.uniform(0.5, 1.5, shape.shape)
    return rng.uniform(-0.2, 0.2, shape.shape)

  drawn = jax.tree_util.tree_map_with_path(draw, shapes)
  return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, jnp.float32), drawn)


class Setup:
  """A tiny network, its stem output and the gradient of every single path."""

  def __init__(self, preactivation, batchnorm):
    self.model = _tiny_model(preactivation)
    self.batchnorm = batchnorm
    self.images, self.labels = _images_and_labels()
    self.variables = _variables(self.model, self.images)
    self.stem = objective.stem_output(self.model, self.variables, self.images,
                                      batchnorm=batchnorm)
    n = self.model.num_blocks
    self.paths = np.array(list(itertools.product([0.0, 1.0], repeat=n)), np.float32)
    self.path_lengths = self.paths.sum(axis=1).astype(int)
    self.path_gradients = self._brute_force()
    self.ordinary = np.asarray(jax.jit(exact.ordinary_gradient, static_argnums=(0, 4))(
        self.model, self.variables, self.stem, self.labels, batchnorm))

  def _brute_force(self):
    """One ordinary backward pass per path through the model's backward gates."""
    model = self.model
    order = tuple(jnp.asarray(stack) for stack in model.default_gates().order)

    @jax.jit
    def one_path(branch):
      gates = Gates(forward=jnp.ones_like(branch), backward_branch=branch,
                    backward_shortcut=1 - branch, order=order)
      return jax.grad(objective.loss_from_stem, argnums=2)(
          model, self.variables, self.stem, self.labels, gates, batchnorm=self.batchnorm)

    return np.stack([np.asarray(one_path(branch)) for branch in self.paths])


_SETUPS = {}


@pytest.fixture(params=FORMS)
def setup(request):
  if request.param not in _SETUPS:
    _SETUPS[request.param] = Setup(*request.param)
  return _SETUPS[request.param]


# ------------------------------------------------------------------------- counts


def test_counts_sum_to_all_paths():
  for n in (0, 1, 6, 54, 600):
    assert sum(counts.path_length_counts(n)) == 2**n
    assert len(counts.path_length_counts(n)) == n + 1
  fractions = counts.path_length_fractions(600)
  assert math.isclose(math.fsum(fractions), 1.0, rel_tol=1e-12)
  assert fractions[300] == max(fractions)


def test_distribution_of_resnet_110():
  result = counts.path_length_distribution(54)
  assert result['lengths'] == list(range(55))
  assert result['total_paths'] == 2**54
  first, last = result['interval_95']
  contained = sum(result['counts'][first:last + 1])
  assert contained >= 0.95 * 2**54
  # Dropping a length at either end leaves less than 95%.
  assert sum(result['counts'][first + 1:last + 1]) < 0.95 * 2**54
  assert sum(result['counts'][first:last]) < 0.95 * 2**54
  assert first + last == 54  # central: symmetric around n / 2


def test_shortest_interval_known_cases():
  assert counts.shortest_interval([0, 0, 5, 0], 1.0) == (2, 2)
  assert counts.shortest_interval([1, 1, 1, 1], 0.5) == (0, 1)
  # Equal lengths: the larger weight wins, then the leftmost.
  assert counts.shortest_interval([2, 2, 1, 3], 0.55) == (1, 3)
  assert counts.shortest_interval([3, 1, 1, 3], 0.25) == (0, 0)
  assert counts.shortest_interval([0.1, 0.7, 0.2], 0.9) == (1, 2)
  assert counts.shortest_interval([1, 3, 3, 1], 0.95) == (0, 3)
  # Integer weights far beyond float range are compared exactly.
  huge = 10**400
  assert counts.shortest_interval([1, huge, huge + 2, 1], 0.5) == (2, 2)


def test_shortest_interval_rejects_bad_input():
  with pytest.raises(ValueError, match='share must be in'):
    counts.shortest_interval([1, 2], 0.0)
  with pytest.raises(ValueError, match='non-negative'):
    counts.shortest_interval([1, -2], 0.5)
  with pytest.raises(ValueError, match='every weight is 0'):
    counts.shortest_interval([0, 0], 0.5)
  with pytest.raises(ValueError, match='non-negative integer'):
    counts.path_length_counts(-1)


# -------------------------------------------------------------------------- exact


def test_exact_matches_brute_force(setup):
  n = setup.model.num_blocks
  brute = np.stack([setup.path_gradients[setup.path_lengths == k].sum(axis=0)
                    for k in range(n + 1)])
  # Segments of one block and small length chunks in one form, one segment per stack
  # and unchunked products in the other.
  options = ({'segments_per_stage': 1, 'lengths_per_call': 64} if setup.batchnorm == 'train'
             else {'segments_per_stage': 2, 'lengths_per_call': 2})
  decomposed = np.asarray(exact.exact_path_gradients(
      setup.model, setup.variables, setup.stem, setup.labels, batchnorm=setup.batchnorm,
      **options))
  assert decomposed.shape == (n + 1,) + setup.stem.shape
  scale = np.abs(brute).max()
  for k in range(n + 1):
    np.testing.assert_allclose(decomposed[k], brute[k], rtol=1e-4, atol=1e-5 * scale,
                               err_msg=f'length {k}')
  # All paths together are the ordinary network.
  np.testing.assert_allclose(brute.sum(axis=0), setup.ordinary, rtol=1e-4, atol=1e-5 * scale)
  np.testing.assert_allclose(decomposed.sum(axis=0), setup.ordinary, rtol=1e-4,
                             atol=1e-5 * scale)


def test_loss_from_stem_matches_model_apply(setup):
  loss = objective.loss_from_stem(setup.model, setup.variables, setup.stem, setup.labels,
                                  None, batchnorm=setup.batchnorm)
  apply = jax.jit(lambda v, x: setup.model.apply(v, x, train=setup.batchnorm == 'train'))
  logits = apply(setup.variables, setup.images)
  if setup.batchnorm == 'train':
    logits = logits[0]
  expected = optax.softmax_cross_entropy_with_integer_labels(logits, setup.labels).sum()
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------------------ sampled


def test_path_sets_enumerate_and_sample():
  n = 6
  sets = list(sampled.path_sets(n, samples=10, seed=0))
  assert [length for length, _ in sets] == list(range(n + 1))
  for length, rows in sets:
    assert rows.shape == (min(math.comb(n, length), 10), n)
    assert np.all(rows.sum(axis=1) == length)
    if math.comb(n, length) <= 10:
      assert len({row.tobytes() for row in rows}) == len(rows)
  again = list(sampled.path_sets(n, samples=10, seed=0))
  other = list(sampled.path_sets(n, samples=10, seed=1))
  assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(sets, again))
  assert not np.array_equal(sets[3][1], other[3][1])
  assert sampled.samples_per_length(n, 10) == [1, 6, 10, 10, 10, 6, 1]


def test_path_sets_reject_bad_samples():
  with pytest.raises(ConfigError, match='path_samples'):
    next(sampled.path_sets(4, samples=0, seed=0))


def test_sampled_matches_brute_force(setup):
  n = setup.model.num_blocks
  # 20 >= C(6, k) for every k, so every path is measured exactly once. 24 paths per call
  # leave a padded last call.
  runner = sampled.PathGradientRunner(setup.model, setup.variables, setup.stem, setup.labels,
                                      batchnorm=setup.batchnorm)
  runner.compile(24)
  measured = runner.measure(samples=20, seed=0)
  assert measured.exhaustive == [True] * (n + 1)
  assert measured.samples_per_length == counts.path_length_counts(n)
  brute_norms = np.linalg.norm(
      setup.path_gradients.reshape(len(setup.paths), NUM_IMAGES, -1), axis=2).mean(axis=1)
  for k in range(n + 1):
    of_length = brute_norms[setup.path_lengths == k]
    assert measured.means[k] == pytest.approx(of_length.mean(), rel=1e-4), f'length {k}'
    assert measured.stds[k] == pytest.approx(of_length.std(), rel=1e-3, abs=1e-7), \
        f'length {k}'


def test_paths_within_budget():
  mib = 2**20
  # 10 MiB shared and 2 MiB per path: 1 path takes 12 MiB, 8 paths take 26 MiB.
  assert sampled.paths_within_budget(12 * mib, 26 * mib, 8, 20 * mib) == 5
  assert sampled.paths_within_budget(12 * mib, 26 * mib, 8, 100 * mib) == 8
  assert sampled.paths_within_budget(12 * mib, 26 * mib, 8, 12 * mib) == 1
  assert sampled.paths_within_budget(12 * mib, 26 * mib, 8, 11 * mib) == 0


# -------------------------------------------------------------------------- study


def _analysis_config(**changes):
  config = base_config().analysis
  config.path_batch_size = NUM_IMAGES
  config.path_samples = 4
  config.memory_budget_mb = 64
  config.update(changes)
  return config


def test_run_path_analyses_writes_everything(tmp_path):
  model = _tiny_model(preactivation=False)
  images, labels = _images_and_labels(count=5)
  variables = _variables(model, images)
  analyses, figures_dir = str(tmp_path / 'analyses'), str(tmp_path / 'figures')
  written = study.run_path_analyses(model, variables, np.asarray(images), np.asarray(labels),
                                    _analysis_config(), analyses, figures_dir)

  names = sorted(os.path.basename(path) for path in written)
  assert names == ['path_contribution.png', 'path_gradient_norm.png', 'path_gradients.json',
                   'path_lengths.json', 'path_lengths.png']
  assert sorted(os.listdir(analyses)) == ['path_gradients.csv', 'path_gradients.json',
                                          'path_lengths.csv', 'path_lengths.json']
  assert sorted(os.listdir(figures_dir)) == ['path_contribution.png',
                                             'path_gradient_norm.png', 'path_lengths.png']
  n = model.num_blocks
  lengths = json.load(open(os.path.join(analyses, 'path_lengths.json'), encoding='utf-8'))
  assert lengths['lengths'] == list(range(n + 1))
  assert lengths['counts'] == [math.comb(n, k) for k in range(n + 1)]

  gradients = json.load(open(os.path.join(analyses, 'path_gradients.json'), encoding='utf-8'))
  for field in ('lengths', 'sampled_mean_norm', 'sampled_std_norm', 'total_contribution',
                'exact_norm', 'samples_per_length', 'contribution_share'):
    assert len(gradients[field]) == n + 1, field
  assert gradients['samples_per_length'] == [1, 4, 4, 4, 4, 4, 1]
  assert gradients['exact_sum_relative_error'] < 1e-4
  assert 'stem output' in gradients['gradient_of']
  assert math.isclose(sum(gradients['contribution_share']), 1.0, rel_tol=1e-9)
  first, last = gradients['effective_range']
  assert 0 <= first <= last <= n
  assert sum(gradients['contribution_share'][first:last + 1]) >= 0.9
  with open(os.path.join(analyses, 'path_gradients.csv'), encoding='utf-8') as f:
    assert len(f.read().strip().splitlines()) == n + 2


def test_run_path_analyses_rejects_bad_input(tmp_path):
  model = _tiny_model(preactivation=False)
  images, labels = _images_and_labels()
  images, labels = np.asarray(images), np.asarray(labels)
  variables = _variables(model, images)

  def run(config, names=study.PATH_ANALYSES, m=model):
    return study.run_path_analyses(m, variables, images, labels, config, str(tmp_path / 'a'),
                                   str(tmp_path / 'f'), names)

  with pytest.raises(ConfigError, match='unknown path analyses'):
    run(_analysis_config(), names=('path_lenghts',))
  with pytest.raises(ConfigError, match='path_batch_size=8 exceeds the 3'):
    run(_analysis_config(path_batch_size=8), names=('path_gradients',))
  # A bad path_gradients field stops path_lengths too, before anything is written.
  with pytest.raises(ConfigError, match='path_batchnorm'):
    run(_analysis_config(path_batchnorm='batch'))
  with pytest.raises(ConfigError, match='path_effective_share'):
    run(_analysis_config(path_effective_share=1.5))
  with pytest.raises(ConfigError, match='residual'):
    run(_analysis_config(), m=_tiny_model(preactivation=False, residual=False))
  with pytest.raises(ValueError, match='float images'):
    study.select_path_batch(images.astype(np.uint8), labels, 2, 0)
  # Nothing was written by the rejected runs.
  assert not os.path.exists(tmp_path / 'a')
  assert not os.path.exists(tmp_path / 'f')


def test_summarize_survives_overflowing_totals():
  # C(1100, 550) is about 1e330, beyond float64, so the totals overflow but the shares
  # and the effective range are computed from logs.
  n = 1100
  means = np.ones(n + 1)
  measured = sampled.PathNormsByLength(norms=[np.array([m]) for m in means],
                                       exhaustive=[False] * (n + 1))
  exact_norms = exact.ExactNorms(norms=np.ones(n + 1), full_norm=1.0, relative_error=0.0)
  result = study.summarize(n, measured, exact_norms, share=0.9, batchnorm='train',
                           batch_size=1, samples=1, seed=0)
  assert np.isinf(result['total_contribution'][n // 2])
  assert result['log10_total_contribution'][n // 2] == pytest.approx(
      math.log10(math.comb(n, n // 2)))
  assert math.isclose(math.fsum(result['contribution_share']), 1.0, rel_tol=1e-9)
  first, last = result['effective_range']
  assert first + last == n
  assert np.all(np.isfinite(result['exact_norm_over_count']))


def test_compare_short_path_training(tmp_path):
  workdirs = {}
  for name, error in (('full', 0.065), ('short_paths', 0.059)):
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / 'train_summary.json').write_text(
        json.dumps({'test_error': error, 'epochs': 164.0, 'steps': 64000}))
    workdirs[name] = str(workdir)
  table = study.compare_short_path_training(workdirs, str(tmp_path / 'analyses'))
  assert [row['final_test_error'] for row in table] == [0.065, 0.059]
  saved = json.load(open(tmp_path / 'analyses' / 'effective_paths.json', encoding='utf-8'))
  assert [row['name'] for row in saved['runs']] == ['full', 'short_paths']
  assert (tmp_path / 'analyses' / 'effective_paths.csv').exists()

  with pytest.raises(ConfigError, match='not found'):
    study.compare_short_path_training({'missing': str(tmp_path / 'nowhere')},
                                      str(tmp_path / 'other'))
  (tmp_path / 'full' / 'train_summary.json').write_text('{"steps": 3}')
  with pytest.raises(ConfigError, match='no numeric final_test_error'):
    study.compare_short_path_training(workdirs, str(tmp_path / 'other'))
  assert not (tmp_path / 'other').exists()


def test_sampled_norms_split_over_devices():
  # The device count is fixed at the first use of jax in a process, so four CPU devices
  # need a fresh interpreter.
  script = textwrap.dedent('''
      import sys
      import jax, numpy as np
      sys.path.insert(0, {tests!r})
      from test_paths import _images_and_labels, _tiny_model, _variables
      from resjax.paths import objective, sampled
      assert len(jax.devices()) == 4
      model = _tiny_model(preactivation=True)
      images, labels = _images_and_labels()
      variables = _variables(model, images)
      stem = objective.stem_output(model, variables, images, batchnorm='train')
      split = sampled.PathGradientRunner(model, variables, stem, labels, batchnorm='train')
      split.compile(8)
      single = sampled.PathGradientRunner(model, variables, stem, labels, batchnorm='train',
                                          devices=jax.devices()[:1])
      single.compile(5)
      np.testing.assert_allclose(split.measure(3, 0).means, single.measure(3, 0).means,
                                 rtol=1e-5)
      print('ok')
  ''').format(tests=os.path.dirname(os.path.abspath(__file__)))
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
                     JAX_PLATFORMS='cpu')
  completed = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                             env=environment, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert completed.stdout.strip().endswith('ok')
