"""Figures the benchmark derives (benchmarks/run.py): the insert batches' commit percentiles
read from the server's histogram buckets."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).resolve().parents[2] / "benchmarks" / "run.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench
_spec.loader.exec_module(bench)


def cumulative(counts: dict[float, int]) -> dict[float, float]:
    total, out = 0, {}
    for le in sorted(counts):
        total += counts[le]
        out[le] = float(total)
    return out


def test_percentiles_come_from_the_step_s_batches_only():
    bounds = (0.001, 0.002, 0.005, 0.01, 0.02, math.inf)
    before = cumulative({le: 0 for le in bounds} | {0.02: 50})  # slow batches of an earlier step
    # This step: 100 batches, 50 between 1 and 2 ms, 49 between 2 and 5 ms, 1 between 10 and 20 ms.
    during = {0.001: 0, 0.002: 50, 0.005: 49, 0.01: 0, 0.02: 1, math.inf: 0}
    after = cumulative({le: during[le] + (50 if le == 0.02 else 0) for le in bounds})
    figures = bench.batch_commit_ms([(before, after)])
    assert figures["batches"] == 100
    assert figures["p50_ms"] == pytest.approx(2.0)  # the 50th batch ends the (1, 2] bucket
    assert 2.0 < figures["p99_ms"] <= 5.0  # the 99th is the last of the (2, 5] bucket
    assert figures["p99_ms"] == pytest.approx(5.0)


def test_servers_add_up_and_no_batches_means_no_figure():
    one = cumulative({0.001: 10, 0.002: 0, math.inf: 0})
    other = cumulative({0.001: 0, 0.002: 10, math.inf: 0})
    empty = cumulative({0.001: 0, 0.002: 0, math.inf: 0})
    figures = bench.batch_commit_ms([(empty, one), (empty, other)])
    assert figures["batches"] == 20
    assert figures["p50_ms"] == pytest.approx(1.0)
    assert 1.0 < figures["p99_ms"] <= 2.0
    assert bench.batch_commit_ms([(empty, empty)]) is None
    assert bench.batch_commit_ms([({}, {})]) is None  # the reference has no such histogram


def test_a_tail_beyond_the_last_bound_reads_as_that_bound():
    figures = bench.batch_commit_ms([({}, cumulative({0.001: 1, 2.5: 0, math.inf: 99}))])
    assert figures["p99_ms"] == pytest.approx(2500.0)
