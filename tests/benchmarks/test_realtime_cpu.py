"""The realtime benchmark's CPU accounting: a process group's CPU goes to its component."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.realtime import cpu
from benchmarks.realtime.client import Phase
from benchmarks.realtime.report import cpu_table

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


def cpu_around(proc: subprocess.Popen, step) -> dict[str, float]:
    """CPU seconds per component between a snapshot before ``step()`` and one after it (``step``
    must return True: the process said it did its part); ``proc``'s group is "burner"."""
    try:
        before = cpu.snapshot({"burner": proc.pid})
        assert step()
        after = cpu.snapshot({"burner": proc.pid})
    finally:
        proc.kill()
        proc.wait()
    return cpu.spent(before, after)


def test_a_child_that_ended_during_the_phase_still_counts_for_its_group() -> None:
    """Like a PostgreSQL backend of a short connection: it burns, ends, is reaped by its parent."""
    script = (
        "import subprocess, sys, time\n"
        "time.sleep(0.5)\n"
        f"subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
        "print('reaped', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE, text=True)
    used = cpu_around(proc, lambda: proc.stdout.readline().strip() == "reaped")
    # the child's 0.3 s, through its parent's reaped-children time, counted once (with the two
    # interpreters' start-up); "other" is the rest of the machine, busy or not, so it is not bounded
    assert 0.25 <= used["burner"] < 0.8


def test_the_burning_group_leader_is_its_own_component() -> None:
    """The burn starts after the first snapshot and ends before the second, however busy the
    machine is (it waits for a line, burns 0.3 s of CPU, then says so)."""
    script = "import sys, time\nsys.stdin.readline()\n" + BURN + "print('burned', flush=True)\ntime.sleep(30)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def go() -> bool:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip() == "burned"

    used = cpu_around(proc, go)
    assert 0.25 <= used["burner"] < 0.8  # its 0.3 s burn (plus some of its start-up), once


def test_the_table_shows_milliseconds_per_image_and_the_ceiling() -> None:
    phase = Phase("product", 32, latencies=[0.1] * 100, wall=2.0)
    phase.cpu = {"product-web": 1.0, "worker": 2.0, "postgres": 0.5, "idle": 0.4}
    header, _, row = cpu_table([phase], cpus=2)
    assert header.split(" | ")[2:5] == ["product-web", "worker", "postgres"]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 1 s / 100 images = 10 ms; total 35 ms; idle 0.4 of 2 x 2 s = 10%; 2 cores / 35 ms = 57/s
    assert cells[2:] == ["10.0", "20.0", "5.0", "35.0", "10%", "57"]


def test_merged_rounds_add_their_cpu() -> None:
    a = Phase("naive", 1, latencies=[0.1], wall=1.0, cpu={"naive-web": 0.5, "idle": 1.0})
    b = Phase("naive", 1, latencies=[0.1], wall=1.0, cpu={"naive-web": 0.25, "client": 0.1})
    merged = Phase.merged([a, b])
    assert merged.cpu == {"naive-web": 0.75, "idle": 1.0, "client": 0.1}
