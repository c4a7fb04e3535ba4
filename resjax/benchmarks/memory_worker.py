"""Peak memory of one lesion sweep, in a fresh process so that its peak is its own.

Runs ``evaluate_settings`` on random multi-deletions of a CIFAR ResNet with random
weights and random images, under one memory budget. It prints one JSON line with the
peak resident set size (VmHWM), the settings per call the engine chose and the
seconds taken. With ``--settings 0`` it stops before the sweep, which gives
the memory of the interpreter, the libraries, the model and the data alone.

Usage: ``python -m resjax.benchmarks.memory_worker --depth 110 --settings 10000
--images 1 --budget-mb 512``
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from resjax.benchmarks import lesion, training, weights
from resjax.lesion import engine
from resjax.lesion.settings import gates_from_forward
from resjax.models import build_model



def peak_rss_mib() -> float:
  """Return this process's peak resident set size in MiB.

  Reads VmHWM from /proc/self/status: on Linux, ``ru_maxrss`` of a process started
  by fork (or vfork) and exec also counts the parent's memory before the exec, so
  it would report the benchmark's own peak instead of this process's.
  """
  try:
    with open('/proc/self/status', encoding='utf-8') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # the value is in kB
  except OSError:
    pass
  # NOTE: without /proc this may include the parent's memory (see above).
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Peak memory of one lesion sweep.')
  parser.add_argument('--depth', type=int, required=True, help='CIFAR ResNet depth, 6n+2.')
  parser.add_argument('--settings', type=int, required=True,
                      help='random multi-deletion settings; 0 stops before the sweep.')
  parser.add_argument('--images', type=int, required=True, help='images per setting.')
  parser.add_argument('--budget-mb', type=float, required=True,
                      help='memory budget of evaluate_settings, in MiB.')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  config = training.train_config(args.depth, batch_size=args.images)
  model = build_model(config.model, num_classes=10)
  images, labels = lesion.random_images(args.images, 10, args.seed)
  variables = weights.random_variables(model, args.seed)
  result = {'depth': args.depth, 'settings': args.settings, 'images': args.images,
            'budget_mb': args.budget_mb}
  if args.settings > 0:
    # As many deleted blocks as the multi-block lesion study goes up to.
    max_deleted = config.analysis.lesion_multi_max_k
    forward = lesion.random_deletions(model, args.settings, max_deleted, args.seed)
    calls = []
    start = time.perf_counter()
    engine.evaluate_settings(model, variables, images, labels,
                             gates_from_forward(model, forward), batch_size=args.images,
                             memory_budget_mb=args.budget_mb, progress=calls.append)
    result.update(seconds=time.perf_counter() - start, chunk_size=max(calls),
                  calls=len(calls))
  result['peak_rss_mib'] = peak_rss_mib()
  print(json.dumps(result))


if __name__ == '__main__':
  main()
