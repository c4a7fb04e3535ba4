"""Path analyses: how many paths of each length a ResNet has and how much gradient they carry.

``run_path_analyses`` is the entry point of ``resjax.analysis``; the modules hold the
pieces: ``counts`` (path-length distribution), ``sampled`` (single-path gradients, by
sampling), ``exact`` (per-length gradient sums, exactly), ``study`` (results) and
``figures``.
"""

from resjax.paths.counts import (path_length_counts, path_length_distribution,
                                 path_length_fractions, shortest_interval)
from resjax.paths.exact import ExactNorms, exact_path_gradients, exact_path_norms
from resjax.paths.sampled import PathGradientRunner, PathNormsByLength, path_sets
from resjax.paths.study import (COMPARISON_NAME, PATH_ANALYSES, compare_short_path_training,
                                path_gradients, run_path_analyses)

__all__ = [
    'COMPARISON_NAME', 'ExactNorms', 'PATH_ANALYSES', 'PathGradientRunner', 'PathNormsByLength',
    'compare_short_path_training', 'exact_path_gradients', 'exact_path_norms',
    'path_gradients', 'path_length_counts', 'path_length_distribution',
    'path_length_fractions', 'path_sets', 'run_path_analyses',
    'shortest_interval',
]
