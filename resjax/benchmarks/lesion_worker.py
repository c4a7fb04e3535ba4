"""One lesion setting in a fresh process: restore a run's checkpoint, evaluate, exit.

This is the one-job-per-lesion way that ``resjax.benchmarks.lesion.ProcessSweep``
times. It prints one JSON line: the correct count and the seconds of each phase.

Usage: ``python -m resjax.benchmarks.lesion_worker --workdir W --data D.npz --delete 3,7``
"""

import time

START = time.perf_counter()

# pylint: disable=wrong-import-position
import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from resjax import checkpointing


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Evaluate one lesion setting of a saved run.')
  parser.add_argument('--workdir', required=True, help='run folder with config.json and '
                      'checkpoints/.')
  parser.add_argument('--data', required=True, help='.npz file with images and labels.')
  parser.add_argument('--delete', default='', help='comma-separated global indices of the '
                      'blocks to delete; empty: the ordinary network.')
  args = parser.parse_args(argv)
  imported = time.perf_counter()

  run = checkpointing.restore_run(args.workdir)
  with np.load(args.data) as data:
    images, labels = data['images'], data['labels']
  deleted = [int(b) for b in args.delete.split(',') if b]
  gates = run.model.default_gates()
  forward = np.array(gates.forward)
  forward[deleted] = 0.0
  gates = gates.replace(forward=forward)
  run.model.check_gates(gates)
  loaded = time.perf_counter()

  logits = jax.jit(lambda v, x: run.model.apply(v, x, gates, train=False))(
      run.variables, jnp.asarray(images))
  correct = int(np.sum(np.argmax(np.asarray(logits), axis=-1) == labels))
  finished = time.perf_counter()
  print(json.dumps({'correct': correct, 'import_seconds': imported - START,
                    'restore_seconds': loaded - imported,
                    'evaluate_seconds': finished - loaded}))


if __name__ == '__main__':
  main()
