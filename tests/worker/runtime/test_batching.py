"""worker.runtime.batching: collecting a batch, and one forward pass where a corrupt image fails alone."""

from __future__ import annotations

import pytest

from tests.conftest import make_image_bytes
from worker.runtime.batching import collect, predict_batch
from worker.runtime.images import ImageRejected
from worker.runtime.predictor import Predictor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_collect_fills_up_to_the_size_without_waiting():
    queued = iter(range(1, 100))
    clock = FakeClock()
    batch = collect(0, lambda: next(queued), max_size=8, max_wait_s=0.005, clock=clock, sleep=clock.sleep)
    assert batch == list(range(8))
    assert clock.sleeps == []  # a full queue never waits


def _arrivals(clock: FakeClock, arrivals: dict[float, str]):
    """``take`` for jobs that arrive at the given times (seconds)."""

    def take():
        for t, item in sorted(arrivals.items()):
            if clock.now >= t:
                del arrivals[t]
                return item
        return None

    return take


def test_once_a_second_job_is_there_collect_waits_at_most_max_wait_for_more():
    clock = FakeClock()
    take = _arrivals(clock, {0.0: "b", 0.002: "c"})  # b is queued already, c arrives 2 ms in
    batch = collect("a", take, max_size=8, max_wait_s=0.005, clock=clock, sleep=clock.sleep, poll_s=0.001)
    assert batch == ["a", "b", "c"]
    assert clock.now == pytest.approx(0.005, abs=0.0011)  # gave up at the deadline, not later


def test_a_lone_job_runs_at_once():
    clock = FakeClock()
    take = _arrivals(clock, {0.001: "b"})  # nothing queued at the first look; b comes 1 ms later
    assert collect("a", take, max_size=16, max_wait_s=0.002, clock=clock, sleep=clock.sleep) == ["a"]
    assert clock.sleeps == [] and clock.now == 0.0
    assert collect("a", lambda: None, max_size=1, max_wait_s=1.0, clock=clock, sleep=clock.sleep) == ["a"]


def test_collect_refuses_a_bad_size():
    with pytest.raises(ValueError):
        collect("a", lambda: None, max_size=0, max_wait_s=0)


class CountingPredictor(Predictor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def predict(self, images, top_k=5):
        self.calls.append(len(images))
        return super().predict(images, top_k=top_k)


def test_predict_batch_one_forward_pass_and_a_corrupt_image_fails_alone(tiny_bundle):
    predictor = CountingPredictor(tiny_bundle, device="cpu")
    good = make_image_bytes("jpg", size=(48, 40))
    corrupt = good[: len(good) // 2]
    images = [good, corrupt, make_image_bytes("png", color=(10, 200, 10)), b"not an image"]
    results = predict_batch(predictor, images, top_k=3)
    assert predictor.calls == [2]  # one forward pass, for the two that decoded
    assert isinstance(results[1], ImageRejected) and "truncated or corrupt" in str(results[1])
    assert isinstance(results[3], ImageRejected)
    for i in (0, 2):
        assert len(results[i]) == 3 and all(label in predictor.classes for label, _ in results[i])
    # The same image alone gives the same answer as inside the batch.
    [alone] = predict_batch(predictor, [good], top_k=3)
    assert [label for label, _ in alone] == [label for label, _ in results[0]]
    assert [p for _, p in alone] == pytest.approx([p for _, p in results[0]], abs=1e-5)


def test_predict_batch_of_only_bad_images_runs_no_model(tiny_bundle):
    predictor = CountingPredictor(tiny_bundle, device="cpu")
    results = predict_batch(predictor, [b"", b"GIF89a"], top_k=5)
    assert predictor.calls == [] and all(isinstance(r, ImageRejected) for r in results)
