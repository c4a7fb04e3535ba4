"""The benchmark groups: each measures one claim and records it in a ``Recorder``.

All models are CIFAR pre-activation ResNets (the base config's) with random
weights, evaluated on random CIFAR-sized images: speed does not depend on what the
weights learned. Every ratio divides two measurements of the same run, timed in
interleaved rounds (see ``timing.time_interleaved``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resjax import schedules
from resjax.benchmarks import lesion, training, weights
from resjax.benchmarks.records import Recorder
from resjax.benchmarks.sizes import BenchmarkSizes
from resjax.benchmarks.timing import seconds_of, thread_count, time_interleaved
from resjax.lesion import prefix
from resjax.models import build_model
from resjax.models.resnet import GatedResNet

LESION_UNIT = 'settings x images / s'


def make_model(depth: int, unroll_stacks: str = 'auto') -> GatedResNet:
  """Build the base config's CIFAR ResNet (pre-activation, 10 classes) at ``depth``.

  ``unroll_stacks`` is ``config.model.unroll_stacks``: 'auto' (unrolled on a CPU, as
  resjax runs by default), 'always' or 'never'.
  """
  model_config = training.train_config(depth, batch_size=1).model
  model_config.unroll_stacks = unroll_stacks
  return build_model(model_config, num_classes=10)


def model_key(depth: int) -> str:
  return f'cifar_resnet{depth}'


def torch_missing_reason() -> str | None:
  """Return why the PyTorch rows cannot run, or None when PyTorch is installed."""
  if training.torch_available():
    return None
  return ('PyTorch is not installed; install it with `pip install -r requirements-bench.txt` '
          'to measure the PyTorch baselines.')


# ------------------------------------------------------------------- lesion sweep


def run_lesion(recorder: Recorder, sizes: BenchmarkSizes, scratch: str) -> None:
  """Measure lesion sweep throughput: vmaps, jitted loop, PyTorch and processes."""
  missing_torch = torch_missing_reason()
  if missing_torch:
    recorder.skip('lesion/torch_eager', missing_torch)
  recorder.note(
      'engine_vmap (resjax.lesion.engine) vmaps only the fields of the Gates batch that '
      'differ between settings; in a deletion sweep all settings share the block orders, '
      'so every setting runs the same kernels. forward_gate_vmap is a minimal jitted vmap '
      'over the forward gates, to show what the engine adds over it. On a CPU the time '
      'per image hardly depends on the batch size, so a vmap over settings can at best '
      'match a loop there. It can gain only where one setting leaves the device idle, '
      'as an accelerator may with small image batches (not measured here).')
  for depth in sizes.lesion_depths:
    _run_lesion_depth(recorder, sizes, depth, scratch, with_torch=missing_torch is None)


def _run_lesion_depth(recorder, sizes, depth, scratch, with_torch):
  model = make_model(depth)
  key = model_key(depth)
  images, labels = lesion.random_images(sizes.lesion_images, 10, sizes.seed)
  variables = weights.random_variables(model, sizes.seed)
  forward = lesion.lesion_settings(model, sizes.lesion_random_settings,
                                   sizes.lesion_max_deleted, sizes.seed)
  settings, count = len(forward), len(images)
  chunk = lesion.engine_chunk_size(model, count, settings, sizes.lesion_memory_budget_mb)
  common = {'model': key, 'settings': settings, 'images': count,
            'single_deletions': len(model.deletable_blocks),
            'random_multi_deletions': sizes.lesion_random_settings, 'chunk_size': chunk}

  loop = lesion.LoopSweep(model, variables, images, labels)
  loop_compile = seconds_of(loop.compile)
  methods: dict[str, Callable[[], Any]] = {
      'engine_vmap': lambda: lesion.engine_sweep(model, variables, images, labels, forward,
                                                 chunk_size=chunk),
      'forward_gate_vmap': lambda: lesion.forward_gate_sweep(model, variables, images, labels,
                                                             forward, chunk_size=chunk),
      'jit_loop': lambda: loop(forward),
  }
  if with_torch:
    torch_sweep = lesion.TorchSweep(model, variables, images, labels, threads=thread_count())
    methods['torch_eager'] = lambda: torch_sweep(forward)
  timings = time_interleaved(methods, repeats=sizes.repeats)

  reference = timings['jit_loop'].first_result
  descriptions = {
      'engine_vmap': 'resjax.lesion.engine.evaluate_settings, vmapped gate batches',
      'forward_gate_vmap': 'jitted jax.vmap over forward gates only, orders shared',
      'jit_loop': 'one call of one jitted function per setting',
      'torch_eager': 'PyTorch twin, one eager forward pass per setting, deleted blocks '
                     'skipped, torch.inference_mode',
  }
  for method, timed in timings.items():
    difference = int(np.max(np.abs(np.asarray(timed.first_result) - reference)))
    extra = {'compile_seconds': loop_compile} if method == 'jit_loop' else {}
    recorder.add_timing(f'lesion_throughput/{method}[{key}]', f'lesion_throughput_{method}',
                        timed, settings * count, LESION_UNIT, method=descriptions[method],
                        max_correct_difference_vs_loop=difference, **common, **extra)

  _run_processes(recorder, sizes, depth, model, variables, images, labels, forward, scratch)

  def ratio(name, numerator, denominator, target, minimum):
    recorder.add_ratio(f'{name}[{key}]', name, f'lesion_throughput/{numerator}[{key}]',
                       f'lesion_throughput/{denominator}[{key}]', target=target,
                       minimum=minimum, model=key)

  ratio('lesion_vmap_vs_loop', 'engine_vmap', 'jit_loop', 'at least 1', 1.0)
  ratio('lesion_forward_vmap_vs_loop', 'forward_gate_vmap', 'jit_loop', 'at least 1', 1.0)
  if with_torch:
    ratio('lesion_vmap_vs_torch', 'engine_vmap', 'torch_eager', 'at least 1', 1.0)
    ratio('lesion_forward_vmap_vs_torch', 'forward_gate_vmap', 'torch_eager', 'at least 1',
          1.0)
  ratio('lesion_vmap_vs_process', 'engine_vmap', 'process_per_setting', None, None)


def _run_processes(recorder, sizes, depth, model, variables, images, labels, forward,
                   scratch):
  """Time one fresh process per setting, after one untimed process warms the file cache."""
  key = model_key(depth)
  workdir = os.path.join(scratch, f'process_run_{key}')
  config = training.train_config(depth, batch_size=len(images))
  lesion.save_run(workdir, config, model, variables)
  data_path = os.path.join(scratch, f'process_data_{key}.npz')
  np.savez(data_path, images=images, labels=labels)
  sweep = lesion.ProcessSweep(workdir, data_path, sizes.timeout_seconds)

  rows = forward[:sizes.process_settings]
  sweep.run_one(rows[0])
  seconds, phases, correct = [], [], []
  for row in rows:
    start = time.perf_counter()
    output = sweep.run_one(row)
    seconds.append(time.perf_counter() - start)
    phases.append(output)
    correct.append(output['correct'])
  reference = lesion.LoopSweep(model, variables, images, labels)(rows)
  median = float(np.median(seconds))
  recorder.add(f'lesion_throughput/process_per_setting[{key}]',
               'lesion_throughput_process_per_setting', len(images) / median, LESION_UNIT,
               method='a fresh Python process per setting: import, restore_run of an orbax '
                      'checkpoint, jit, evaluate', model=key, settings=len(rows),
               images=len(images), median_seconds=median, seconds=seconds,
               repeats=len(seconds), warmup_seconds=None, phases=phases,
               max_correct_difference_vs_loop=int(np.max(np.abs(np.asarray(correct)
                                                                 - reference))))


# ------------------------------------------------------------------ prefix sweep


def run_prefix(recorder: Recorder, sizes: BenchmarkSizes, scratch: str) -> None:
  """Compare the prefix-sharing evaluator with the vmapped single-deletion sweeps."""
  del scratch
  depth = sizes.prefix_depth
  model = make_model(depth)
  key = model_key(depth)
  images, labels = lesion.random_images(sizes.prefix_images, 10, sizes.seed + 1)
  variables = weights.random_variables(model, sizes.seed)
  blocks = model.deletable_blocks
  forward = lesion.lesion_settings(model, 0, 2, sizes.seed)
  count = len(images)
  chunk = lesion.engine_chunk_size(model, count, len(forward), sizes.lesion_memory_budget_mb)

  def run_prefix_evaluator():
    return prefix.evaluate_single_deletions(model, variables, images, labels, blocks,
                                            batch_size=count).deletions.correct

  methods = {
      'prefix': run_prefix_evaluator,
      'engine_vmap': lambda: lesion.engine_sweep(model, variables, images, labels, forward,
                                                 chunk_size=chunk),
      'forward_gate_vmap': lambda: lesion.forward_gate_sweep(model, variables, images, labels,
                                                             forward, chunk_size=chunk),
  }
  timings = time_interleaved(methods, repeats=sizes.repeats)
  reference = np.asarray(timings['engine_vmap'].first_result)
  rows = prefix.rows_at_blocks(model, blocks)
  common = {'model': key, 'settings': len(blocks), 'images': count, 'chunk_size': chunk,
            'block_evaluations_prefix': sum(rows), 'block_evaluations_vmap':
            len(blocks) * model.num_blocks}
  for method, timed in timings.items():
    difference = int(np.max(np.abs(np.asarray(timed.first_result) - reference)))
    recorder.add_timing(f'single_deletion_throughput/{method}[{key}]',
                        f'single_deletion_throughput_{method}', timed, len(blocks) * count,
                        LESION_UNIT, max_correct_difference_vs_engine=difference, **common)
  for name, denominator in (('lesion_prefix_vs_vmap', 'engine_vmap'),
                            ('lesion_prefix_vs_forward_vmap', 'forward_gate_vmap')):
    recorder.add_ratio(f'{name}[{key}]', name, f'single_deletion_throughput/prefix[{key}]',
                       f'single_deletion_throughput/{denominator}[{key}]',
                       target='at least 1.8', minimum=1.8, model=key)


# -------------------------------------------------------------------- train step


def run_train(recorder: Recorder, sizes: BenchmarkSizes, scratch: str) -> None:
  """Measure the train step of each variant, each in its own process, against PyTorch."""
  del scratch
  missing_torch = torch_missing_reason()
  if missing_torch:
    recorder.skip('train/torch', missing_torch)
  recorder.note(
      'train_step/jax is the core step (forward in training mode, loss, backward, SGD with '
      'momentum and weight decay) on float images, as the PyTorch step is. '
      'train_step/real_step is resjax.steps.train_step, which also augments and normalises '
      'the uint8 batch inside the step.')
  tried = []
  for name in sizes.train_variants:
    variant = training.VARIANTS_BY_NAME[name]
    result = training.run_variant_process(variant, sizes.train_depth, sizes.train_batch_size,
                                          sizes.repeats, sizes.timeout_seconds)
    tried.append({'variant': name, 'description': variant.description, **{
        k: v for k, v in result.items() if k in ('error', 'xla_flags', 'batch_size')}})
    if 'error' in result:
      recorder.skip(f'train/{name}', f'the worker failed: {result["error"]}')
      continue
    _record_train_variant(recorder, variant, result)
  flag = '--xla_cpu_use_thunk_runtime=false'
  tried.append({'variant': 'no_thunk_runtime', 'description': f'XLA_FLAGS={flag}',
                'error': f'not timed; XLA says: {training.check_xla_flag(flag, 120)}'})
  recorder.add('train_variants_tried', 'train_variants_tried', len(tried), 'variants',
               variants=tried)


def _record_train_variant(recorder, variant, result):
  key = model_key(result['depth'])
  common = {'model': key, 'variant': variant.name, 'description': variant.description,
            'batch_size': result['batch_size'], 'xla_flags': result['xla_flags']}
  labels = {'jax': 'resjax core step (forward, loss, backward, SGD), gates=None',
            'jax_gates': 'resjax core step with default gates passed as traced arrays',
            'real_step': 'resjax.steps.train_step with in-step augmentation',
            'torch': 'PyTorch twin, SGD step, eager',
            'jax_forward': 'training-mode forward pass and loss only',
            'jax_forward_backward': 'forward pass, loss and gradient, no optimizer',
            'torch_forward': 'PyTorch twin, training-mode forward pass and loss only',
            'torch_forward_backward': 'PyTorch twin, forward pass, loss and backward pass'}
  for function in labels:
    if f'{function}_median_seconds' not in result:
      continue
    seconds = result[f'{function}_seconds']
    median = result[f'{function}_median_seconds']
    extra = {}
    if function.startswith('jax'):
      extra['compile_seconds'] = result.get(f'{function}_compile_seconds')
    recorder.add(f'train_step/{function}[{variant.name}]', f'train_step_{function}',
                 result['batch_size'] / median, 'images / s', step=labels[function],
                 median_seconds=median, seconds=seconds, repeats=len(seconds),
                 warmup_seconds=result[f'{function}_warmup_seconds'], **common, **extra)
  if 'torch_median_seconds' in result:
    recorder.add_ratio(f'train_vs_torch[{variant.name}]', 'train_vs_torch',
                       f'train_step/jax[{variant.name}]', f'train_step/torch[{variant.name}]',
                       target='at least 1 (parity)', minimum=1.0, model=key,
                       variant=variant.name)
  for part in ('forward', 'forward_backward'):
    if f'torch_{part}_median_seconds' in result and f'jax_{part}_median_seconds' in result:
      recorder.add_ratio(f'train_{part}_vs_torch[{variant.name}]', f'train_{part}_vs_torch',
                         f'train_step/jax_{part}[{variant.name}]',
                         f'train_step/torch_{part}[{variant.name}]', target=None, model=key,
                         variant=variant.name)
  if 'jax_gates_median_seconds' in result:
    overhead = 100.0 * (result['jax_gates_median_seconds'] / result['jax_median_seconds'] - 1)
    recorder.add(f'gate_overhead_train[{variant.name}]', 'gate_overhead_train', overhead,
                 'percent', numerator=f'train_step/jax_gates[{variant.name}]',
                 denominator=f'train_step/jax[{variant.name}]',
                 definition='100 * (median step seconds with default gates / median step '
                            'seconds with gates=None - 1)',
                 target='at most 3 percent', meets_target=overhead <= 3.0, model=key,
                 variant=variant.name)


# ------------------------------------------------------------------ compile time


def run_compile(recorder: Recorder, sizes: BenchmarkSizes, scratch: str) -> None:
  """Measure the compile time of the eval forward pass and the train step against depth.

  Each depth is compiled with its stacks rolled (one ``lax.scan`` per stack, the
  default on accelerators) and unrolled (the default on a CPU).
  """
  del scratch
  recorder.note(
      'Stacks rolled: one lax.scan per stack (model.unroll_stacks=never, the default on '
      'accelerators). Unrolled: every block in the program (unroll_stacks=always, the '
      'default on a CPU, where XLA runs convolution gradients inside a loop several times '
      'slower). while_loops counts the loops left in a compiled program.')
  for layout, unroll in (('rolled', 'never'), ('unrolled', 'always')):
    for depth in sizes.compile_depths:
      _compile_depth(recorder, sizes, depth, layout, make_model(depth, unroll))
  deepest, shallowest = max(sizes.compile_depths), min(sizes.compile_depths)
  if deepest != shallowest:
    for layout, layout_suffix in (('rolled', ''), ('unrolled', '_unrolled')):
      for kind, kind_suffix in (('eval', ''), ('train', '_train')):
        name = f'compile_{deepest}_vs_{shallowest}{kind_suffix}{layout_suffix}'
        recorder.add_ratio(name, name,
                           f'compile_seconds/{kind}/{layout}[{model_key(deepest)}]',
                           f'compile_seconds/{kind}/{layout}[{model_key(shallowest)}]',
                           target=None, depths=[shallowest, deepest], stacks=layout)


def _compile_depth(recorder, sizes, depth, layout, model):
  key = model_key(depth)
  config = training.train_config(depth, sizes.compile_batch_size)
  images = jax.ShapeDtypeStruct((sizes.compile_batch_size, 32, 32, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((sizes.compile_batch_size,), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  optimizer, _ = schedules.build_optimizer(config.train, steps_in_epoch=100)
  opt_state = jax.eval_shape(optimizer.init, variables['params'])

  def compile_eval():
    return jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables,
                                                                    images).compile()

  def compile_train():
    step = training.core_train_step(model, optimizer)
    return step.lower(variables['params'], variables['batch_stats'], opt_state, images,
                      labels, None).compile()

  for kind, function in (('eval', compile_eval), ('train', compile_train)):
    seconds = []
    while len(seconds) < sizes.compile_repeats:
      # JAX keeps compiled executables in memory; without clearing, a repeat would
      # time a cache lookup.
      jax.clear_caches()
      start = time.perf_counter()
      compiled = function()
      seconds.append(time.perf_counter() - start)
      if seconds[-1] > sizes.compile_repeat_limit_seconds:
        break
    recorder.add(f'compile_seconds/{kind}/{layout}[{key}]', f'compile_seconds_{kind}',
                 float(np.median(seconds)), 's', seconds=seconds, repeats=len(seconds),
                 while_loops=compiled.as_text().count(' while('), stacks=layout, model=key,
                 num_blocks=model.num_blocks, batch_size=sizes.compile_batch_size,
                 program='eval forward pass' if kind == 'eval' else
                 'core train step (as_is model)')


# --------------------------------------------------------------------- memory


def run_memory(recorder: Recorder, sizes: BenchmarkSizes, scratch: str) -> None:
  """Measure the peak RSS of a many-setting sweep under several budgets, one process each."""
  del scratch
  key = model_key(sizes.memory_depth)
  baseline = _memory_process(sizes, settings=0, budget_mb=sizes.memory_budgets_mb[0])
  recorder.add(f'peak_rss/no_sweep[{key}]', 'peak_rss_no_sweep', baseline['peak_rss_mib'],
               'MiB', model=key, images=sizes.memory_images,
               description='the same process stopped before the sweep: interpreter, '
                           'libraries, model and data')
  for budget in sizes.memory_budgets_mb:
    result = _memory_process(sizes, settings=sizes.memory_settings, budget_mb=budget)
    recorder.add(f'peak_rss/budget_{budget:g}mb[{key}]', 'peak_rss_sweep',
                 result['peak_rss_mib'], 'MiB', model=key, budget_mb=budget,
                 settings=result['settings'], images=result['images'],
                 chunk_size=result['chunk_size'], calls=result['calls'],
                 seconds=result['seconds'],
                 above_no_sweep_mib=result['peak_rss_mib'] - baseline['peak_rss_mib'])


def _memory_process(sizes: BenchmarkSizes, *, settings: int, budget_mb: float) -> dict:
  command = [sys.executable, '-m', 'resjax.benchmarks.memory_worker', '--depth',
             str(sizes.memory_depth), '--settings', str(settings), '--images',
             str(sizes.memory_images), '--budget-mb', str(budget_mb), '--seed',
             str(sizes.seed)]
  finished = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=sizes.timeout_seconds)
  if finished.returncode != 0:
    tail = ' | '.join(finished.stderr.strip().splitlines()[-3:])
    raise RuntimeError(f'the memory worker failed with exit status {finished.returncode} '
                       f'for a budget of {budget_mb} MiB: {tail}')
  return json.loads(finished.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- path gradients


def run_paths(recorder: Recorder, sizes: BenchmarkSizes, scratch: str) -> None:
  """Measure sampled path gradients per second and the exact decomposition's cost."""
  del scratch
  try:
    from resjax.paths import exact, objective, sampled  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    recorder.skip('paths', f'resjax.paths is not importable ({error}).')
    return
  analysis = training.train_config(8, 1).analysis
  for depth in sizes.paths_depths:
    model = make_model(depth)
    key = model_key(depth)
    images, labels = lesion.random_images(sizes.paths_batch_size, 10, sizes.seed + 2)
    variables = weights.random_variables(model, sizes.seed)
    batchnorm = analysis.path_batchnorm
    stem = objective.stem_output(model, variables, jnp.asarray(images), batchnorm=batchnorm)
    labels = jnp.asarray(labels)
    lengths = model.num_blocks + 1
    ordinary = jax.jit(exact.ordinary_gradient, static_argnums=(0, 4))

    def backward():
      return ordinary(model, variables, stem, labels, batchnorm).block_until_ready()

    def decomposition():
      return exact.exact_path_norms(model, variables, stem, labels, batchnorm=batchnorm,
                                    segments_per_stage=analysis.path_exact_segments,
                                    lengths_per_call=lengths)

    runner = sampled.PathGradientRunner(model, variables, stem, labels, batchnorm=batchnorm)
    total_paths = sum(sampled.samples_per_length(model.num_blocks, sizes.paths_samples))
    runner.compile(total_paths)

    def sampled_paths():
      return runner.measure(sizes.paths_samples, sizes.seed)

    timings = time_interleaved({'backward': backward, 'exact': decomposition,
                                'sampled': sampled_paths}, repeats=sizes.repeats)
    common = {'model': key, 'batch_size': sizes.paths_batch_size, 'batchnorm': batchnorm}
    recorder.add(f'ordinary_backward_seconds[{key}]', 'ordinary_backward_seconds',
                 timings['backward'].median, 's', seconds=list(timings['backward'].seconds),
                 warmup_seconds=timings['backward'].warmup_seconds, **common)
    recorder.add(f'exact_paths_seconds[{key}]', 'exact_paths_seconds',
                 timings['exact'].median, 's', seconds=list(timings['exact'].seconds),
                 warmup_seconds=timings['exact'].warmup_seconds,
                 relative_error=timings['exact'].first_result.relative_error,
                 segments_per_stage=analysis.path_exact_segments, **common)
    recorder.add_ratio(f'exact_paths_vs_backward[{key}]', 'exact_paths_vs_backward',
                       f'exact_paths_seconds[{key}]', f'ordinary_backward_seconds[{key}]',
                       target=f'at most n + 2 = {model.num_blocks + 2}',
                       maximum=model.num_blocks + 2.0, model=key)
    recorder.add_timing(f'sampled_paths_throughput[{key}]', 'sampled_paths_throughput',
                        timings['sampled'], total_paths, 'paths / s',
                        paths=total_paths, paths_per_call=runner.paths_per_call, **common)
    _run_scan_backward(recorder, sizes, depth, variables, stem, labels, key,
                       exact.ordinary_gradient)


