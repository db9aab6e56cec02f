"""Where the cores go: CPU time by component, read from /proc around each measured phase.

On two cores the throughput at 32 clients is the CPU budget divided by the CPU an image costs,
so the report shows that cost by component: the processes this run started (by process group:
the product's web server and worker, the naive server), PostgreSQL and Redis (every process of
that name: the servers are shared, so run on a quiet machine), the benchmark's own client (this
process), everything else on the machine ("other"), and the cores left idle.

A process's time is its own (user + system) plus that of its children it has reaped, so the
backends PostgreSQL starts and ends for short connections still count. Linux only: elsewhere the
snapshot is empty and the report says so.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

PROC = Path("/proc")
COMPONENTS = {"postgres": "postgres", "redis-server": "redis"}  # process name -> component


def _ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def _read_stat(pid: str) -> tuple[str, int, int] | None:
    """(name, process group, CPU ticks of the process and its reaped children) of one process."""
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:  # gone meanwhile, or not ours to read
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state; pgrp is 5, utime..cstime are 14..17
    return name, int(fields[2]), sum(int(f) for f in fields[11:15])


def snapshot(groups: dict[str, int]) -> Counter:
    """CPU seconds used so far by each component: each of ``groups`` (name -> process group id),
    ``postgres``, ``redis``, ``client`` (this process), ``other``; and ``idle`` (all cores, since boot)."""
    by_group = {pgid: name for name, pgid in groups.items()}
    me = str(os.getpid())
    hz = _ticks_per_second()
    used: Counter = Counter()
    if not PROC.is_dir():
        return used
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        stat = _read_stat(entry)
        if stat is None:
            continue
        name, pgrp, ticks = stat
        component = by_group.get(pgrp) or COMPONENTS.get(name) or ("client" if entry == me else "other")
        used[component] += ticks / hz
    try:
        cpu = (PROC / "stat").read_text().splitlines()[0].split()
        used["idle"] = (int(cpu[4]) + int(cpu[5])) / hz  # idle + iowait, summed over the cores
    except (OSError, IndexError, ValueError):
        pass
    return used


def spent(before: Counter, after: Counter) -> dict[str, float]:
    """CPU seconds each component used between two snapshots (negative differences, from processes
    that ended unreaped, count as 0)."""
    return {k: max(after.get(k, 0.0) - before.get(k, 0.0), 0.0) for k in set(before) | set(after)}
