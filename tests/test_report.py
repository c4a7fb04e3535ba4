"""Tests of the run report: claim checks and rendering from saved results."""

import math
import os

import ml_collections
import pytest

from resjax.config_base import base_config
from resjax.errors import CheckpointError
from resjax.report import build_report, check_claims, write_report
from resjax.report.claims import FAILS, HOLDS, NOT_MEASURED
from resjax.results import write_json


def _ensemble_like_results(n=6):
  """Results shaped like the paper's: flat single deletions, smooth rises."""
  blocks = [{'index': i, 'stage': i // 2, 'downsampling': i in (2, 4),
             'error': 0.30 if i in (2, 4) else 0.06} for i in range(n)]
  lengths = list(range(n + 1))
  norms = [10.0 * 0.3 ** k for k in lengths]
  counts = [math.comb(n, k) for k in lengths]
  return {
      'path_lengths': {'lengths': lengths, 'counts': counts, 'interval_95': [1, 5]},
      'path_gradients': {'lengths': lengths, 'sampled_mean_norm': norms,
                         'sampled_std_norm': [0.1] * (n + 1),
                         'total_contribution': [c * v for c, v in zip(counts, norms)],
                         'exact_norm': norms, 'effective_range': [0, 2],
                         'exact_sum_relative_error': 1e-6},
      'lesion_single': {'baseline_error': 0.05, 'blocks': blocks},
      'lesion_multi': {'k': [1, 2, 3, 4], 'mean_error': [0.06, 0.08, 0.12, 0.2],
                       'std_error': [0.0] * 4, 'samples_per_k': [4] * 4, 'errors': []},
      'reorder': {'swaps': [1, 1, 2, 2, 3], 'kendall_tau': [0.9, 0.8, 0.6, 0.5, 0.2],
                  'error': [0.06, 0.07, 0.1, 0.12, 0.2]},
  }


def test_claims_hold_on_ensemble_like_results():
  claims = check_claims(_ensemble_like_results(), base_config())
  holds = [claim.holds for claim in claims]
  assert holds[0] == HOLDS  # binomial path counts
  assert holds[1] == HOLDS  # single deletion barely hurts
  assert holds[2] == NOT_MEASURED  # no plain network
  assert holds[3] == HOLDS  # smooth rise with k
  assert holds[4] == HOLDS  # error rises as tau falls
  assert holds[5] == HOLDS  # per-path gradient falls with length
  assert holds[6] == HOLDS  # effective paths shorter than n / 2
  assert holds[7] == HOLDS  # exact sums add up
  assert holds[8] == NOT_MEASURED  # no short-path training


def test_claims_fail_when_deletions_hurt():
  results = _ensemble_like_results()
  for block in results['lesion_single']['blocks']:
    block['error'] = 0.5
  results['reorder']['error'] = list(reversed(results['reorder']['error']))
  claims = check_claims(results, base_config())
  assert claims[1].holds == FAILS
  assert claims[4].holds == FAILS
  assert '+45.00 points' in claims[1].this_run


def test_reorder_with_two_orders_is_not_measured():
  results = _ensemble_like_results()
  results['reorder'] = {'swaps': [1, 2, 3, 4], 'kendall_tau': [1.0, 0.8, 1.0, 0.8],
                        'error': [0.05, 0.3, 0.05, 0.3]}
  claim = check_claims(results, base_config())[4]
  assert claim.holds == NOT_MEASURED
  assert 'only 2 distinct orders' in claim.this_run


def test_report_flags_analyses_of_earlier_checkpoint(tmp_path):
  results = _ensemble_like_results()
  results['lesion_single']['checkpoint_step'] = 20
  results['reorder']['checkpoint_step'] = 40
  _write_run(str(tmp_path), base_config(), results)
  markdown = open(write_report(str(tmp_path))[0]).read()
  assert 'lesion_single ran on an earlier checkpoint than the final step 40' in markdown


def test_wrong_path_counts_fail():
  results = _ensemble_like_results()
  results['path_lengths']['counts'][1] += 1
  assert check_claims(results, base_config())[0].holds == FAILS


def test_plain_claim_uses_plain_section():
  results = _ensemble_like_results()
  plain_blocks = [{'index': i, 'stage': 0, 'downsampling': False, 'error': 0.9}
                  for i in range(4)]
  results['lesion_single']['plain'] = {'baseline_error': 0.08, 'blocks': plain_blocks}
  claim = check_claims(results, base_config())[2]
  assert claim.holds == HOLDS
  assert '90.00%' in claim.this_run


def test_missing_analyses_are_not_measured():
  claims = check_claims({}, base_config())
  assert all(claim.holds == NOT_MEASURED for claim in claims)


def _write_run(workdir, config, results):
  write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  for name, data in results.items():
    write_json(os.path.join(workdir, 'analyses', f'{name}.json'), data)
  write_json(os.path.join(workdir, 'timings.json'), {'train': 61.5, 'analysis lesion_single': 12.0})
  write_json(os.path.join(workdir, 'train_summary.json'), {'test_error': 0.0123, 'steps': 40})
  os.makedirs(os.path.join(workdir, 'figures'))
  # A 1x1 PNG is enough to check that figures are linked and embedded.
  png = bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                      '1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfab'
                      'd40000000049454e44ae426082')
  with open(os.path.join(workdir, 'figures', 'lesion_single.png'), 'wb') as f:
    f.write(png)


def test_report_files_from_saved_results(tmp_path):
  config = base_config()
  config.model.depth = 14
  config.data.source = 'digits'
  config.train.num_epochs = 3
  _write_run(str(tmp_path), config, _ensemble_like_results())
  markdown_path, html_path = write_report(str(tmp_path))
  markdown = open(markdown_path).read()
  page = open(html_path).read()
  assert '| claim | paper | this run | holds here |' in markdown
  assert 'far smaller than the paper' in markdown
  assert '3 epochs instead of 164' in markdown
  assert 'figures/lesion_single.png' in markdown
  assert 'data:image/png;base64,' in page
  assert 'src="figures/' not in page  # self-contained
  assert '1.23%' in markdown
  assert '| train | 61.5 s |' in markdown  # from timings.json


def test_paper_scale_run_has_no_scale_note(tmp_path):
  config = base_config()  # ResNet-110, 164 epochs, CIFAR-10 from tfds
  _write_run(str(tmp_path), config, {})
  report = build_report(str(tmp_path))
  assert report['scale_note'] == ''


def test_report_without_run_is_rejected(tmp_path):
  with pytest.raises(CheckpointError, match='no config.json'):
    write_report(str(tmp_path))


def test_config_round_trip_keeps_report_section():
  config = ml_collections.ConfigDict(base_config().to_dict())
  assert config.report.plain_gap == pytest.approx(0.2)
