"""Progress display: a one-line bar on a terminal, plain log lines otherwise (e.g. under SLURM)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total_steps: int, label: str, stream: TextIO = sys.stderr, quiet: bool = False,
                 log_every_s: float = 30.0):
        self.total = total_steps
        self.label = label
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.log_every_s = log_every_s
        self.start = time.monotonic()
        self._last_log = -float("inf")
        self._steps_at_start = 0

    def begin(self, steps: int) -> None:
        """Training starts (or resumes) at `steps`: the rate is measured from here."""
        self.start = time.monotonic()
        self._steps_at_start = steps

    def _rate(self, steps: int) -> float:
        elapsed = time.monotonic() - self.start
        return (steps - self._steps_at_start) / elapsed if elapsed > 0 else 0.0

    def update(self, iteration: int, steps: int, last_return: float | None, force: bool = False) -> None:
        if self.quiet:
            return
        rate = self._rate(steps)
        frac = min(1.0, steps / self.total) if self.total else 1.0
        ret = "-" if last_return is None else f"{last_return:.3f}"
        if self.tty:
            width = 24
            filled = int(frac * width)
            bar = "#" * filled + "." * (width - filled)
            line = (f"\r{self.label} [{bar}] {100 * frac:5.1f}%  iter {iteration}  "
                    f"steps {steps:,}/{self.total:,}  return {ret}  {rate:,.0f} steps/s")
            self.stream.write(line)
            self.stream.flush()
            return
        now = time.monotonic()
        if force or now - self._last_log >= self.log_every_s:
            self._last_log = now
            self.stream.write(f"{self.label}: iter {iteration}  steps {steps:,}/{self.total:,} "
                              f"({100 * frac:.1f}%)  train return {ret}  {rate:,.0f} steps/s\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
