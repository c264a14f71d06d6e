"""The host's share of this machine's CPU: /proc/stat's busy and steal time (read by
``benchmarks/run.py`` at every step mark), and how often a core stops running: a 1 ms
sleeper that records every wake-up late by more than ``--gap-ms`` (default 10 ms), with
the core's steal time meanwhile.

On a virtual machine whose host is shared, the hypervisor now and then runs another guest
on this core for a time slice (tens of milliseconds): every process on it freezes, and a
latency target of 20 ms is at that scale.  ``benchmarks/run.py`` runs this on each core
before the scenarios (the machine otherwise idle) and reports it under its table.

    .venv/bin/python benchmarks/host_freezes.py 10          # this process's core
    taskset -c 0 .venv/bin/python benchmarks/host_freezes.py 10
"""

from __future__ import annotations

import argparse
import json
import os
import time


def parse_proc_stat(text: str, tick: float = 100.0) -> dict[str, tuple[float, float]]:
    """Per ``cpu*`` line of /proc/stat: (busy seconds, steal seconds).  Busy is every state
    but idle, iowait and steal; steal is time the hypervisor ran another machine on this
    virtual core while it had work (it is no process's CPU, and not idle either)."""
    out: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            break
        fields = line.split()
        values = [int(v) for v in fields[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        steal = values[7] if len(values) > 7 else 0
        out[fields[0]] = ((sum(values[:8]) - idle - steal) / tick, steal / tick)
    return out


def machine_cpu() -> tuple[dict[str, float], dict[str, float]]:
    """Busy and steal seconds of each core and of the whole machine (/proc/stat): busy is
    what every process and the kernel used, so CPU taken by anything else on the machine
    shows; steal is what a shared host took away."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        with open("/proc/stat") as stat:
            cores = parse_proc_stat(stat.read(), tick)
    except OSError:
        cores = {}
    return {k: busy for k, (busy, _) in cores.items()}, {k: steal for k, (_, steal) in cores.items()}


def measure(seconds: float, gap_ms: float = 10.0) -> dict[str, object]:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    core = affinity[0] if len(affinity) == 1 else None
    name = f"cpu{core}"
    steal_before = machine_cpu()[1].get(name) if core is not None else None
    gaps: list[float] = []
    wakeups = 0
    end = time.monotonic() + seconds
    previous = time.monotonic()
    while previous < end:
        time.sleep(0.001)
        now = time.monotonic()
        wakeups += 1
        late_ms = (now - previous) * 1000 - 1.0
        if late_ms > gap_ms:
            gaps.append(late_ms)
        previous = now
    steal_after = machine_cpu()[1].get(name) if core is not None else None
    return {
        "core": core,
        "seconds": seconds,
        "wakeups": wakeups,
        "gap_ms": gap_ms,
        "gaps": len(gaps),
        "longest_ms": round(max(gaps), 1) if gaps else 0.0,
        "frozen_ms": round(sum(gaps), 1),
        "steal_s": round(steal_after - steal_before, 2) if steal_before is not None and steal_after is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seconds", type=float, nargs="?", default=5.0)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds, args.gap_ms)))


if __name__ == "__main__":
    main()
