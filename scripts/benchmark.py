"""Benchmark resjax against a jitted loop, PyTorch and one process per setting.

Usage:
  python scripts/benchmark.py                  # full run, writes docs/benchmarks.{md,json}
  python scripts/benchmark.py --smoke --output-dir /tmp/bench   # tiny sizes, about a minute
  python scripts/benchmark.py --only lesion,prefix

PyTorch rows need `pip install -r requirements-bench.txt`; without PyTorch they are
skipped with a note. The exit status is 1 when a group failed (the outputs are still
written, with the error under "failed").
"""

from __future__ import annotations

import os

# With OpenMP's default active waiting, PyTorch's threads spin at every barrier. On 2
# cores shared with other processes, that made a PyTorch backward pass about 50 times
# slower (torch 2.13.0, load average 8). The benchmark therefore sets passive waiting
# unless the caller chose a policy. It must be set before PyTorch loads libgomp.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# pylint: disable=wrong-import-position
import argparse
import datetime
import logging
import shlex
import sys
import tempfile
import time

from resjax.benchmarks import machine, report, sizes as sizes_lib, suites
from resjax.benchmarks.records import Recorder

LOGGER = logging.getLogger('benchmark')


def parse_groups(text: str) -> tuple[str, ...]:
  groups = tuple(part.strip() for part in text.split(',') if part.strip())
  unknown = sorted(set(groups) - set(sizes_lib.GROUPS))
  if not groups or unknown:
    raise argparse.ArgumentTypeError(
        f'unknown benchmark groups {unknown or text!r}; choose from '
        f'{", ".join(sizes_lib.GROUPS)}, separated by commas.')
  return groups


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
  parser.add_argument('--smoke', action='store_true',
                      help='tiny models and sizes (about a minute); for CI.')
  parser.add_argument('--output-dir', default='docs',
                      help='folder for benchmarks.md and benchmarks.json (default: docs).')
  parser.add_argument('--only', type=parse_groups, default=sizes_lib.GROUPS,
                      help=f'comma-separated groups to run, from {",".join(sizes_lib.GROUPS)}; '
                           'default: all.')
  args = parser.parse_args(argv)
  # force: absl, imported by resjax, installs its own root handler. Libraries log at
  # WARNING and above, so orbax's INFO lines stay out of the progress lines.
  logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(message)s', force=True)
  LOGGER.setLevel(logging.INFO)

  sizes = sizes_lib.SMOKE if args.smoke else sizes_lib.FULL
  command = ' '.join(shlex.quote(part) for part in ['python', 'scripts/benchmark.py',
                                                     *sys.argv[1:]])
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  description = machine.describe_machine()
  recorder = Recorder()
  failed = []
  start = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix='resjax-benchmark-') as scratch:
    for group in args.only:
      LOGGER.info('Benchmark group %s: starting.', group)
      group_start = time.perf_counter()
      try:
        suites.SUITES[group](recorder, sizes, scratch)
      except Exception as error:  # pylint: disable=broad-except
        # One failing group must not lose the measurements of the others. The error is
        # written into the outputs, and the exit status reports the failure.
        LOGGER.exception('Benchmark group %s failed.', group)
        failed.append({'group': group, 'reason': f'{type(error).__name__}: {error}'})
      LOGGER.info('Benchmark group %s: done in %.0f s.', group,
                   time.perf_counter() - group_start)
  document = report.build_document(recorder, sizes, machine=description, command=command,
                                   date=date, wall_seconds=time.perf_counter() - start,
                                   smoke=args.smoke, failed=failed)
  json_path, markdown_path = report.write_outputs(args.output_dir, document)
  LOGGER.info('Wrote %s and %s.', json_path, markdown_path)
  # The README quotes this table; tests/test_benchmark.py checks that it matches docs/.
  print('Headline table for the README:\n' + report.readme_table(document))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
