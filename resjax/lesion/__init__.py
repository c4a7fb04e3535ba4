"""Lesion, reordering and duplication studies run as batches of gate settings.

``engine.evaluate_settings`` evaluates a batch of settings in compiled, vmapped calls;
``settings`` builds the batches; ``studies`` runs each study and ``figures`` draws it.
"""

from resjax.lesion.engine import (Calibration, SettingResults, analytic_setting_bytes,
                                  choose_chunk_size, default_mesh, evaluate_settings)
from resjax.lesion.settings import (full_order, gates_from_forward, gates_from_orders,
                                    group_by_shape, kendall_tau, random_deletions,
                                    random_duplications, random_swaps, single_deletions)
from resjax.lesion.settings_file import SettingsFileError, load_settings_file
from resjax.lesion.studies import (Evaluator, StudyResult, duplicate, lesion_multi,
                                   lesion_single, reorder, user_settings)

__all__ = [
    'Calibration', 'Evaluator', 'SettingResults', 'SettingsFileError', 'StudyResult',
    'analytic_setting_bytes', 'choose_chunk_size', 'default_mesh', 'duplicate',
    'evaluate_settings', 'full_order', 'gates_from_forward', 'gates_from_orders',
    'group_by_shape', 'kendall_tau', 'lesion_multi', 'lesion_single', 'load_settings_file',
    'random_deletions', 'random_duplications', 'random_swaps', 'reorder', 'single_deletions',
    'user_settings',
]
