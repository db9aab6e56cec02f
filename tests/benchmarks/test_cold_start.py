"""benchmarks.cold_start: its report and options (the run itself needs the services, so it is a
benchmark, not a test)."""

from __future__ import annotations

import pytest

from benchmarks import cold_start


def test_the_report_gives_each_request_and_the_ratio_to_the_steady_ones():
    # Two starts per setting, five uploads each (end to end ms, inference ms) and five demos.
    def start(uploads, demos):
        return cold_start.Start(uploads=uploads, demos=demos, web_rss_mb=[110.0, 112.5])

    warm = [
        start([(150, 40), (80, 30), (70, 30), (60, 25), (60, 25)], [90, 70, 60, 50, 50]),
        start([(170, 50), (90, 30), (70, 30), (60, 25), (60, 25)], [110, 70, 60, 50, 50]),
    ]
    cold = [
        start([(900, 500), (300, 250), (70, 30), (60, 25), (60, 25)], [3000, 80, 60, 50, 50]),
        start([(1100, 540), (320, 270), (70, 30), (60, 25), (60, 25)], [3400, 90, 60, 50, 50]),
    ]
    text = cold_start.render(["command: `x`"], {"warm-up": warm, "no warm-up": cold})
    assert "| warm-up | 160.0 | 85.0 | 70.0 | 60.0 | 2.67x |" in text  # medians over the starts
    assert "| no warm-up | 1000.0 | 310.0 | 70.0 | 60.0 | 16.67x |" in text
    assert "| no warm-up | 520.0 | 260.0 | 30.0 | 25.0 | 20.80x |" in text  # inference time
    assert "| warm-up | 100.0 | 70.0 | 60.0 | 50.0 | 2.00x |" in text  # the demo
    assert "| no warm-up | 3200.0 | 85.0 | 60.0 | 50.0 | 64.00x |" in text
    assert "- warm-up: 110, 112; 110, 112" in text
    assert "First upload end to end: 160.0 ms with the warm-up against 1000.0 ms without (6.25x)." in text


def test_the_options_are_checked_and_the_product_gets_the_worker_defaults():
    args = cold_start.parse_args([])
    assert (args.rounds, args.jobs, args.database) == (3, 10, "cifar_cold_start_bench")
    assert (args.batch_size, args.batch_wait_ms, args.worker_torch_threads, args.profile) == (16, 2.0, 1, None)
    with pytest.raises(SystemExit):
        cold_start.parse_args(["--jobs", str(cold_start.FIRST)])  # nothing would be left for "steady"
    with pytest.raises(SystemExit):
        cold_start.parse_args(["--demos", "1"])
