"""How often this core stops running: a 1 ms sleeper that records every wake-up late by
more than ``--gap-ms`` (default 10 ms), with the core's steal time meanwhile.

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


def core_steal_ticks(core: int) -> int | None:
    """The steal field of ``cpu<core>`` in /proc/stat (clock ticks), None where unknown."""
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith(f"cpu{core} "):
                    fields = line.split()
                    return int(fields[8]) if len(fields) > 8 else None
    except OSError:
        return None
    return None


def measure(seconds: float, gap_ms: float = 10.0) -> dict[str, object]:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    core = affinity[0] if len(affinity) == 1 else None
    steal_before = core_steal_ticks(core) if core is not None else None
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
    steal_after = core_steal_ticks(core) if core is not None else None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return {
        "core": core,
        "seconds": seconds,
        "wakeups": wakeups,
        "gap_ms": gap_ms,
        "gaps": len(gaps),
        "longest_ms": round(max(gaps), 1) if gaps else 0.0,
        "frozen_ms": round(sum(gaps), 1),
        "steal_s": (steal_after - steal_before) / tick if steal_before is not None and steal_after is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seconds", type=float, nargs="?", default=5.0)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds, args.gap_ms)))


if __name__ == "__main__":
    main()