def _run_scan_backward(recorder, sizes, depth, variables, stem, labels, key,
                       ordinary_gradient):
  """Time eval-mode gradients with the stacks rolled (lax.scan) and unrolled.

  Both programs of a pair compute the same gradient: at the stem (what the path
  analyses take) and of the parameters (what training takes).
  """
  models = {'scanned': make_model(depth, 'never'), 'unrolled': make_model(depth, 'always')}
  stem_images = jnp.asarray(lesion.random_images(len(labels), 10, sizes.seed + 3)[0])

  def stem_gradient(model):
    return lambda: ordinary_gradient(model, variables, stem, labels, 'eval')

  def params_gradient(model):

    def loss(params):
      logits = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                           stem_images, train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()

    return lambda: jax.grad(loss)(variables['params'])

  for name, gradient in (('stem', stem_gradient), ('params', params_gradient)):
    compiled = {kind: jax.jit(gradient(model)) for kind, model in models.items()}
    timings = time_interleaved(
        {kind: lambda f=function: jax.block_until_ready(f()) for kind, function in
         compiled.items()}, repeats=sizes.repeats)
    difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(timings['scanned'].first_result),
        jax.tree_util.tree_leaves(timings['unrolled'].first_result)))
    for kind, timed in timings.items():
      recorder.add(f'{name}_gradient_seconds/{kind}[{key}]', f'{name}_gradient_seconds_{kind}',
                   timed.median, 's', seconds=list(timed.seconds),
                   warmup_seconds=timed.warmup_seconds, model=key, batchnorm='eval',
                   batch_size=sizes.paths_batch_size,
                   max_abs_difference_scanned_unrolled=difference)
    ratio = 'scan_backward_vs_unrolled' if name == 'params' else 'scan_stem_backward_vs_unrolled'
    recorder.add_ratio(f'{ratio}[{key}]', ratio, f'{name}_gradient_seconds/scanned[{key}]',
                       f'{name}_gradient_seconds/unrolled[{key}]', target=None, model=key)


SUITES = {'lesion': run_lesion, 'prefix': run_prefix, 'train': run_train,
          'compile': run_compile, 'memory': run_memory, 'paths': run_paths}
