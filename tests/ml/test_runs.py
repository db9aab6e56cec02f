"""ml.runs: the run folder."""

from __future__ import annotations

from ml.train import TrainConfig


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from datetime import datetime as real_datetime

    import ml.runs as runs_module

    class FrozenClock(real_datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime(2026, 11, 22, 8, 0, 0)

    monkeypatch.setattr(runs_module, "datetime", FrozenClock)
    cfg = TrainConfig(out_dir=str(tmp_path), name="same")
    first, second, third = (runs_module.run_dir(cfg) for _ in range(3))
    assert [p.name for p in (first, second, third)] == [
        "20261122-080000-same",
        "20261122-080000-same-2",
        "20261122-080000-same-3",
    ]
    assert all(p.is_dir() for p in (first, second, third))


def test_eta_extrapolates_the_pace_so_far():
    from ml.runs import eta

    assert eta(600.0, 2, 10) == "40 min"  # 300 s an epoch, 8 to go
    assert eta(1052.0, 1, 24) == "6.7 h"  # the first epoch of a run that would not fit a session
    assert eta(10.0, 3, 3) == "0 min"
