"""benchmarks.live_camera: what it reports against the live camera target (the run itself needs
Chromium and the services, so it is a benchmark, not a test)."""

from __future__ import annotations

from benchmarks import live_camera


def result(frames: int, seconds: float) -> dict[str, object]:
    return {
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds,
        "page_fps": "14.9",
        "page_round_trip": "50 ms",
        "status": "",
        "load_start": "0.5 0.5 0.5",
        "load_end": "1.0 0.6 0.5",
    }


def test_the_report_says_whether_the_target_is_met():
    met = live_camera.render(["command: `x`"], result(300, 20.0))
    assert "| 300 | 20.0 | **15.0** | 14.9 | 50 ms |" in met
    assert "Target ≥ 5 frames/s: **met**" in met
    missed = live_camera.render(["command: `x`"], result(60, 20.0))
    assert "**missed by 2.0 frames/s**" in missed


def test_the_defaults_give_the_product_what_it_starts_with():
    args = live_camera.parse_args([])
    # benchmarks.realtime.servers.start_product reads these (the worker's own defaults)
    assert (args.batch_size, args.batch_wait_ms, args.worker_torch_threads, args.profile) == (16, 2.0, 1, None)
    assert args.seconds == 30.0 and args.database == "cifar_live_bench"
