"""Peak memory: a model of it per device (`estimate_peak_memory`) and a CPU measurement to check it against.

The measurement (`peak_rss_above`) resets the kernel's resident-set high-water mark (`/proc/self/clear_refs`,
Linux) and reads it back (`VmHWM`) after the call: the bytes the call added at its peak, whatever
allocated them. glibc keeps freed blocks below its (adaptive) mmap threshold in its heap, so the first
measurement fixes that threshold at 1 MiB for the process: a freed tensor then leaves the resident set and
the high-water mark is the peak of live memory, whatever ran before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"/proc/self/status has no {key}; peak RSS is measured on Linux only")
    return int(m.group(1)) * 1024


_MMAP_FIXED = False


def _fix_mmap_threshold() -> None:
    global _MMAP_FIXED
    if _MMAP_FIXED:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops its adaptation)
    except (OSError, AttributeError):  # not glibc: measure as is
        pass
    _MMAP_FIXED = True


def peak_rss_above(fn: Callable[[], T]) -> tuple[T, int]:
    """(fn(), the peak resident bytes during the call above the resident bytes at its start). Linux only."""
    import gc

    _fix_mmap_threshold()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = _status_bytes("VmRSS")
    out = fn()
    return out, _status_bytes("VmHWM") - start
