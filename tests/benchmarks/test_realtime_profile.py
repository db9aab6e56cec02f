"""``benchmarks.realtime --profile``: py-spy's collapsed stacks summarised per function, and a
profiled process stopped with SIGINT so that py-spy writes its file; ``--product-env`` pairs."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.realtime import profile
from benchmarks.realtime.__main__ import setting
from benchmarks.services import Stack

RAW = """\
process 101:"python -m gunicorn";<module> (gunicorn/__main__.py:7);post (/x/classifier/api.py:40);save (/v/site-packages/django/db/models/base.py:800) 30
process 102:"python -m gunicorn";<module> (gunicorn/__main__.py:7);post (/x/classifier/api.py:41) 10
process 102:"python -m gunicorn";<module> (gunicorn/__main__.py:7);dispatch (/x/classifier/push.py:9) 60
not a stack line
"""


def test_stacks_from_two_processes_add_up_per_function(tmp_path: Path) -> None:
    path = tmp_path / "product-web.txt"
    path.write_text(RAW)
    stacks = profile.read_stacks(path)
    assert sum(stacks.values()) == 100 and all(not f[0].startswith("process") for f in stacks)
    total, inclusive, own = profile.top_functions(stacks, 10)
    assert total == 100
    assert dict(inclusive)["<module> (gunicorn/__main__.py)"] == 100
    assert dict(inclusive)["post (/x/classifier/api.py)"] == 40  # two lines of one function, one row
    assert dict(own) == {
        "dispatch (/x/classifier/push.py)": 60,
        "save (django/db/models/base.py)": 30,  # site-packages shortened to the package
        "post (/x/classifier/api.py)": 10,
    }
    summary = profile.summarise(tmp_path, ["product-web", "worker"]).read_text()
    assert "## product-web: 100 samples" in summary and "| 60 | 60.0% | `dispatch (/x/classifier/push.py)` |" in summary
    assert "worker.txt was not written" in summary


def test_wrap_runs_the_command_under_py_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "py_spy", lambda: "/opt/py-spy")
    cmd = profile.wrap(["python", "-m", "celery", "worker"], tmp_path / "prof", "worker")
    assert cmd[:3] == ["/opt/py-spy", "record", "--subprocesses"]
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "prof" / "worker.txt")
    assert cmd[cmd.index("--") + 1 :] == ["python", "-m", "celery", "worker"]
    assert (tmp_path / "prof").is_dir()


def test_without_py_spy_the_option_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(profile.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(profile.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="pip install py-spy"):
        profile.py_spy()


def test_stack_stops_each_group_with_its_own_signal(tmp_path: Path) -> None:
    """A profiled command gets SIGINT (py-spy writes its samples on Ctrl-C), the others SIGTERM."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: (print('INT', flush=True), sys.exit(0)))\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('TERM', flush=True), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stack = Stack(tmp_path)
    stack.start("plain", [sys.executable, "-c", script], {})
    stack.start("profiled", [sys.executable, "-c", script], {}, stop_signal=signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        "ready" in (tmp_path / f"{n}.log").read_text() for n in ("plain", "profiled")
    ):
        time.sleep(0.05)
    stack.stop()
    assert all(proc.returncode == 0 for _, proc in stack.procs)
    assert (tmp_path / "plain.log").read_text().split() == ["ready", "TERM"]
    assert (tmp_path / "profiled.log").read_text().split() == ["ready", "INT"]


def test_py_spy_writes_its_samples_when_its_group_gets_sigint(tmp_path: Path) -> None:
    """The real profiler, if installed: the contract `--profile` relies on."""
    try:
        exe = profile.py_spy()
    except SystemExit:
        pytest.skip("py-spy is not installed (pip install py-spy)")
    busy = "import time\nend = time.time() + 60\nwhile time.time() < end: sum(range(1000))\n"
    cmd = profile.wrap([sys.executable, "-c", busy], tmp_path, "busy")
    assert cmd[0] == exe
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=30)[0].decode(errors="replace")
    if "Permission" in output or "ptrace" in output.lower():
        pytest.skip(f"py-spy cannot sample here: {output.strip()[-200:]}")
    total, _, own = profile.top_functions(profile.read_stacks(tmp_path / "busy.txt"), 3)
    assert total > 0 and own[0][0].startswith("<module> (<string>)")


def test_product_env_takes_name_value_pairs() -> None:
    assert setting("WEB_DB_THREADS=0") == ("WEB_DB_THREADS", "0")
    assert setting("NOTE=a=b") == ("NOTE", "a=b")
    for bad in ("NOVALUE", "=1", "BAD NAME=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            setting(bad)
