"""Wall time and peak memory of a call, counting every process it starts (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            out.extend(_tree(int(kid)))
    return out


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def measure(fn: Callable[[], Any], *, interval: float = 0.02) -> tuple[Any, float, int]:
    """Run ``fn``; return (its result, seconds, peak summed RSS in bytes of the process tree)."""
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        me = os.getpid()
        while not done.is_set():
            peak = max(peak, _rss_bytes(_tree(me)))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    return result, seconds, peak
