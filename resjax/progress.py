"""Console progress with a rate and an estimated time to completion.

``Progress(total, label)`` counts units of work (training steps, lesion settings,
batches); ``update(n, **fields)`` adds ``n`` and may attach fields such as the loss.
On a terminal the line is redrawn in place. In a log file a new line is written at
most every ``interval_s`` seconds, so long runs do not flood the log.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO


def format_duration(seconds: float) -> str:
  """Format seconds as 'H:MM:SS' (or 'M:SS' below an hour)."""
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f'{hours}:{minutes:02d}:{seconds:02d}'
  return f'{minutes}:{seconds:02d}'


def _format_field(name: str, value: Any) -> str:
  if isinstance(value, float):
    return f'{name} {value:.4g}'
  return f'{name} {value}'


class Progress:
  """A progress line for ``total`` units of work.

  The rate and the estimate are measured from the first ``update`` on, so the work
  it reports (compiling the first step, say) does not distort them.

  Args:
    total: units of work in all, counting those already done before ``start``.
    label: the first word of the line, such as 'train' or 'lesion_single'.
    unit: the name of a unit in the rate, such as 'steps' ('steps/s').
    start: units already done (a resumed run starts part way).
    stream: where to write; default ``sys.stderr``.
    interval_s: minimum seconds between two lines when ``stream`` is not a terminal.
    clock: the time source in seconds, replaceable in tests.
  """

  def __init__(self, total: int, label: str, *, unit: str = 'units', start: int = 0,
               stream: TextIO | None = None, interval_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    if total < 0 or not 0 <= start <= total:
      raise ValueError(f'Progress needs 0 <= start <= total, got start={start}, '
                       f'total={total}.')
    self.total = total
    self.label = label
    self.unit = unit
    self.done = start
    self.fields: dict[str, Any] = {}
    self._stream = stream if stream is not None else sys.stderr
    self._interactive = bool(getattr(self._stream, 'isatty', lambda: False)())
    self._interval_s = interval_s
    self._clock = clock
    self._first_time: float | None = None
    self._first_done = start
    self._last_write = -float('inf')
    self._written_done: int | None = None
    self._closed = False

  def update(self, n: int = 1, **fields: Any) -> None:
    """Add ``n`` units of work done and set the fields shown after the count."""
    now = self._clock()
    self.done = min(self.total, self.done + n)
    self.fields.update(fields)
    if self._first_time is None:
      # The rate counts from the end of the first update, which often includes setup.
      self._first_time = now
      self._first_done = self.done
    if self._interactive or now - self._last_write >= self._interval_s:
      self._write(now)

  def rate(self) -> float | None:
    """Units per second since the first update, or None before there is a measure."""
    if self._first_time is None:
      return None
    elapsed = self._clock() - self._first_time
    counted = self.done - self._first_done
    if elapsed <= 0 or counted <= 0:
      return None
    return counted / elapsed

  def eta_seconds(self) -> float | None:
    """Estimated seconds to finish at the rate so far, or None before there is a rate."""
    rate = self.rate()
    if rate is None:
      return None
    return (self.total - self.done) / rate

  def line(self) -> str:
    """Return the progress line, without a line ending."""
    share = 100.0 * self.done / self.total if self.total else 100.0
    parts = [f'{self.label} {self.done}/{self.total} ({share:.1f}%)']
    parts += [_format_field(name, value) for name, value in self.fields.items()]
    rate = self.rate()
    if rate is not None:
      parts.append(f'{rate:.3g} {self.unit}/s')
    eta = self.eta_seconds()
    parts.append(f'ETA {format_duration(eta)}' if eta is not None else 'ETA ?')
    return ', '.join(parts)

  def _write(self, now: float) -> None:
    self._last_write = now
    self._written_done = self.done
    if self._interactive:
      self._stream.write('\r\x1b[K' + self.line())
    else:
      self._stream.write(self.line() + '\n')
    self._stream.flush()

  def close(self) -> None:
    """Write the final count unless it was the last line written; end a redrawn line."""
    if self._closed:
      return
    self._closed = True
    if self._interactive or self._written_done != self.done:
      self._write(self._clock())
    if self._interactive:
      self._stream.write('\n')
      self._stream.flush()

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
