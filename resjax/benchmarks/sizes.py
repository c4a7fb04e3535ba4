"""Sizes of each benchmark group: the full run and the smoke run.

The full run (``python scripts/benchmark.py``) is sized to finish in about 20
minutes on 2 CPU cores. Some groups are therefore smaller than the claims they test,
for the reasons given in the comments below. ``--smoke`` shrinks every group to tiny
models so that CI can check the whole pipeline in about a minute. Every size is written into the
output, next to the numbers it produced.
"""

from __future__ import annotations

import dataclasses

GROUPS = ('lesion', 'prefix', 'train', 'compile', 'memory', 'paths')


@dataclasses.dataclass(frozen=True)
class BenchmarkSizes:
  """Models, image counts and repeats of each group.

  Attributes:
    seed: seed of the random weights, images, labels and settings.
    repeats: timed repeats behind every median (warm-up excluded).
    lesion_depths: CIFAR ResNet depths of the lesion sweep.
    lesion_images: random test images per setting.
    lesion_random_settings: random multi-deletions after the single deletions.
    lesion_max_deleted: most blocks a random multi-deletion deletes.
    lesion_memory_budget_mb: memory budget that sets the engine's chunk size.
    process_settings: settings run as one fresh process each.
    prefix_depth: depth of the single-deletion sweep of the prefix evaluator.
    prefix_images: random test images of that sweep.
    train_depth: depth of the train-step benchmark.
    train_batch_size: images per train step.
    train_variants: names from ``resjax.benchmarks.training.TRAIN_VARIANTS``.
    compile_depths: depths whose compile time is measured.
    compile_batch_size: batch size of the compiled programs.
    compile_repeats: compiles per program and depth behind each median.
    compile_repeat_limit_seconds: a program whose compile takes longer is compiled
      only once. XLA:CPU unrolled the stacks of ResNet-1202, whose compiles then
      took minutes.
    memory_depth: depth of the peak-memory sweep.
    memory_settings: settings of the peak-memory sweep.
    memory_images: images per setting of the peak-memory sweep.
    memory_budgets_mb: memory budgets compared, one process each.
    paths_depths: depths of the path-gradient measurements.
    paths_batch_size: training images in the path batch.
    paths_samples: sampled paths per length (the sampled throughput).
    timeout_seconds: limit for any one worker process.
  """

  seed: int = 0
  repeats: int = 3
  lesion_depths: tuple[int, ...] = (20, 110)
  lesion_images: int = 8
  lesion_random_settings: int = 10
  lesion_max_deleted: int = 10
  lesion_memory_budget_mb: float = 2048.0
  process_settings: int = 3
  prefix_depth: int = 110
  prefix_images: int = 8
  train_depth: int = 20
  train_batch_size: int = 128
  train_variants: tuple[str, ...] = (
      'as_is', 'rolled', 'donate', 'bfloat16', 'batch_x2', 'onednn', 'xnnpack',
      'single_thread_eigen', 'torch_channels_last')
  compile_depths: tuple[int, ...] = (20, 56, 110, 1202)
  compile_batch_size: int = 128
  compile_repeats: int = 3
  compile_repeat_limit_seconds: float = 30.0
  memory_depth: int = 110
  # One image per setting keeps each sweep to about a minute on 2 CPU cores. The peak
  # depends on the settings per call, which the budget sets, not on the total.
  memory_settings: int = 10_000
  memory_images: int = 1
  memory_budgets_mb: tuple[float, ...] = (128.0, 512.0, 2048.0)
  # NOTE: ResNet-110 is left out: its exact decomposition took about 150 s per call
  # (batch 32, 2 cores), too long for repeats within the run's time.
  paths_depths: tuple[int, ...] = (20,)
  paths_batch_size: int = 32
  paths_samples: int = 4
  timeout_seconds: float = 900.0


FULL = BenchmarkSizes()

SMOKE = BenchmarkSizes(
    repeats=2,
    lesion_depths=(8,),
    lesion_images=4,
    lesion_random_settings=2,
    lesion_max_deleted=2,
    process_settings=1,
    prefix_depth=8,
    prefix_images=4,
    train_depth=8,
    train_batch_size=8,
    train_variants=('as_is',),
    compile_depths=(8, 14),
    compile_batch_size=8,
    compile_repeats=1,
    memory_depth=8,
    memory_settings=20,
    memory_images=2,
    memory_budgets_mb=(1.0,),
    paths_depths=(8,),
    paths_batch_size=4,
    paths_samples=2,
    timeout_seconds=300.0,
)
