"""Progress while rows stream: a live tqdm display (per table and overall, rows/s, ETA)
on a terminal; otherwise a structured ``progress`` event every few seconds, so
``kubectl logs -f`` shows where the job is."""
from __future__ import annotations

import sys
import time

import structlog

log = structlog.get_logger()


class Progress:
    def __init__(self, mode: str = "events", interval_s: float = 5.0):
        self.mode = mode  # "bars", "events" or "off"
        self.interval_s = interval_s
        self.phase = ""
        self.total = self.done = 0
        self._bars = None
        self._t0 = self._last = 0.0
        self.table = None
        self.table_total = self.table_done = 0

    def start_phase(self, phase: str, total_rows: int) -> None:
        self.phase, self.total, self.done = phase, total_rows, 0
        self._t0 = self._last = time.monotonic()
        if self.mode == "bars":
            from tqdm import tqdm
            self._bars = (tqdm(total=total_rows, desc=f"{phase} (all tables)", unit=" rows", position=0,
                               file=sys.stderr, dynamic_ncols=True, unit_scale=True),
                          tqdm(total=0, desc="", unit=" rows", position=1, file=sys.stderr, leave=False,
                               dynamic_ncols=True, unit_scale=True))

    def start_table(self, table: str, rows: int) -> None:
        self.table, self.table_total, self.table_done = table, rows, 0
        if self._bars:
            bar = self._bars[1]
            bar.reset(total=rows)
            bar.set_description(table)

    def advance(self, n: int) -> None:
        self.done += n
        self.table_done += n
        if self._bars:
            self._bars[0].update(n)
            self._bars[1].update(n)
            return
        now = time.monotonic()
        if self.mode == "events" and now - self._last >= self.interval_s:
            self._last = now
            self.event(now)

    def event(self, now: float | None = None) -> dict:
        now = now or time.monotonic()
        elapsed = max(now - self._t0, 1e-9)
        rate = self.done / elapsed
        fields = {"phase": self.phase, "table": self.table, "table_rows_done": self.table_done,
                  "table_rows_total": self.table_total, "rows_done": self.done, "rows_total": self.total,
                  "rows_per_s": round(rate), "eta_s": round((self.total - self.done) / rate, 1) if rate else None,
                  "percent": round(100 * self.done / self.total, 1) if self.total else 100.0}
        log.info("progress", **fields)
        return fields

    def end_phase(self) -> None:
        if self._bars:
            for bar in reversed(self._bars):
                bar.close()
            self._bars = None
        elif self.mode == "events" and self.total:
            self.event()


_current = Progress("off")


def configure(mode: str, interval_s: float) -> None:
    global _current
    _current = Progress(mode, interval_s)


def current() -> Progress:
    return _current
