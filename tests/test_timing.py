"""utils.timing: the one latency timer (export manifest, evaluate, serving bench)."""

import time

import pytest

from matta_rec.utils.timing import latency_summary, time_calls


def test_warmup_calls_are_not_timed():
    calls = []
    times = time_calls(lambda: calls.append(1), repeats=4, warmup=3)
    assert len(calls) == 7
    assert len(times.wall_ms) == 4 and len(times.cpu_ms) == 4


def test_wall_and_cpu_time_of_a_sleep():
    times = time_calls(lambda: time.sleep(0.02), repeats=3)
    assert all(t >= 19.0 for t in times.wall_ms)
    # Sleeping burns (almost) no CPU: the two clocks are measured separately.
    assert all(c < 15.0 for c in times.cpu_ms)
    assert times.median_ms == sorted(times.wall_ms)[1]


def test_summary_uses_order_statistics():
    out = latency_summary([5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 8.0, 9.0, 11.0], rows=4)
    assert out["median_ms"] == 6.0
    assert out["p10_ms"] == 2.0 and out["p90_ms"] == 10.0
    assert out["per_example_us"] == 1500.0 and out["repeats"] == 11


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        time_calls(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_calls(lambda: None, repeats=1, warmup=-1)
    with pytest.raises(ValueError, match="no timings"):
        latency_summary([])
