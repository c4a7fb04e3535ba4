"""The measurements of a benchmark run, as the JSON objects written to benchmarks.json."""

from __future__ import annotations

import dataclasses
from typing import Any

from resjax.benchmarks.timing import Timing


@dataclasses.dataclass
class Recorder:
  """Collects measurements, ratios between them, skipped groups and notes.

  Every measurement is a dict with at least 'id' (unique in the run), 'name',
  'value' and 'unit'. A ratio also has 'numerator' and 'denominator', the ids of
  the two measurements it divides, both from this run.
  """

  measurements: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def find(self, measurement_id: str) -> dict[str, Any]:
    for measurement in self.measurements:
      if measurement['id'] == measurement_id:
        return measurement
    raise KeyError(f'no measurement with id {measurement_id!r} in this run.')

  def add(self, measurement_id: str, name: str, value: float | None, unit: str,
          **details: Any) -> dict[str, Any]:
    """Record one measurement; ``details`` are written beside the value."""
    if any(m['id'] == measurement_id for m in self.measurements):
      raise ValueError(f'measurement id {measurement_id!r} is recorded twice; ids must be '
                       'unique within a run.')
    measurement = {'id': measurement_id, 'name': name, 'value': value, 'unit': unit,
                   **details}
    self.measurements.append(measurement)
    return measurement

  def add_timing(self, measurement_id: str, name: str, timed: Timing, work: float,
                 unit: str, **details: Any) -> dict[str, Any]:
    """Record a throughput: ``work`` units done per call, divided by the median call."""
    return self.add(measurement_id, name, work / timed.median, unit,
                    median_seconds=timed.median, seconds=list(timed.seconds),
                    repeats=len(timed.seconds), warmup_seconds=timed.warmup_seconds,
                    **details)

  def add_ratio(self, measurement_id: str, name: str, numerator: str, denominator: str, *,
                target: str | None = None, minimum: float | None = None,
                maximum: float | None = None, **details: Any) -> dict[str, Any]:
    """Record ``value(numerator) / value(denominator)`` and whether it meets its target.

    Args:
      measurement_id: id of the ratio.
      name: the ratio's key, such as 'lesion_vmap_vs_loop'.
      numerator: id of a measurement recorded before.
      denominator: id of a measurement recorded before, in the same unit.
      target: the target in words, for the report.
      minimum: the ratio meets its target when it is at least this.
      maximum: the ratio meets its target when it is at most this.
    """
    top, bottom = self.find(numerator), self.find(denominator)
    if top['unit'] != bottom['unit']:
      raise ValueError(f'cannot divide {numerator} ({top["unit"]}) by {denominator} '
                       f'({bottom["unit"]}): the units differ.')
    value = top['value'] / bottom['value']
    meets = None
    if minimum is not None or maximum is not None:
      meets = ((minimum is None or value >= minimum) and (maximum is None or value <= maximum))
    return self.add(measurement_id, name, value, 'ratio', numerator=numerator,
                    denominator=denominator, target=target, meets_target=meets, **details)

  def skip(self, group: str, reason: str) -> None:
    """Record that a group of measurements was not run, and why."""
    self.skipped.append({'group': group, 'reason': reason})

  def note(self, text: str) -> None:
    self.notes.append(text)
