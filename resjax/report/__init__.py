"""The run report: the paper's claims against one run's saved results."""

from resjax.report.claims import Claim, check_claims
from resjax.report.render import build_report, write_report

__all__ = ['Claim', 'build_report', 'check_claims', 'write_report']
