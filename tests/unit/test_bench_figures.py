"""Figures the benchmark derives (benchmarks/run.py): the insert batches' commit percentiles
read from the server's histogram buckets, and the host's steal time kept apart from busy CPU."""

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
host_cpu = importlib.import_module("benchmarks.host_freezes")  # on the path since run.py put the repository there


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


PROC_STAT = """cpu  1000 0 500 8000 100 0 50 400 0 0
cpu0 600 0 300 3900 50 0 30 300 0 0
cpu1 400 0 200 4100 50 0 20 100 0 0
intr 12345 0 0
"""


def test_steal_time_is_not_counted_as_busy():
    cores = host_cpu.parse_proc_stat(PROC_STAT, tick=100)
    assert cores["cpu"] == (pytest.approx(15.5), pytest.approx(4.0))  # user + system + softirq; steal
    assert cores["cpu0"] == (pytest.approx(9.3), pytest.approx(3.0))
    assert set(cores) == {"cpu", "cpu0", "cpu1"}  # stops at the first line that is not a core


def test_a_step_reports_the_steal_of_its_own_marks_apart_from_other_cpu():
    def mark(t: float, busy: float, steal: float) -> dict:
        return {"t": t, "servers": [{"cpu_s": busy / 2, "cpu_system_s": 0.0, "rss": 0}], "postgres": {}, "redis_cpu_s": 0.0,
                "machine": {"cpu": busy, "cpu0": busy / 2, "cpu1": busy / 2}, "steal": {"cpu": steal}, "processes": {}}

    class Named:
        name, cores, proc = "ours", "0", None

    # 10 s step: the server used 5 s, the generator 2 s, the machine 7.5 s; the host stole 3 s.
    step = {"generator": {"cpu_user_s": 2.0, "cpu_system_s": 0.0, "cpu_util": 0.2}, "delivered": 1000, "acked": 500}
    begin = mark(0.0, 0.0, 1.0) | {"name": "step_begin"}
    end = mark(10.0, 7.5, 4.0) | {"name": "step_end"}
    end["servers"][0]["cpu_s"] = 5.0
    bench.attach_cpu([step], [begin, end], [Named()])
    assert step["steal_cores"] == pytest.approx(0.3)
    assert step["other_cpu_cores"] == pytest.approx(0.05)  # 7.5 - 5 - 2 = 0.5 s, steal not in it
    assert step["wal_bytes_per_message"] is None  # no WAL position in the marks: not measured, not 0


def test_a_step_reports_the_wal_its_stored_messages_wrote():
    def mark(t: float, wal: float | None) -> dict:
        return {"t": t, "servers": [{"cpu_s": 0.0, "cpu_system_s": 0.0, "rss": 0}], "postgres": {}, "redis_cpu_s": 0.0,
                "machine": {"cpu": 0.0}, "steal": {"cpu": 0.0}, "processes": {}, "wal_bytes": wal}

    class Named:
        name, cores, proc = "ours", "0", None

    step = {"generator": {"cpu_user_s": 0.0, "cpu_system_s": 0.0, "cpu_util": 0.0}, "delivered": 1000, "acked": 500}
    bench.attach_cpu([step], [mark(0.0, 1_000_000.0) | {"name": "step_begin"}, mark(5.0, 2_000_000.0) | {"name": "step_end"}], [Named()])
    assert step["wal_bytes_per_message"] == pytest.approx(2000.0)  # 1,000,000 bytes for 500 acked messages
    unread = {"generator": {"cpu_user_s": 0.0, "cpu_system_s": 0.0, "cpu_util": 0.0}, "delivered": 1000, "acked": 500}
    bench.attach_cpu([unread], [mark(0.0, 1_000_000.0) | {"name": "step_begin"}, mark(5.0, None) | {"name": "step_end"}], [Named()])
    assert unread["wal_bytes_per_message"] is None


def test_the_table_names_host_freezes_and_steal():
    results = {"profile": "quick", "environment": {"server_core": "0", "load_core": "1", "node": "v20", "socketio": "4.8.4"},
               "steal_cores_max": 0.2, "steal_cores_mean": 0.1,
               "host_freezes": [{"core": 0, "seconds": 10, "gap_ms": 10, "gaps": 3, "longest_ms": 37.5, "steal_s": 1.2},
                                {"core": 1, "seconds": 10, "gap_ms": 10, "gaps": 0, "longest_ms": 0.0, "steal_s": None}]}
    text = bench.print_table([["metric", "ours", "reference", "ours/ref", "target", ""]], results)
    assert "steal time) during steps: mean 0.10, at most 0.20 cores  <-- a contended host" in text
    assert "core 0: 3 wake-ups over 10 ms late in 10 s, longest 37.5 ms, steal 1.20 s; core 1: 0 wake-ups" in text
    assert "<-- the host stops these cores for longer than a 20 ms latency target" in text
    quiet = bench.print_table([["metric", "ours", "reference", "ours/ref", "target", ""]],
                              results | {"steal_cores_max": 0.01, "host_freezes": results["host_freezes"][1:]})
    assert "<--" not in quiet


def test_the_freeze_probe_reports_its_own_core_and_wakeups():
    result = host_cpu.measure(0.05, gap_ms=1000.0)
    assert result["gaps"] == 0 and result["longest_ms"] == 0.0  # nothing is 1 s late in 50 ms
    assert 10 <= result["wakeups"] <= 60  # a 1 ms sleeper, not a busy loop


def ingest_step(rate: float, p50: float, p99: float) -> dict:
    return {"rate": rate, "sent": rate * 5, "acked": rate * 5, "acked_per_s": rate, "ack_errors": {},
            "ack_latency": {"p50_ms": p50, "p99_ms": p99}, "cpu_us_per_message": 130.0, "postgres_cpu_us_per_message": 90.0}


def ingest_side(p99_at_target: float, few_p99: float) -> dict:
    target = ingest_step(5000, 3.0, p99_at_target)
    return {"steps": [target], "best_rate_p99_20ms": 5000, "best_acked_per_s_p99_20ms": 5000, "max_acked_per_s": 5000,
            "target": target, "target_rate": 5000,
            "few_senders": {"clients": 6, "target": ingest_step(5000, 2.0, few_p99)}}


def test_the_ingest_table_judges_the_few_fast_clients_on_their_own():
    results = {"scenarios": {"ingest": {"ours": ingest_side(9.0, 1031.0), "ref": ingest_side(2.0, 1.6)}}}
    rows = {row[0]: row for row in bench.build_table(results)}
    few = rows["ingest @ 5000 msg/s from 6 clients (833/s each): ack p50 / p99"]
    assert few[1:] == ["2.0 / 1031.0 ms", "2.0 / 1.6 ms", "644.38x (p99)", "p99 <= 20 ms", "MISS"]
    assert rows["ingest @ 5000 msg/s offered: ack p50 / p99"][-1] == "PASS"  # the many-clients figure stands apart
    results["scenarios"]["ingest"]["ours"] = ingest_side(9.0, 7.0)
    rows = {row[0]: row for row in bench.build_table(results)}
    assert rows["ingest @ 5000 msg/s from 6 clients (833/s each): ack p50 / p99"][-1] == "PASS"
