"""The judge alarm: the share of failed judgements over the last `window` responses sent to the judge.

A judge that fails every critique (a 400 from a misconfigured endpoint, a dead server) leaves every
all-negative group uncolored, and SGPO silently trains as GRPO. `JudgeHealth` makes that loud: metrics, an
ERROR log when the alarm turns on (and a line when it turns off), the status file, and optionally a stop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sgpo.orchestrator.config import JudgeAlarmConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JudgeHealthState:
    judged: int
    """Responses in the window."""
    failed_share: float
    alarm: bool
    changed: bool
    """The alarm turned on or off with this record."""


class JudgeHealth:
    """Thread-safe sliding window of judgement outcomes (True: failed)."""

    def __init__(self, cfg: JudgeAlarmConfig) -> None:
        self.cfg = cfg
        self._window: deque[bool] = deque(maxlen=cfg.window)
        self._lock = threading.Lock()
        self.alarm = False
        self.failed_share = 0.0
        self.failed_total = self.judged_total = 0

    def record(self, failed: int, ok: int) -> JudgeHealthState:
        with self._lock:
            self._window.extend([True] * failed + [False] * ok)
            self.failed_total += failed
            self.judged_total += failed + ok
            n = len(self._window)
            share = sum(self._window) / n if n else 0.0
            alarm = n >= self.cfg.min_judged and share > self.cfg.max_failed_share
            changed, self.alarm, self.failed_share = alarm != self.alarm, alarm, share
            return JudgeHealthState(n, share, alarm, changed)


def write_status(path: Path, status: dict[str, object]) -> None:
    """Replace `path` atomically with `status` as JSON (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"t": time.time(), **status}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
