"""Command-line errors of ``python -m resjax.main``: one line each, no traceback."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*arguments):
  return subprocess.run([sys.executable, '-m', 'resjax.main', *arguments], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_unknown_config_field_suggests_name(tmp_path):
  finished = run_main('--config=configs/quickstart.py', '--config.train.num_epoch=3',
                      f'--workdir={tmp_path / "run"}')
  assert finished.returncode == 2
  assert ("error: invalid --config or --config.<field> flag: unknown field 'num_epoch'. "
          'Did you mean "num_epochs"') in finished.stderr
  assert 'Traceback' not in finished.stderr
  assert not (tmp_path / 'run').exists()


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('mine')
  finished = run_main('--config=configs/quickstart.py', f'--workdir={path}')
  assert finished.returncode == 2
  assert f'error: --workdir={path} is a file, not a folder' in finished.stderr
  assert 'Traceback' not in finished.stderr
  assert path.read_text() == 'mine'


@pytest.mark.parametrize('mode', ['analyze', 'report'])
def test_missing_run_names_fix(tmp_path, mode):
  finished = run_main(f'--mode={mode}', f'--workdir={tmp_path / "none"}')
  assert finished.returncode == 2
  assert 'has no config.json' in finished.stderr
  # The error is printed once, not also as a log line.
  assert finished.stderr.count('has no config.json') == 1
