"""Command-line errors of ``python -m resjax.main``: one line each, no traceback."""

import json
import os
import signal
import subprocess
import sys
import time

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


def test_interrupted_training_resumes(tmp_path):
  workdir = tmp_path / 'run'
  arguments = [sys.executable, '-m', 'resjax.main', '--config=configs/quickstart.py',
               f'--workdir={workdir}', '--mode=train', '--config.train.num_epochs=6',
               '--config.train.checkpoint_every_steps=5', '--config.train.keep_checkpoints=50']
  process = subprocess.Popen(arguments, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  checkpoints = workdir / 'checkpoints'
  deadline = time.monotonic() + 240
  while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
    assert process.poll() is None, 'training ended before its first checkpoint'
    assert time.monotonic() < deadline, 'no checkpoint within 240 s'
    time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-2000:]
  assert 'interrupted. Rerun the same command to resume' in stderr
  assert 'Traceback' not in stderr

  resumed = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, timeout=300,
                           check=False)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  with open(workdir / 'train_summary.json', encoding='utf-8') as f:
    summary = json.load(f)
  assert summary['resumed_from_step'] >= 5
  assert summary['steps'] == 66
