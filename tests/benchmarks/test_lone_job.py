"""benchmarks.lone_job: its phases, report and options (the run itself needs PostgreSQL, Redis and a
Celery worker, so it is a benchmark, not a test)."""

from __future__ import annotations

import pytest

from benchmarks import lone_job


def test_a_jobs_phases_come_from_the_client_clock_and_the_jobs_timestamps():
    phases = lone_job.phases_of(t0=100.0, t1=100.004, started=100.007, finished=100.019, answered=100.024)
    assert phases == pytest.approx(
        {"upload": 4.0, "to start": 3.0, "run": 12.0, "finish + push": 5.0, "total": 24.0}, abs=1e-6
    )
    assert set(phases) == set(lone_job.PHASES)


def job(total: float) -> dict[str, float]:
    return {"upload": 4.0, "to start": 3.0, "run": total - 12.0, "finish + push": 5.0, "total": total}


def test_the_report_gives_medians_p90_rounds_and_the_ratio_to_the_baseline():
    base = lone_job.Config(lone_job.BASELINE, rounds=[[job(24), job(26), job(28)], [job(30), job(22)]])
    other = lone_job.Config("GOMP_SPINCOUNT=0", [("GOMP_SPINCOUNT", "0")], rounds=[[job(36), job(40)]], errors=1)
    text = lone_job.render(["command: `x`"], [base, other])
    assert (
        "| worker defaults | 5 | 0 | 4.00 (4.00) | 3.00 (3.00) | 14.00 (16.00) | 5.00 (5.00) | 26.00 (28.00) |" in text
    )  # p90 by nearest rank
    assert "| GOMP_SPINCOUNT=0 | 2 | 1 |" in text and "38.00 (40.00) |" in text
    assert "- worker defaults: 26.00, 26.00" in text  # the median total of each round
    assert "- GOMP_SPINCOUNT=0: 38.00" in text
    assert "run 1.86x" in text and "total 1.46x" in text  # 26 / 14 and 38 / 26
    assert "upload 1.00x" in text


def test_without_a_comparison_there_is_no_ratio():
    text = lone_job.render([], [lone_job.Config(lone_job.BASELINE, rounds=[[job(25)]])])
    assert "Ratio" not in text and "| worker defaults | 1 | 0 |" in text


def test_it_refuses_nonsense(capsys):
    for argv in (["--jobs", "0"], ["--rounds", "0"], ["--warmup", "-1"], ["--compare", "no-equals-sign"]):
        with pytest.raises(SystemExit):
            lone_job.main(argv)
    err = capsys.readouterr().err
    assert "must be positive" in err and "expected NAME=VALUE" in err


def test_it_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    with pytest.raises(SystemExit):
        lone_job.main(["--bundle", str(tmp_path)])
    assert "is not a model bundle" in capsys.readouterr().err
