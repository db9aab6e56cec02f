"""``--profile DIR``: where the product's web and worker processes spend their CPU, sampled by
py-spy (``pip install py-spy``; a sampling profiler that runs the command as its child, so no
ptrace permission on other processes is needed).

Each profiled command runs as ``py-spy record --subprocesses --format raw -o DIR/<name>.txt --
<command>`` (the gunicorn and Celery workers it forks are followed), is stopped with SIGINT so
that py-spy writes its file, and `summarise` turns the collapsed stacks into ``DIR/profile.md``:
per component, the functions with the most samples, inclusive (the function or anything it
called was on the CPU) and self (the function's own lines). py-spy samples only threads that are
running, so the shares are of busy time, not wall time. The sampler's own CPU (a few per cent at
the default rate) lands in the component's row of the CPU table.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

RATE = 200  # samples per second per process
PROCESS_FRAME = re.compile(r"^process \d+:")


def py_spy() -> str:
    """The py-spy executable, or SystemExit with what to install."""
    beside = Path(sys.executable).parent / "py-spy"  # installed in this virtualenv, not on PATH
    exe = str(beside) if beside.is_file() else shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy (a sampling profiler from PyPI)")
    return exe


def wrap(command: list[str], out_dir: Path, name: str) -> list[str]:
    """``command`` run under py-spy, its collapsed stacks written to ``out_dir/<name>.txt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        py_spy(), "record", "--subprocesses", "--format", "raw", "--rate", str(RATE), "--nonblocking",
        "-o", str(out_dir / f"{name}.txt"), "--", *command,
    ]  # fmt: skip


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """Collapsed stacks ``frame;frame;... count`` -> {frames: samples}; the process frames that
    ``--subprocesses`` puts at the root are dropped, so the workers' samples add up."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(f for f in stack.split(";") if not PROCESS_FRAME.match(f))
        if frames:
            stacks[frames] += int(count)
    return stacks


def function_of(frame: str) -> str:
    """``handle (django/core/handlers/base.py:181)`` -> ``handle (django/core/handlers/base.py)``:
    one row per function, not per line; site-packages paths shortened to the package."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    file = file.split("site-packages/", 1)[-1]
    return f"{name} ({file})"


def top_functions(stacks: Counter[tuple[str, ...]], n: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, the n functions with the most inclusive samples, the n with the most self samples)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks.items():
        for fn in {function_of(f) for f in frames}:
            inclusive[fn] += count
        own[function_of(frames[-1])] += count
    return sum(stacks.values()), inclusive.most_common(n), own.most_common(n)


def summarise(out_dir: Path, names: list[str], n: int = 25) -> Path:
    """``out_dir/profile.md`` from the components' collapsed stacks (those that were written)."""
    lines = [
        "# Where the product's processes spent their CPU (py-spy samples)",
        "",
        f"Sampled at {RATE}/s per process over the whole run (start-up included); running threads only, "
        "so a share is of busy time. Inclusive: the function or what it called was running; self: its own lines.",
    ]
    for name in names:
        path = out_dir / f"{name}.txt"
        if not path.is_file():
            lines += [
                "",
                f"## {name}",
                "",
                f"no samples: {path.name} was not written (did the process stop on SIGINT?)",
            ]
            continue
        total, inclusive, own = top_functions(read_stacks(path), n)
        lines += ["", f"## {name}: {total} samples ({total / RATE:.1f} s of CPU at {RATE}/s)", ""]
        lines += ["| inclusive | share | function |", "|---:|---:|---|"]
        lines += [f"| {c} | {100 * c / total:.1f}% | `{fn}` |" for fn, c in inclusive]
        lines += ["", "| self | share | function |", "|---:|---:|---|"]
        lines += [f"| {c} | {100 * c / total:.1f}% | `{fn}` |" for fn, c in own]
    path = out_dir / "profile.md"
    path.write_text("\n".join(lines) + "\n")
    return path
