"""The benchmark suite: our server (``chat-server run``, the full path) against a reference
Socket.IO server on Node.js, driven by one load generator, figures compared in one run.

    .venv/bin/python benchmarks/run.py                      # quick profile (make bench)
    .venv/bin/python benchmarks/run.py --profile full       # make bench-full / BENCH_PROFILE=full
    .venv/bin/python benchmarks/run.py --only fanout,history

Scenarios (sizes per profile in PROFILES):
  pipeline     content pipeline per message (sanitise + spam + profanity + HTML), in process,
               next to better_profanity's censor() alone (benchmarks/pipeline_bench.py)
  connections  connects/s with JWT verification; server RSS per idle connection (connected,
               then also joined to a room)
  fanout       one room of N clients, stepped message rates: server CPU µs per delivery,
               send-to-receive p50/p99, losses, the highest clean rate
  ingest       many rooms and senders: acknowledged (and, for ours, persisted) messages/s and
               ack p50/p99 at stepped rates
  history      REST history pages of 50 at shallow and deep positions of a bulk-loaded room:
               keyset (before_seq) against numbered pages (OFFSET)
  multinode    our fan-out with Redis: two nodes (clients split) against one node

Our server runs as ``chat-server run`` with JWT auth, moderation on (spam and profanity
filters on; only RATE_LIMIT_MAX_MESSAGES is raised, and the load's text is unique per
message so the duplicate rules never trip), PostgreSQL via DATABASE_URL (a database of its
own, created here), Redis only in the multinode scenario.  The reference is
benchmarks/reference/server.js (socket.io 4 + jsonwebtoken).  Servers are pinned to core 0
and the load generator (benchmarks/loadgen/loadgen.mjs) to core 1 with taskset.  Server CPU
is psutil's user+system time of the server process between two phase marks the generator
sends (it waits for the driver at each), RSS is psutil's.

Prints one table (ours, reference, ours/reference, target, pass/miss) and writes
benchmarks/results/<timestamp>.json plus <timestamp>-*.png plots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from benchmarks.host_freezes import machine_cpu  # noqa: E402  (the host's CPU accounting, shared with the freeze probe)

RESULTS = BENCH / "results"
LOADGEN = BENCH / "loadgen" / "loadgen.mjs"
REFERENCE = BENCH / "reference" / "server.js"

# -- profiles -----------------------------------------------------------------------------------
# Rates are messages per second offered into the room (fanout, multinode) or in total
# (ingest); steps run in order and stop after the first step past saturation (loss or p99
# over the limit) once every rate the table needs has run.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "pipeline": {"size": 1200, "reference_every": 4},
        "connections": {"clients": 1000, "concurrency": 100, "idle_room_size": 50},
        "fanout": {"clients": 1000, "senders": 10, "rates": [10, 25, 50, 100, 200, 400], "step_s": 5, "drain_s": 5,
                   "cpu_rate": 50, "fixed_rate": 100},
        "ingest": {"rooms": 100, "clients_per_room": 2, "rates": [500, 1000, 2500, 5000, 7500, 10000], "step_s": 5,
                   "drain_s": 5, "target_rate": 5000, "few_rooms": 3},
        "history": {"rows": 100_000, "requests": 300, "max_s": 8.0, "warmup": 20},
        # A big room, so that fan-out (what more nodes share) and not the room's send path
        # (one row lock per room, whatever the number of nodes) is what saturates.
        "multinode": {"clients": 2000, "senders": 10, "rates": [10, 20, 40, 80, 160], "step_s": 5, "drain_s": 5, "cpu_rate": 40},
    },
    "full": {
        "pipeline": {"size": 2400, "reference_every": 2},
        "connections": {"clients": 5000, "concurrency": 100, "idle_room_size": 50},
        "fanout": {"clients": 5000, "senders": 20, "rates": [2, 5, 10, 20, 50, 100], "step_s": 10, "drain_s": 10,
                   "cpu_rate": 10, "fixed_rate": 20},
        "fanout_1000": {"clients": 1000, "senders": 10, "rates": [10, 25, 50, 100, 150, 200, 300, 400], "step_s": 10,
                        "drain_s": 5, "cpu_rate": 50, "fixed_rate": 100},
        "ingest": {"rooms": 250, "clients_per_room": 2, "rates": [1000, 2500, 5000, 7500, 10000, 15000], "step_s": 10,
                   "drain_s": 5, "target_rate": 5000, "few_rooms": 3},
        "history": {"rows": 1_000_000, "requests": 1000, "max_s": 20.0, "warmup": 50},
        "multinode": {"clients": 4000, "senders": 20, "rates": [5, 10, 20, 40, 80, 120], "step_s": 10, "drain_s": 5, "cpu_rate": 20},
    },
    # A few seconds per scenario: checks that the suite works end to end, measures nothing.
    "smoke": {
        "pipeline": {"size": 200, "reference_every": 10},
        "connections": {"clients": 100, "concurrency": 50, "idle_room_size": 50},
        "fanout": {"clients": 100, "senders": 5, "rates": [10, 50], "step_s": 2, "drain_s": 3, "cpu_rate": 10, "fixed_rate": 50},
        "ingest": {"rooms": 10, "clients_per_room": 2, "rates": [100, 500], "step_s": 2, "drain_s": 3, "target_rate": 500,
                   "few_rooms": 1},
        "history": {"rows": 5_000, "requests": 50, "max_s": 2.0, "warmup": 5},
        "multinode": {"clients": 100, "senders": 5, "rates": [10, 50], "step_s": 2, "drain_s": 3, "cpu_rate": 50},
    },
}
BENCH_DATABASES = ("chat_bench", "chat_bench_history")
ALL_SCENARIOS = ["pipeline", "connections", "fanout", "ingest", "history", "multinode"]

# Latency limits of "clean" steps and of the early stop.
CLEAN_P99_MS = 100.0
STOP_P99_MS = 2000.0
STOP_LOSS = 0.05
GEN_SATURATED = 0.85  # generator CPU (fraction of its core) above which a step is flagged
SERVER_SATURATED = 0.9  # servers' CPU on one core above which their cost per delivery is not a cost figure
WARMUP_S = 2  # an unreported step at the first rate before the measured ones
OTHER_BUSY = 0.25  # cores used by unmeasured processes/kernel above which a run is flagged as disturbed
STEAL_NOTED = 0.05  # cores of steal time (a shared host) above which the table says so
HOST_PROBE_S = {"quick": 10.0, "full": 20.0, "smoke": 1.0}  # benchmarks/host_freezes.py on each core, before the scenarios


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


# -- processes -----------------------------------------------------------------------------------
class Server:
    """One server process (ours or the reference), pinned with taskset."""

    def __init__(self, ctx: Context, name: str, kind: str, port: int, cores: str, env: dict[str, str]) -> None:
        self.ctx, self.name, self.kind, self.port, self.cores = ctx, name, kind, port, cores
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: Any = None
        self.log_path = ctx.logs / f"{name}.log"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        import psutil

        if self.kind == "ours":
            argv = [*self.ctx.chat_server, "run", "--host", "127.0.0.1", "--port", str(self.port)]
            ready = f"{self.http_url}/readyz"
        else:
            argv = [self.ctx.node, str(REFERENCE)]
            ready = f"{self.http_url}/socket.io/?EIO=4&transport=polling"
        env = {**os.environ, **self.env}
        for var in ("REDIS_URL", "REDIS_HOST", "DATABASE_URL") if self.kind == "ours" else ():
            if var not in self.env:
                env.pop(var, None)
        logf = open(self.log_path, "ab")
        # cwd outside the repository: a developer's .env must not change the configuration.
        self.proc = subprocess.Popen([*self.ctx.pin(self.cores), *argv], env=env, cwd=self.ctx.workdir, stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.ps = psutil.Process(self.proc.pid)  # taskset execs the server: same pid
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} not ready after 90 s; see {self.log_path}")
        self.ctx.running.append(self)
        log(f"{self.name} ({self.kind}) ready on :{self.port}, cores {self.cores}, pid {self.proc.pid}")
        return self

    def scrape(self) -> dict[str, Any]:
        """What the steps read from our server's /metrics: ``writes`` (``chat_fanout_writes_total``,
        transport writes of the fast path) and ``batch_le`` (``chat_message_batch_seconds``:
        insert batches by upper bound of their commit round trip, cumulative).  NaN and empty
        for the reference or without metrics."""
        out: dict[str, Any] = {"writes": math.nan, "batch_le": {}}
        if self.kind != "ours":
            return out
        try:
            with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=2) as response:
                text = response.read().decode()
        except Exception:
            return out
        for line in text.splitlines():
            if line.startswith("chat_fanout_writes_total "):
                out["writes"] = float(line.split()[1])
            elif line.startswith('chat_message_batch_seconds_bucket{le="'):
                le = line.split('"')[1]
                out["batch_le"][math.inf if le == "+Inf" else float(le)] = float(line.split()[-1])
        return out

    def sample(self) -> dict[str, Any]:
        scraped = self.scrape()
        try:
            t = self.ps.cpu_times()
            user = t.user + getattr(t, "children_user", 0.0)
            system = t.system + getattr(t, "children_system", 0.0)
            for child in self.ps.children(recursive=True):
                with contextlib.suppress(Exception):
                    ct = child.cpu_times()
                    user += ct.user
                    system += ct.system
            return {"cpu_s": user + system, "cpu_system_s": system, "rss": float(self.ps.memory_info().rss), **scraped}
        except Exception:
            return {"cpu_s": math.nan, "cpu_system_s": math.nan, "rss": math.nan, **scraped}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with contextlib.suppress(ValueError):
            self.ctx.running.remove(self)


def process_cpu(names: tuple[str, ...]) -> float:
    """user+system seconds of every process with one of these names (redis-server)."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name"]):
        with contextlib.suppress(Exception):
            if p.info["name"] and p.info["name"].startswith(names):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (name, user+system seconds) of every process, to name what else was busy."""
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        with contextlib.suppress(Exception):
            t = p.info["cpu_times"]
            if t is not None:
                out[p.pid] = (p.info["name"] or "?", t.user + t.system)
    return out


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile_name: str = args.profile
        self.profile = PROFILES[args.profile]
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_id = secrets.token_hex(3)
        self.secret = secrets.token_urlsafe(48)
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.logs = RESULTS / f"{self.stamp}-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.workdir = self.logs
        self.running: list[Server] = []
        self.node = shutil.which("node") or "node"
        exe = Path(sys.executable).parent / "chat-server"
        self.chat_server = [str(exe)] if exe.exists() else [sys.executable, "-m", "chat_server"]
        self.admin_url = args.database_url
        self.redis_url = args.redis_url
        self.cores = os.cpu_count() or 1
        self.server_core, self.load_core = ("0", "1") if self.cores >= 2 else ("0", "0")
        self._pinned_backends: set[int] = set()
        self._pg: Any = None
        self.db_name = "chat_bench"
        self.db_url = with_database(self.admin_url, self.db_name)

    def pin(self, cores: str | None) -> list[str]:
        if not cores or not shutil.which("taskset"):
            return []
        return ["taskset", "-c", cores]

    def ours(self, name: str, *, cores: str | None = None, database_url: str | None = None, redis: bool = False,
             extra: dict[str, str] | None = None) -> Server:
        env = {
            "JWT_SECRET": self.secret,
            "DATABASE_URL": database_url or self.db_url,
            "APP_ENV": "production",
            "LOG_LEVEL": "WARNING",
            # The load sends far more than a person would; everything else stays default
            # (moderation, profanity and spam detection on).
            "RATE_LIMIT_MAX_MESSAGES": "100000000",
            "RATE_LIMIT_WINDOW_MS": "60000",
        }
        if redis:
            env["REDIS_URL"] = self.redis_url
            env["REDIS_PREFIX"] = f"chatbench{self.run_id}"
        env.update(extra or {})
        return Server(self, name, "ours", free_port(), cores or self.server_core, env).start()

    def reference(self, name: str) -> Server:
        port = free_port()
        return Server(self, name, "ref", port, self.server_core, {"JWT_SECRET": self.secret, "PORT": str(port)}).start()

    def stop_all(self) -> None:
        for server in list(reversed(self.running)):
            with contextlib.suppress(Exception):
                server.stop()

    # -- the load generator ---------------------------------------------------------------
    def loadgen(self, config: dict[str, Any], servers: list[Server], *, label: str, cores: str | None = None,
                timeout_s: float = 900) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run the generator; sample the servers at each of its sync marks."""
        config = {"secret": self.secret, "tag": f"b{self.run_id}", "userPrefix": f"{label}_{self.run_id}_", **config}
        cmd = [*self.pin(cores or self.load_core), self.node, str(LOADGEN), json.dumps(config)]
        errf = open(self.logs / f"loadgen-{label}.log", "ab")
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, text=True, bufsize=1)
        errf.close()
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        syncs: list[dict[str, Any]] = []
        result: dict[str, Any] | None = None
        error = None
        unreadable: list[str] = []  # lines that were not JSON: named if no result comes
        try:
            assert proc.stdout is not None and proc.stdin is not None
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    unreadable.append(f"{len(line)} characters: {line[:120]!r}")
                    continue
                kind = msg.get("type")
                if kind == "sync":
                    syncs.append({**msg, **self.sample(servers), "generator_pid": proc.pid})
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                elif kind == "log":
                    log(f"  {label}: {msg['msg']}")
                elif kind == "result":
                    result = msg
                elif kind == "error":
                    error = msg.get("error")
            proc.wait(timeout=30)
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
        if result is None:
            # The exit code tells a crash (1), a signal (negative: -9 is the kernel's OOM
            # killer or our timeout) and an exit with nothing left to do (0, 13) apart.
            unread = f"; {len(unreadable)} line(s) not JSON, the last of {unreadable[-1]}" if unreadable else ""
            raise RuntimeError(f"load generator failed ({label}): {error or 'no result'} (exit code {proc.returncode}{unread}); "
                               f"see {self.logs}")
        return result, syncs

    def sample(self, servers: list[Server]) -> dict[str, Any]:
        busy, steal = machine_cpu()
        return {"t": time.monotonic(), "servers": [s.sample() for s in servers],
                "postgres": self.postgres_cpu(), "wal_bytes": self.wal_position(), "redis_cpu_s": process_cpu(("redis-server",)),
                "machine": busy, "steal": steal, "processes": all_process_cpu()}

    def wal_position(self) -> float | None:
        """Bytes PostgreSQL has written to its WAL so far (all databases: during a step, the
        bench databases' writes are nearly all of it), None when it cannot be read."""
        try:
            with self._admin().cursor() as cur:
                cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
                return float(cur.fetchone()[0])
        except Exception:
            return None

    def _admin(self) -> Any:
        """The harness's own connection to PostgreSQL (opened again when it was lost)."""
        import psycopg2

        if self._pg is None or self._pg.closed:
            self._pg = psycopg2.connect(self.admin_url)
            self._pg.autocommit = True
        return self._pg

    def postgres_cpu(self) -> dict[int, float]:
        """CPU seconds of each PostgreSQL backend serving the bench databases (their pids
        from pg_stat_activity), so other users of the same PostgreSQL do not count.

        Those backends are also pinned to the load generator's core (once each, at the
        first sample that sees them): the server's core is the server's alone, as it is for
        the reference, instead of the scheduler moving a busy backend onto it now and then
        (each time a stall of several milliseconds in the server's event loop)."""
        import psutil

        out: dict[int, float] = {}
        try:
            with self._admin().cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", (list(BENCH_DATABASES),))
                pids = [r[0] for r in cur.fetchall()]
        except Exception:
            return out
        if self.load_core != self.server_core:
            for pid in pids:
                if pid not in self._pinned_backends:
                    self._pinned_backends.add(pid)
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(pid, {int(self.load_core)})
        for pid in pids:
            with contextlib.suppress(Exception):
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
        return out


# -- databases ------------------------------------------------------------------------------------
def admin_exec(admin_url: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def admin_fetch_one(admin_url: str, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The first row of one query on the admin connection (None without rows)."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cast(tuple[Any, ...] | None, cur.fetchone())
    finally:
        conn.close()


def database_exists(admin_url: str, name: str) -> bool:
    return admin_fetch_one(admin_url, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) is not None


def migrate(ctx: Context, database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": ctx.secret, "LOG_LEVEL": "WARNING"}
    subprocess.run([*ctx.chat_server, "migrate"], env=env, cwd=ctx.workdir, check=True, stdout=subprocess.DEVNULL)


# -- step bookkeeping -----------------------------------------------------------------------------
def attach_cpu(steps: list[dict[str, Any]], syncs: list[dict[str, Any]], servers: list[Server],
               flushes: DiskFlushProbe | None = None) -> None:
    """Add server CPU and RSS between each step's begin and end marks to the step (and what
    the database's commits and the disk's flushes took meanwhile)."""
    begins = [s for s in syncs if s["name"] == "step_begin"]
    ends = [s for s in syncs if s["name"] == "step_end"]
    for step, b, e in zip(steps, begins, ends, strict=False):
        wall = e["t"] - b["t"]
        per = []
        for i, server in enumerate(servers):
            cpu = e["servers"][i]["cpu_s"] - b["servers"][i]["cpu_s"]
            system = e["servers"][i].get("cpu_system_s", math.nan) - b["servers"][i].get("cpu_system_s", math.nan)
            per.append({"name": server.name, "core": server.cores, "cpu_s": cpu, "cpu_system_s": system, "cpu_util": cpu / wall if wall > 0 else None,
                        "rss_mb": e["servers"][i]["rss"] / 2**20})
        cpu_total = sum(p["cpu_s"] for p in per)
        step["server"] = per
        step["server_cpu_s"] = cpu_total
        step["server_wall_s"] = wall
        # Backends present at the end: their CPU since the start (new ones: all of it).
        step["postgres_cpu_s"] = sum(cpu - b["postgres"].get(pid, 0.0) for pid, cpu in e["postgres"].items())
        step["redis_cpu_s"] = e["redis_cpu_s"] - b["redis_cpu_s"]
        gen = step["generator"]["cpu_user_s"] + step["generator"]["cpu_system_s"]
        busy = e["machine"].get("cpu", math.nan) - b["machine"].get("cpu", math.nan)
        step["machine_busy_s"] = busy
        # Everything else that ran meanwhile (other processes, unattributed kernel work),
        # in cores: should stay small for the figures to mean what they say.
        step["other_cpu_cores"] = (busy - cpu_total - gen - step["postgres_cpu_s"] - step["redis_cpu_s"]) / wall if wall > 0 else None
        # What a shared host took from these cores meanwhile (steal time): the step ran
        # slower than on a machine of its own, for both servers alike only if alike.
        steal = e.get("steal", {}).get("cpu", math.nan) - b.get("steal", {}).get("cpu", math.nan)
        step["steal_cores"] = steal / wall if wall > 0 and not math.isnan(steal) else None
        step["cores_busy"] = {k: (e["machine"][k] - b["machine"][k]) / wall for k in e["machine"] if k != "cpu" and k in b["machine"]}
        # The busiest processes that are not part of the measurement (another test run on
        # the same machine, say): named so a disturbed step can be recognised.
        measured = {s.proc.pid for s in servers if s.proc is not None} | set(e["postgres"]) | {e.get("generator_pid"), os.getpid()}
        others = []
        for pid, (name, cpu) in e.get("processes", {}).items():
            if pid in measured or name.startswith("redis-server"):
                continue
            used = cpu - b.get("processes", {}).get(pid, (name, 0.0))[1]
            if wall > 0 and used / wall >= 0.02:
                others.append({"pid": pid, "name": name, "cores": round(used / wall, 3)})
        step["other_processes"] = sorted(others, key=lambda o: -o["cores"])[:5]
        step["cpu_us_per_delivery"] = cpu_total * 1e6 / step["delivered"] if step["delivered"] else None
        # The kernel's share (system time: mostly the send path of every delivery).
        step["system_us_per_delivery"] = sum(p["cpu_system_s"] for p in per) * 1e6 / step["delivered"] if step["delivered"] else None
        # Our transport writes (acks and pings included) per delivery: below 1, frames shared
        # writes (write batching, room_stats riding along); NaN for the reference.
        writes = sum(e["servers"][i].get("writes", math.nan) - b["servers"][i].get("writes", math.nan) for i in range(len(servers)))
        step["writes_per_delivery"] = writes / step["delivered"] if step["delivered"] and not math.isnan(writes) else None
        step["cpu_us_per_message"] = cpu_total * 1e6 / step["acked"] if step["acked"] else None
        step["postgres_cpu_us_per_message"] = step["postgres_cpu_s"] * 1e6 / step["acked"] if step["acked"] else None
        wal_begin, wal_end = b.get("wal_bytes"), e.get("wal_bytes")
        step["wal_bytes_per_message"] = ((wal_end - wal_begin) / step["acked"]
                                         if step["acked"] and wal_begin is not None and wal_end is not None else None)
        step["generator_saturated"] = step["generator"]["cpu_util"] > GEN_SATURATED
        step["commit_ms"] = batch_commit_ms([(b["servers"][i].get("batch_le", {}), e["servers"][i].get("batch_le", {}))
                                             for i in range(len(servers))])
        if flushes is not None:
            step["disk_flush_ms"] = flushes.summary(b["t"], e["t"])


def batch_commit_ms(pairs: list[tuple[dict[float, float], dict[float, float]]]) -> dict[str, Any] | None:
    """p50/p99 of our insert batches' commit round trip during a step, from the histogram's
    buckets at its begin and end (summed over servers), interpolated within a bucket as
    Prometheus's ``histogram_quantile`` does.  None without batches (the reference)."""
    counts: dict[float, float] = {}
    for before, after in pairs:
        for le, n in after.items():
            counts[le] = counts.get(le, 0.0) + n - before.get(le, 0.0)
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None

    def quantile(q: float) -> float:
        rank, lower, below = q * total, 0.0, 0.0
        for le in bounds:
            if counts[le] >= rank:
                if math.isinf(le):
                    return lower * 1000  # beyond the last finite bound: that bound
                share = (rank - below) / (counts[le] - below) if counts[le] > below else 1.0
                return (lower + (le - lower) * share) * 1000
            lower, below = le, counts[le]
        return lower * 1000

    return {"batches": int(total), "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


class DiskFlushProbe:
    """What a commit's flush costs on the disk PostgreSQL writes to, measured beside it: an 8 kB
    write and ``fdatasync`` every 10 ms on the same file system (a file in the results
    folder, when that is the data directory's device), timed with the step marks' clock.
    A sender's ack waits for its batch's commit, and the commit for a flush of the WAL:
    this shows how much of an ack latency tail is the disk's."""

    PERIOD_S = 0.01

    def __init__(self, admin_url: str, folder: Path) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.path: Path | None = None
        self.why_not = ""
        try:
            row = admin_fetch_one(admin_url, "SHOW data_directory")
            assert row is not None
            if os.stat(row[0]).st_dev == os.stat(folder).st_dev:
                self.path = folder / "disk-flush-probe.bin"
            else:
                self.why_not = "the results folder is on another device than PostgreSQL's data"
        except Exception as exc:  # a remote or locked-down PostgreSQL
            self.why_not = f"PostgreSQL's data directory is not readable here ({type(exc).__name__})"

    def __enter__(self) -> DiskFlushProbe:
        if self.path is not None:
            self._thread = threading.Thread(target=self._run, name="disk-flush-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _run(self) -> None:
        assert self.path is not None
        block = os.urandom(8192)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while not self._stop.wait(self.PERIOD_S):
                started = time.monotonic()
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)
                self.samples.append((started, time.monotonic() - started))
        finally:
            os.close(fd)

    def summary(self, begin: float, end: float) -> dict[str, Any] | None:
        took = sorted(d for t, d in self.samples if begin <= t <= end)
        if not took:
            return None
        return {"count": len(took), "p50_ms": cast(float, pct(took, 50)) * 1000, "p99_ms": cast(float, pct(took, 99)) * 1000,
                "max_ms": took[-1] * 1000, "over_5ms": sum(1 for d in took if d > 0.005)}



def clean(step: dict[str, Any], p99_limit: float = CLEAN_P99_MS) -> bool:
    p99 = step["latency"]["p99_ms"]
    return (step["lost"] == 0 and not step["ack_errors"] and not step.get("duplicates") and not step.get("wrong_room")
            and p99 is not None and p99 < p99_limit)


def cpu_comparable(step: dict[str, Any]) -> bool:
    """Whether a step's CPU per delivery is a cost figure: every delivery made, no error,
    the servers' cores and the generator below saturation (servers sharing a core add up)."""
    per_core: dict[str, float] = {}
    for node in step["server"]:
        per_core[node["core"]] = per_core.get(node["core"], 0.0) + (node["cpu_util"] or 0.0)
    return (step["lost"] == 0 and not step["ack_errors"] and not step.get("duplicates") and not step.get("wrong_room")
            and not step["generator_saturated"] and max(per_core.values(), default=0.0) < SERVER_SATURATED)


def step_at(steps: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((s for s in steps if s["rate"] == rate), None)


# -- scenarios ------------------------------------------------------------------------------------
def scenario_pipeline(ctx: Context) -> dict[str, Any]:
    p = ctx.profile["pipeline"]
    cmd = [*ctx.pin(ctx.server_core), sys.executable, str(BENCH / "pipeline_bench.py"), "--json",
           "--size", str(p["size"]), "--reference-every", str(p["reference_every"])]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scenario_connections(ctx: Context) -> dict[str, Any]:
    p = ctx.profile["connections"]
    res: dict[str, Any] = {}
    for kind in ("ours", "ref"):
        server = ctx.ours("ours-connections") if kind == "ours" else ctx.reference("ref-connections")
        try:
            cfg = {"mode": "connect", "urls": [server.ws_url], "clients": p["clients"], "concurrency": p["concurrency"],
                   "idle_room_size": p["idle_room_size"], "room_prefix": f"idle_{ctx.run_id}_", "warmup": 50}
            result, syncs = ctx.loadgen(cfg, [server], label=f"connections-{kind}")
        finally:
            server.stop()
        marks = {s["name"]: s for s in syncs}
        before, connected, joined = marks["before_connect"], marks["connected"], marks.get("joined")
        n = result["connect"]["connected"]
        rss0 = before["servers"][0]["rss"]
        rss1 = connected["servers"][0]["rss"]
        out = {
            **result,
            "rss_baseline_mb": rss0 / 2**20,
            "rss_connected_mb": rss1 / 2**20,
            "rss_per_connection_kib": (rss1 - rss0) / n / 1024 if n else None,
            "cpu_us_per_connect": (connected["servers"][0]["cpu_s"] - before["servers"][0]["cpu_s"]) * 1e6 / n if n else None,
        }
        if joined:
            rss2 = joined["servers"][0]["rss"]
            out["rss_joined_mb"] = rss2 / 2**20
            out["rss_per_joined_connection_kib"] = (rss2 - rss0) / n / 1024 if n else None
        res[kind] = out
    return res


def _fanout_run(ctx: Context, p: dict[str, Any], key: str) -> dict[str, Any]:
    res: dict[str, Any] = {"clients": p["clients"]}
    for kind in ("ours", "ref"):
        server = ctx.ours(f"ours-{key}") if kind == "ours" else ctx.reference(f"ref-{key}")
        try:
            cfg = {"mode": "fanout", "urls": [server.ws_url], "clients": p["clients"], "senders": p["senders"],
                   "room": f"{key}_{ctx.run_id}", "steps": [{"rate": r, "duration_s": p["step_s"]} for r in p["rates"]],
                   "drain_s": p["drain_s"], "stop_p99_ms": STOP_P99_MS, "stop_loss": STOP_LOSS,
                   "min_stop_rate": max(p["cpu_rate"], p["fixed_rate"]), "concurrency": 100, "join_concurrency": 50,
                   "warmup_s": WARMUP_S}
            result, syncs = ctx.loadgen(cfg, [server], label=f"{key}-{kind}")
        finally:
            server.stop()
        attach_cpu(result["steps"], syncs, [server])
        res[kind] = summarise_fanout(result, p)
    return res


def summarise_fanout(result: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    steps = result["steps"]
    clean_steps = [s for s in steps if clean(s)]
    best = max(clean_steps, key=lambda s: s["rate"]) if clean_steps else None
    top = max(s["rate"] for s in steps) if steps else None
    cpu_step = step_at(steps, p["cpu_rate"])
    fixed = step_at(steps, p["fixed_rate"])
    return {
        **result,
        "best_clean_rate": best["rate"] if best else 0,
        "best_clean_is_top_step": bool(best and best["rate"] == top and best["rate"] == max(p["rates"])),
        "best_clean_deliveries_per_s": best["deliveries_per_s_window"] if best else 0,
        "best_clean_cpu_us_per_delivery": best["cpu_us_per_delivery"] if best else None,
        "best_clean_generator_saturated": bool(best and best["generator_saturated"]),
        "cpu_us_per_delivery": cpu_step["cpu_us_per_delivery"] if cpu_step else None,
        "system_us_per_delivery": cpu_step.get("system_us_per_delivery") if cpu_step else None,
        "writes_per_delivery": cpu_step.get("writes_per_delivery") if cpu_step else None,
        "cpu_rate": p["cpu_rate"],
        "fixed_rate": p["fixed_rate"],
        "fixed": fixed,
        "max_deliveries_per_s": max((s["deliveries_per_s_window"] for s in steps), default=0),
        "generator_max_cpu": max((s["generator"]["cpu_util"] for s in steps), default=0),
    }


def scenario_fanout(ctx: Context) -> dict[str, Any]:
    res = {"main": _fanout_run(ctx, ctx.profile["fanout"], "fanout")}
    if "fanout_1000" in ctx.profile:  # full profile: the 1,000-client target too
        res["fanout_1000"] = _fanout_run(ctx, ctx.profile["fanout_1000"], "fanout1000")
    return res


def _ingest_pass(ctx: Context, server: Server, p: dict[str, Any], *, rooms: int, rates: list[float], label: str) -> dict[str, Any]:
    """One run of the generator's ingest mode against ``server``: its steps, with CPU,
    commits and disk flushes attached."""
    cfg = {"mode": "ingest", "urls": [server.ws_url], "rooms": rooms, "clients_per_room": p["clients_per_room"],
           "room_prefix": f"{label}_{ctx.run_id}_", "steps": [{"rate": r, "duration_s": p["step_s"]} for r in rates],
           "drain_s": p["drain_s"], "stop_p99_ms": STOP_P99_MS, "stop_loss": STOP_LOSS,
           "min_stop_rate": p["target_rate"], "concurrency": 100, "warmup_s": WARMUP_S}
    with DiskFlushProbe(ctx.admin_url, ctx.logs) as flushes:
        result, syncs = ctx.loadgen(cfg, [server], label=label)
    if flushes.why_not:
        log(f"  {label}: disk flushes not measured: {flushes.why_not}")
    attach_cpu(result["steps"], syncs, [server], flushes)
    return result


def scenario_ingest(ctx: Context) -> dict[str, Any]:
    p = ctx.profile["ingest"]
    res: dict[str, Any] = {}
    for kind in ("ours", "ref"):
        server = ctx.ours("ours-ingest") if kind == "ours" else ctx.reference("ref-ingest")
        try:
            result = _ingest_pass(ctx, server, p, rooms=p["rooms"], rates=p["rates"], label=f"ingest-{kind}")
            # The target rate from a few clients, each sending fast (hundreds a second): a
            # client is not held to one message per commit (docs/protocol.md §6).
            few = _ingest_pass(ctx, server, p, rooms=p["few_rooms"], rates=[p["target_rate"]], label=f"ingest-few-{kind}")
        finally:
            server.stop()
        steps = result["steps"]
        ok = [s for s in steps if s["acked"] >= 0.98 * s["sent"] and not s["ack_errors"]
              and s["acked_per_s"] >= 0.95 * s["rate"] and (s["ack_latency"]["p99_ms"] or 1e9) <= 20.0]
        best = max(ok, key=lambda s: s["rate"]) if ok else None
        res[kind] = {
            **result,
            "best_rate_p99_20ms": best["rate"] if best else 0,
            "best_acked_per_s_p99_20ms": best["acked_per_s"] if best else 0,
            "max_acked_per_s": max((s["acked_per_s"] for s in steps if s["acked"] >= 0.98 * s["sent"]), default=0),
            "target": step_at(steps, p["target_rate"]),
            "target_rate": p["target_rate"],
            "generator_max_cpu": max((s["generator"]["cpu_util"] for s in steps), default=0),
            "few_senders": {"clients": p["few_rooms"] * p["clients_per_room"], "target": step_at(few["steps"], p["target_rate"])},
        }
    return res


HISTORY_ROOM = "bench_history"


def load_history(ctx: Context, rows: int) -> str:
    """A database with one public room of ``rows`` messages (reused when it already has
    exactly that), loaded with generate_series; the room's last_seq and message_count
    match the rows."""
    import psycopg2

    name = "chat_bench_history"
    url = with_database(ctx.admin_url, name)
    if not database_exists(ctx.admin_url, name):
        admin_exec(ctx.admin_url, f'CREATE DATABASE "{name}"')
    migrate(ctx, url)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT last_seq FROM rooms WHERE id = %s", (HISTORY_ROOM,))
        row = cur.fetchone()
        count = None
        if row and row[0] == rows:
            cur.execute("SELECT count(*) FROM messages WHERE room_id = %s", (HISTORY_ROOM,))
            count = cur.fetchone()[0]
        if count == rows:
            log(f"history: reusing {rows} messages in {name}")
        else:
            t0 = time.monotonic()
            cur.execute("TRUNCATE rooms, messages CASCADE")
            cur.execute("INSERT INTO rooms (id, name, type, last_seq, message_count) VALUES (%s, 'Bench history', 'public', %s, %s)",
                        (HISTORY_ROOM, rows, rows))
            cur.execute(
                """INSERT INTO messages (message_id, room_id, seq, user_id, username, type, content, content_html, created_at)
                   SELECT md5('bench-history-' || g), %s, g, 'user' || (g %% 500), 'User ' || (g %% 500), 'text',
                          'message number ' || g || ' of the bench history room, some words to make it chat sized',
                          'message number ' || g || ' of the bench history room, some words to make it chat sized',
                          now() - make_interval(secs => %s - g)
                   FROM generate_series(1, %s) AS g""",
                (HISTORY_ROOM, rows, rows))
            cur.execute("VACUUM ANALYZE messages")
            cur.execute("VACUUM ANALYZE rooms")
            log(f"history: loaded {rows} messages in {time.monotonic() - t0:.1f} s")
    conn.close()
    return url


def scenario_history(ctx: Context) -> dict[str, Any]:
    import aiohttp
    import jwt

    p = ctx.profile["history"]
    rows = p["rows"]
    url = load_history(ctx, rows)
    server = ctx.ours("ours-history", database_url=url)
    now = int(time.time())
    token = jwt.encode({"sub": "bench_reader", "name": "Bench reader", "role": "user", "iat": now, "exp": now + 3600},
                       ctx.secret, algorithm="HS256")
    limit = 50
    last_page = rows // limit
    rng = random.Random(7)
    positions: dict[str, Callable[[], tuple[str, int]]] = {
        # name -> (query, expected seq of the newest message in the page)
        "keyset_shallow": lambda: (lambda s: (f"before_seq={s}", s - 1))(rows - rng.randrange(0, 1000)),
        "keyset_deep": lambda: (lambda s: (f"before_seq={s}", s - 1))(limit + 1 + rng.randrange(0, 1000)),
        "page_shallow": lambda: (lambda n: (f"page={n}", rows - (n - 1) * limit))(1 + rng.randrange(0, 20)),
        "page_deep": lambda: (lambda n: (f"page={n}", rows - (n - 1) * limit))(last_page - rng.randrange(0, 20)),
    }

    async def measure() -> dict[str, Any]:
        out: dict[str, Any] = {}
        headers = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            base = f"{server.http_url}/api/rooms/{HISTORY_ROOM}/messages?limit={limit}&"
            for name, make in positions.items():
                lat: list[float] = []
                bad = 0
                t_end = None
                warm_until = time.monotonic() + 3.0
                for i in range(p["warmup"] + p["requests"]):
                    if i < p["warmup"] and time.monotonic() > warm_until:
                        continue  # slow positions: a few warm-up requests are enough
                    query, newest = make()
                    t0 = time.perf_counter()
                    async with session.get(base + query) as r:
                        body = await r.read()
                    dt = (time.perf_counter() - t0) * 1000
                    if i == p["warmup"]:
                        t_end = time.monotonic() + p["max_s"]
                    if i >= p["warmup"]:
                        lat.append(dt)
                        try:
                            data = json.loads(body)
                            msgs = data["messages"]
                            if r.status != 200 or len(msgs) != limit or msgs[-1]["seq"] != newest:
                                bad += 1
                        except Exception:
                            bad += 1
                        if t_end is not None and time.monotonic() > t_end:
                            break
                lat.sort()
                out[name] = {"requests": len(lat), "wrong_answers": bad, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                             "max_ms": lat[-1] if lat else None, "mean_ms": sum(lat) / len(lat) if lat else None}
                log(f"  history {name}: {len(lat)} requests, p50 {out[name]['p50_ms']:.2f} ms, p99 {out[name]['p99_ms']:.2f} ms"
                    + (f", {bad} wrong answers" if bad else ""))
        return out

    try:
        cpu0 = server.sample()["cpu_s"]
        t0 = time.monotonic()
        result = asyncio.run(measure())
        cpu = server.sample()["cpu_s"] - cpu0
        wall = time.monotonic() - t0
    finally:
        server.stop()
    offset = offset_reference(url, p, limit, {"page_shallow": positions["page_shallow"], "page_deep": positions["page_deep"]})
    return {"rows": rows, "limit": limit, "client": "aiohttp, one keep-alive connection, one request at a time",
            "positions": result, "offset_reference": offset, "server_cpu_util": cpu / wall if wall else None}


def offset_reference(url: str, p: dict[str, Any], limit: int, positions: dict[str, Callable[[], tuple[str, int]]]) -> dict[str, Any]:
    """The reference for numbered pages: the same pages read the usual way, ``ORDER BY seq
    DESC OFFSET (n-1)*limit LIMIT limit``, straight from PostgreSQL (no HTTP, no JSON: a
    lower bound on what an OFFSET-paging server answers in).  Our ``page=`` skips over
    hidden messages with an index instead (docs/protocol.md §6)."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    out: dict[str, Any] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT m.* FROM messages m LIMIT 0")
            seq_at = [d.name for d in cur.description].index("seq")
            for name, make in positions.items():
                lat: list[float] = []
                bad = 0
                t_end = time.monotonic() + p["max_s"]
                for i in range(2 + p["requests"]):
                    query, newest = make()
                    page = int(query.split("=", 1)[1])
                    t0 = time.perf_counter()
                    cur.execute("SELECT m.* FROM messages m WHERE m.room_id = %s AND m.deleted_at IS NULL "
                                "ORDER BY m.seq DESC OFFSET %s LIMIT %s", (HISTORY_ROOM, (page - 1) * limit, limit))
                    got = cur.fetchall()
                    dt = (time.perf_counter() - t0) * 1000
                    if i < 2:
                        continue  # warm-up
                    lat.append(dt)
                    if len(got) != limit or got[0][seq_at] != newest:
                        bad += 1
                    if time.monotonic() > t_end:
                        break
                lat.sort()
                out[name] = {"requests": len(lat), "wrong_answers": bad, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
                log(f"  history {name} reference (OFFSET, direct SQL): {len(lat)} queries, p50 {out[name]['p50_ms']:.2f} ms, "
                    f"p99 {out[name]['p99_ms']:.2f} ms" + (f", {bad} wrong answers" if bad else ""))
    finally:
        conn.close()
    return out


def pct(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def scenario_multinode(ctx: Context) -> dict[str, Any]:
    p = ctx.profile["multinode"]
    res: dict[str, Any] = {"clients": p["clients"]}
    layouts = {
        # one node: server on core 0, generator on core 1
        "one": {"nodes": [ctx.server_core], "generator": ctx.load_core},
        # two nodes: one per core; the generator is not pinned (it shares both cores)
        "two": {"nodes": [ctx.server_core, ctx.load_core], "generator": None},
        # two nodes sharing core 0, generator on core 1 (as for one node), below saturation
        # only: the CPU per delivery of a two-node cluster measured like one node's
        "two_shared": {"nodes": [ctx.server_core, ctx.server_core], "generator": ctx.load_core,
                       "rates": [r for r in p["rates"] if r <= p.get("cpu_rate", 40)]},
    }
    for layout, spec in layouts.items():
        servers = [ctx.ours(f"ours-multinode-{layout}-{i}", cores=c, redis=True) for i, c in enumerate(spec["nodes"])]
        try:
            cfg = {"mode": "fanout", "urls": [s.ws_url for s in servers], "clients": p["clients"], "senders": p["senders"],
                   "room": f"multi_{layout}_{ctx.run_id}",
                   "steps": [{"rate": r, "duration_s": p["step_s"]} for r in spec.get("rates", p["rates"])],
                   "drain_s": p["drain_s"], "stop_p99_ms": STOP_P99_MS, "stop_loss": STOP_LOSS, "min_stop_rate": 0,
                   "concurrency": 100, "join_concurrency": 50, "warmup_s": WARMUP_S}
            result, syncs = ctx.loadgen(cfg, servers, label=f"multinode-{layout}",
                                        cores=spec["generator"] if spec["generator"] else ("0,1" if ctx.cores >= 2 else "0"))
        finally:
            for s in servers:
                s.stop()
        attach_cpu(result["steps"], syncs, servers)
        steps = result["steps"]
        sat = max(steps, key=lambda s: s["deliveries_per_s_window"]) if steps else None
        capacity = None
        if sat:
            # Deliveries per second each node would make with a whole core: its deliveries
            # per CPU-second in the saturation step, summed over nodes.
            capacity = 0.0
            for node, per in enumerate(sat["server"]):
                delivered = sat["per_node_delivered"][node]
                if per["cpu_s"] > 0:
                    capacity += delivered / per["cpu_s"]
        clean_steps = [s for s in steps if clean(s)]
        res[layout] = {**result, "saturation_rate": sat["rate"] if sat else None,
                       "saturation_generator_saturated": bool(sat and sat["generator_saturated"]),
                       "saturation_deliveries_per_s": sat["deliveries_per_s_window"] if sat else 0,
                       "saturation_node_cpu_util": [p["cpu_util"] for p in sat["server"]] if sat else [],
                       "capacity_per_full_cores": capacity,
                       "best_clean_rate": max((s["rate"] for s in clean_steps), default=0),
                       "generator_max_cpu": max((s["generator"]["cpu_util"] for s in steps), default=0)}
    one, two = res["one"], res["two"]
    res["factor_raw"] = two["saturation_deliveries_per_s"] / one["saturation_deliveries_per_s"] if one["saturation_deliveries_per_s"] else None
    # CPU per delivery of the cluster at the same offered rate, both measured with the
    # servers on core 0 and the generator on core 1 ("two_shared"): two nodes with a core
    # each would deliver 2 x (one node's CPU per delivery / two nodes' CPU per delivery)
    # times as much, if CPU were what limits them (saturation_node_cpu_util says whether it
    # was).  The rate is fixed in advance, the scenario's cpu_rate, as for the fan-out CPU
    # row, as long as both layouts delivered everything there with neither the servers' core
    # nor the generator saturated (a cost per delivery does not depend on the latency
    # limit); else the highest rate where that holds; else, as before, the highest rate
    # both ran cleanly, else the lowest both ran.
    shared = res["two_shared"]
    common = sorted({s["rate"] for s in one["steps"]} & {s["rate"] for s in shared["steps"]})
    comparable = [r for r in common if cpu_comparable(step_at(one["steps"], r)) and cpu_comparable(step_at(shared["steps"], r))]  # type: ignore[arg-type]
    both_clean = [r for r in common if clean(step_at(one["steps"], r)) and clean(step_at(shared["steps"], r))]  # type: ignore[arg-type]
    if p.get("cpu_rate") in comparable:
        rate, res["cpu_compare_rule"] = p["cpu_rate"], "cpu_rate"
    elif comparable:
        rate, res["cpu_compare_rule"] = comparable[-1], "highest rate delivered in full, unsaturated"
    elif both_clean:
        rate, res["cpu_compare_rule"] = both_clean[-1], "highest clean rate"
    else:
        rate, res["cpu_compare_rule"] = (common[0] if common else None), "lowest rate"
    if rate is not None:
        c1 = step_at(one["steps"], rate)["cpu_us_per_delivery"]  # type: ignore[index]
        c2 = step_at(shared["steps"], rate)["cpu_us_per_delivery"]  # type: ignore[index]
        res["cpu_compare_rate"] = rate
        res["cpu_us_per_delivery"] = {"one": c1, "two": c2}
        res["factor_cpu_projected"] = 2 * c1 / c2 if c1 and c2 else None
    res["one_node_cpu_bound"] = bool(one["saturation_node_cpu_util"] and max(one["saturation_node_cpu_util"]) >= 0.9)
    cleanup_redis(ctx)
    return res


def iter_steps(node: Any) -> Any:
    """Every measured step anywhere in the results."""
    if isinstance(node, dict):
        if "steps" in node and isinstance(node["steps"], list):
            yield from (s for s in node["steps"] if isinstance(s, dict))
        for value in node.values():
            if isinstance(value, dict):
                yield from iter_steps(value)


def cleanup_redis(ctx: Context) -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(ctx.redis_url)
        keys = list(client.scan_iter(match=f"chatbench{ctx.run_id}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        client.close()


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "pipeline": scenario_pipeline,
    "connections": scenario_connections,
    "fanout": scenario_fanout,
    "ingest": scenario_ingest,
    "history": scenario_history,
    "multinode": scenario_multinode,
}


# -- the table --------------------------------------------------------------------------------------
def f(x: Any, digits: int = 1, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, str):
        return x
    if abs(x) >= 10000:
        return f"{x:,.0f}{unit}"
    return f"{x:.{digits}f}{unit}"


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def build_table(results: dict[str, Any]) -> list[list[str]]:
    sc = results["scenarios"]
    rows: list[list[str]] = []

    def add(metric: str, ours: str, ref: str = "-", rat: str = "-", target: str = "", ok: bool | None = None) -> None:
        rows.append([metric, ours, ref, rat, target, verdict(ok)])

    def gen_flag(step: dict[str, Any] | None) -> str:
        return " (gen!)" if step and step.get("generator_saturated") else ""

    fan = sc.get("fanout", {})
    for key in ("main", "fanout_1000"):
        run = fan.get(key) if isinstance(fan, dict) else None
        if not run or "ours" not in run:
            continue
        o, r, n = run["ours"], run["ref"], run["clients"]
        cpu_o, cpu_r = o["cpu_us_per_delivery"], r["cpu_us_per_delivery"]
        add(f"fan-out {n} clients: server CPU µs/delivery @ {o['cpu_rate']} msg/s", f(cpu_o, 2), f(cpu_r, 2), ratio(cpu_o, cpu_r),
            "<= 0.5x ref", (cpu_o / cpu_r <= 0.5) if cpu_o and cpu_r else None)
        sys_o, sys_r = o.get("system_us_per_delivery"), r.get("system_us_per_delivery")
        add("  of which kernel (system time)", f(sys_o, 2), f(sys_r, 2), ratio(sys_o, sys_r), "(info)")
        add("  transport writes per delivery (ours; acks and pings included)", f(o.get("writes_per_delivery"), 2), "n/a", "-", "(info)")
        def best(side: dict[str, Any]) -> str:
            if not side["best_clean_rate"]:
                return f"< {min(s['rate'] for s in side['steps'])} msg/s" if side["steps"] else "-"
            return (f"{side['best_clean_rate']}{'+' if side['best_clean_is_top_step'] else ''} msg/s"
                    + (" (gen!)" if side["best_clean_generator_saturated"] else ""))

        def util(side: dict[str, Any], rate: float) -> str:
            s = step_at(side["steps"], rate)
            return f"{s['server'][0]['cpu_util'] * 100:.0f}%" if s and s.get("server") else "not run"

        add(f"  server CPU use @ {o['cpu_rate']} / @ {o['fixed_rate']} msg/s", f"{util(o, o['cpu_rate'])} / {util(o, o['fixed_rate'])}",
            f"{util(r, r['cpu_rate'])} / {util(r, r['fixed_rate'])}", "-", "(info)")
        best_o, best_r = best(o), best(r)
        add(f"fan-out {n}: highest rate p99 < {CLEAN_P99_MS:.0f} ms, no loss", best_o, best_r,
            ratio(o["best_clean_rate"], r["best_clean_rate"]), "(info)")
        add(f"fan-out {n}: deliveries/s at that rate", f(o["best_clean_deliveries_per_s"], 0), f(r["best_clean_deliveries_per_s"], 0),
            ratio(o["best_clean_deliveries_per_s"], r["best_clean_deliveries_per_s"]), "(info)")
        add(f"fan-out {n}: server CPU µs/delivery at that rate", f(o["best_clean_cpu_us_per_delivery"], 2),
            f(r["best_clean_cpu_us_per_delivery"], 2), ratio(o["best_clean_cpu_us_per_delivery"], r["best_clean_cpu_us_per_delivery"]), "(info)")
        add(f"fan-out {n}: max deliveries/s (any step)", f(o["max_deliveries_per_s"], 0), f(r["max_deliveries_per_s"], 0),
            ratio(o["max_deliveries_per_s"], r["max_deliveries_per_s"]), "(info)")
        fo, fr = o["fixed"], r["fixed"]
        if fo or fr:
            def lat(s: dict[str, Any] | None) -> str:
                if not s:
                    return "not run"
                return f"{f(s['latency']['p50_ms'])} / {f(s['latency']['p99_ms'])} ms{gen_flag(s)}"

            def loss(s: dict[str, Any] | None) -> str:
                if not s:
                    return "not run"
                return (f"{s['lost']} of {s['expected_deliveries']}" + (f" +{sum(s['ack_errors'].values())} refused" if s["ack_errors"] else "")
                        + (f", {s['duplicates']} duplicated" if s.get("duplicates") else "")
                        + (f", {s['wrong_room']} misdelivered" if s.get("wrong_room") else ""))

            target_ok = None
            if n == 1000 and o["fixed_rate"] == 100:
                target_ok = bool(fo and fo["lost"] == 0 and not fo["ack_errors"] and (fo["latency"]["p99_ms"] or 1e9) <= 50)
            add(f"fan-out {n} @ {o['fixed_rate']} msg/s: p50 / p99", lat(fo), lat(fr),
                ratio(fo["latency"]["p99_ms"] if fo else None, fr["latency"]["p99_ms"] if fr else None) + " (p99)",
                "p99 <= 50 ms" if target_ok is not None else "(info)", target_ok)
            add(f"fan-out {n} @ {o['fixed_rate']} msg/s: deliveries lost", loss(fo), loss(fr), "-",
                "0" if target_ok is not None else "(info)",
                (bool(fo and fo["lost"] == 0 and not fo["ack_errors"] and not fo.get("duplicates") and not fo.get("wrong_room"))
                 if target_ok is not None else None))
        def loop(side: dict[str, Any]) -> str:
            worst = max((s["generator"]["loop_delay_p99_ms"] for s in side["steps"]), default=0)
            return f"{side['generator_max_cpu'] * 100:.0f}%, loop p99 {worst:.0f} ms"

        add(f"fan-out {n}: load generator CPU (max over steps)", loop(o), loop(r), "-", f"< {GEN_SATURATED * 100:.0f}% (valid)",
            max(o["generator_max_cpu"], r["generator_max_cpu"]) < GEN_SATURATED)

    con = sc.get("connections")
    if con and "ours" in con:
        o, r = con["ours"], con["ref"]
        co, cr = o["connect"]["connects_per_s"], r["connect"]["connects_per_s"]
        gen = max(o["connect"].get("generator_cpu_util", 0), r["connect"].get("generator_cpu_util", 0))
        add(f"connects/s with JWT ({o['connect']['attempted']} clients, {o['connect']['concurrency']} at a time)",
            f(co, 0) + (" (gen!)" if o["connect"].get("generator_cpu_util", 0) > GEN_SATURATED else ""),
            f(cr, 0) + (" (gen!)" if r["connect"].get("generator_cpu_util", 0) > GEN_SATURATED else ""), ratio(co, cr), ">= ref", co >= cr)
        add("load generator CPU while connecting", f(o["connect"].get("generator_cpu_util", 0) * 100, 0, "%"),
            f(r["connect"].get("generator_cpu_util", 0) * 100, 0, "%"), "-", f"< {GEN_SATURATED * 100:.0f}% (valid)", gen < GEN_SATURATED)
        add("connect latency p50 / p99", f"{f(o['connect']['latency']['p50_ms'])} / {f(o['connect']['latency']['p99_ms'])} ms",
            f"{f(r['connect']['latency']['p50_ms'])} / {f(r['connect']['latency']['p99_ms'])} ms", "-", "(info)")
        add("server CPU µs per connect", f(o["cpu_us_per_connect"], 0), f(r["cpu_us_per_connect"], 0),
            ratio(o["cpu_us_per_connect"], r["cpu_us_per_connect"]), "(info)")
        ko, kr = o["rss_per_connection_kib"], r["rss_per_connection_kib"]
        add("RSS per idle connection (KiB)", f(ko), f(kr), ratio(ko, kr), "<= ref", (ko <= kr) if ko is not None and kr is not None else None)
        jo, jr = o.get("rss_per_joined_connection_kib"), r.get("rss_per_joined_connection_kib")
        add("RSS per idle connection in a room (KiB)", f(jo), f(jr), ratio(jo, jr), "(info)")

    ing = sc.get("ingest")
    if ing and "ours" in ing:
        o, r = ing["ours"], ing["ref"]
        ok = o["best_rate_p99_20ms"] >= 5000

        def sustained(side: dict[str, Any]) -> str:
            if side["best_rate_p99_20ms"]:
                return f(side["best_acked_per_s_p99_20ms"], 0)
            return f"< {min(s['rate'] for s in side['steps'])}" if side["steps"] else "-"

        add("ingest: msg/s acked with ack p99 <= 20 ms", sustained(o), sustained(r) + " (no storage)",
            ratio(o["best_acked_per_s_p99_20ms"], r["best_acked_per_s_p99_20ms"]), ">= 5,000/s", ok)
        add("ingest: max msg/s acked (any latency)", f(o["max_acked_per_s"], 0), f(r["max_acked_per_s"], 0),
            ratio(o["max_acked_per_s"], r["max_acked_per_s"]), "(info)")
        to, tr = o["target"], r["target"]

        def ack(s: dict[str, Any] | None) -> str:
            if not s:
                return "not run"
            errors = ", ".join(f"{v} {k}" for k, v in s["ack_errors"].items())
            return f"{f(s['ack_latency']['p50_ms'])} / {f(s['ack_latency']['p99_ms'])} ms" + (f"; {errors}" if errors else "") + gen_flag(s)

        add(f"ingest @ {o['target_rate']} msg/s offered: ack p50 / p99", ack(to), ack(tr),
            ratio(to["ack_latency"]["p99_ms"] if to else None, tr["ack_latency"]["p99_ms"] if tr else None) + " (p99)",
            "p99 <= 20 ms", bool(to and not to["ack_errors"] and (to["ack_latency"]["p99_ms"] or 1e9) <= 20))
        if to:
            add(f"ingest @ {o['target_rate']}: server / PostgreSQL CPU µs per message", f"{f(to['cpu_us_per_message'], 0)} / {f(to['postgres_cpu_us_per_message'], 0)}",
                f(tr["cpu_us_per_message"], 0) if tr else "-", ratio(to["cpu_us_per_message"], tr["cpu_us_per_message"] if tr else None), "(info)")
            commits = to.get("commit_ms")
            if commits:
                add(f"ingest @ {o['target_rate']}: insert batch commit round trip p50 / p99", f"{f(commits['p50_ms'])} / {f(commits['p99_ms'])} ms "
                    f"({f(to['acked'] / commits['batches'], 1)} msg/batch)", "n/a (no storage)", "-", "(info)")
            if to.get("wal_bytes_per_message") is not None:
                # What each stored message costs the disk: the WAL every commit must flush.
                add(f"ingest @ {o['target_rate']}: PostgreSQL WAL bytes per message", f(to["wal_bytes_per_message"], 0),
                    f(tr.get("wal_bytes_per_message"), 0) + " (no storage)" if tr else "-", "-", "(info)")

            def flush(side: dict[str, Any] | None) -> str:
                d = side.get("disk_flush_ms") if side else None
                return f"{f(d['p50_ms'], 2)} / {f(d['p99_ms'])} / {f(d['max_ms'])} ms" if d else "not measured"

            add(f"ingest @ {o['target_rate']}: disk flush (8 kB fdatasync) p50 / p99 / max", flush(to), flush(tr), "-", "(info)")

            def steal(side: dict[str, Any] | None) -> str:
                return f"{f(side['steal_cores'], 2)} cores" if side and side.get("steal_cores") is not None else "-"

            add(f"ingest @ {o['target_rate']}: steal time (a shared host's, both cores)", steal(to), steal(tr), "-", "(info)")
        fo, fr = o.get("few_senders"), r.get("few_senders")
        if fo and fr:
            fto, ftr = fo["target"], fr["target"]
            add(f"ingest @ {o['target_rate']} msg/s from {fo['clients']} clients ({f(o['target_rate'] / fo['clients'], 0)}/s each): ack p50 / p99",
                ack(fto), ack(ftr), ratio(fto["ack_latency"]["p99_ms"] if fto else None, ftr["ack_latency"]["p99_ms"] if ftr else None) + " (p99)",
                "p99 <= 20 ms", bool(fto and not fto["ack_errors"] and (fto["ack_latency"]["p99_ms"] or 1e9) <= 20))

    hist = sc.get("history")
    if hist and "positions" in hist:
        reference = hist.get("offset_reference", {})
        for name, label in (("keyset_shallow", "before_seq, shallow"), ("keyset_deep", "before_seq, deep"),
                            ("page_shallow", "page=N, shallow"), ("page_deep", "page=N, deep")):
            h = hist["positions"].get(name)
            if not h:
                continue
            note = f", {h['wrong_answers']} wrong" if h["wrong_answers"] else ""
            r = reference.get(name)
            add(f"history page of 50 in {hist['rows']:,} rows, {label}: p50 / p99",
                f"{f(h['p50_ms'], 2)} / {f(h['p99_ms'], 2)} ms{note}",
                f"{f(r['p50_ms'], 2)} / {f(r['p99_ms'], 2)} ms (OFFSET, SQL only)" if r else "n/a",
                (f"1/{r['p99_ms'] / h['p99_ms']:,.0f} (p99)" if h["p99_ms"] and r["p99_ms"] > 20 * h["p99_ms"]
                 else ratio(h["p99_ms"], r["p99_ms"]) + " (p99)") if r else "-", "p99 <= 3 ms",
                (h["p99_ms"] or 1e9) <= 3 and not h["wrong_answers"])

    mn = sc.get("multinode")
    if mn and "one" in mn:
        one, two = mn["one"], mn["two"]
        add(f"Redis fan-out {mn['clients']} clients: deliveries/s at saturation, 1 node / 2 nodes",
            f"{f(one['saturation_deliveries_per_s'], 0)}{' (gen!)' if one['saturation_generator_saturated'] else ''} / "
            f"{f(two['saturation_deliveries_per_s'], 0)}{' (gen!)' if two['saturation_generator_saturated'] else ''}", "n/a", "-", "(info)")
        add("two nodes vs one: measured factor (2 cores shared with generator)", f(mn["factor_raw"], 2, "x"), "n/a", "-", ">= 1.8x",
            (mn["factor_raw"] or 0) >= 1.8)
        util = ", ".join(f"{u * 100:.0f}%" for u in one["saturation_node_cpu_util"] + two["saturation_node_cpu_util"])
        add("  node CPU at saturation (1 node; 2 nodes)", util, "n/a", "-", "(info: < 90% = not CPU-bound)")
        if mn.get("cpu_us_per_delivery"):
            cpd = mn["cpu_us_per_delivery"]
            add(f"  CPU µs/delivery @ {mn['cpu_compare_rate']} msg/s ({mn.get('cpu_compare_rule', '?')}), 1 node / 2 nodes (both on core 0)", f"{f(cpd['one'], 2)} / {f(cpd['two'], 2)}", "n/a", "-", "(info)")
            add("two nodes vs one: projected from CPU per delivery (a core per node)", f(mn["factor_cpu_projected"], 2, "x"), "n/a", "-",
                ">= 1.8x", (mn["factor_cpu_projected"] or 0) >= 1.8)

    pipe = sc.get("pipeline")
    if pipe and "pipeline_us" in pipe:
        add("content pipeline µs/message (ours: sanitise+spam+profanity+html)", f(pipe["pipeline_subset_us"], 1),
            f(pipe["better_profanity_censor_us"], 0) + " (b_p censor)", ratio(pipe["pipeline_subset_us"], pipe["better_profanity_censor_us"]), "(info)")
    for name, value in sc.items():
        if isinstance(value, dict) and "error" in value:
            add(f"{name}: FAILED ({value['error'][:60]})", "-", "-", "-", "", False)
    return rows


def print_table(rows: list[list[str]], results: dict[str, Any]) -> str:
    head = ["metric", "ours", "reference", "ours/ref", "target", ""]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = []
    sep = "-+-".join("-" * w for w in widths)
    lines.append(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines.append(sep)
    for r in rows:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    env = results["environment"]
    lines.append("")
    lines.append(f"profile {results['profile']}; servers pinned to core {env['server_core']}, load generator to core {env['load_core']}; "
                 f"reference: Node.js {env['node']} socket.io {env['socketio']}; our WebSocket compression negotiated: "
                 f"{env.get('ours_deflate', '?')} (offered like a browser)")
    lines.append("ours/ref > 1 is worse for latencies and CPU, better for rates.  (gen!) = load generator above "
                 f"{GEN_SATURATED * 100:.0f}% of its core in that step: latency partly the generator's.")
    other = results.get("other_cpu_cores_max")
    if other is not None:
        lines.append(f"CPU not attributed to the measured processes during steps: at most {other:.2f} cores"
                     + (f" (busiest other processes: {results['other_processes']})" if results.get("other_processes") else "")
                     + ("  <-- something else was busy: rerun on a quiet machine" if other > OTHER_BUSY else ""))
    steal = results.get("steal_cores_max")
    if steal is not None:
        lines.append(f"CPU a shared host took from these two cores (steal time) during steps: mean {results['steal_cores_mean']:.2f}, "
                     f"at most {steal:.2f} cores"
                     + ("  <-- a contended host: absolute latencies and rates are worse than on a machine of its own; "
                        "compare ours with the reference of the same run" if steal > STEAL_NOTED else ""))
    freezes = results.get("host_freezes") or []
    if freezes:
        lines.append("host freezes before the run (a 1 ms sleeper on each core, machine idle): " + "; ".join(
            f"core {p['core']}: {p['gaps']} wake-ups over {p['gap_ms']:g} ms late in {p['seconds']:g} s, longest {p['longest_ms']:g} ms"
            + (f", steal {p['steal_s']:.2f} s" if p.get("steal_s") is not None else "") for p in freezes)
            + ("  <-- the host stops these cores for longer than a 20 ms latency target now and then"
               if any(p["longest_ms"] > 20 for p in freezes) else ""))
    text = "\n".join(lines)
    print(text)
    return text


# -- plots --------------------------------------------------------------------------------------------
def plot(results: dict[str, Any], prefix: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []
    sc = results["scenarios"]
    fan = (sc.get("fanout") or {}).get("main") if isinstance(sc.get("fanout"), dict) else None
    ing = sc.get("ingest")
    mn = sc.get("multinode")
    colors = {"ours": "tab:blue", "ref": "tab:orange"}

    def cdf(ax: Any, buckets: list[list[float]], **kw: Any) -> None:
        if not buckets:
            return
        total = sum(c for _, c in buckets)
        xs, ys, acc = [], [], 0
        for upper, count in buckets:
            acc += count
            xs.append(upper)
            ys.append(acc / total)
        ax.step(xs, ys, where="post", **kw)

    if not any(x and "ours" in x for x in (fan, ing)) and not (mn and "one" in mn):
        return plot_history(sc.get("history"), prefix, plt)
    # Latency distributions.
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    if fan and "ours" in fan:
        rates = sorted({s["rate"] for k in ("ours", "ref") for s in fan[k]["steps"]})
        styles = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
        for kind in ("ours", "ref"):
            for s in fan[kind]["steps"]:
                cdf(axes[0], s["latency_buckets"], color=colors[kind], linestyle=styles[rates.index(s["rate"]) % len(styles)],
                    label=f"{'ours' if kind == 'ours' else 'reference'} @ {s['rate']} msg/s")
        axes[0].set_title(f"fan-out, {fan['clients']} clients in one room: send-to-receive latency")
    if ing and "ours" in ing:
        for kind in ("ours", "ref"):
            steps = ing[kind]["steps"]
            for s in steps:
                cdf(axes[1], s["ack_latency_buckets"], color=colors[kind], alpha=0.3 + 0.7 * (s["rate"] / max(x["rate"] for x in steps)),
                    label=f"{'ours' if kind == 'ours' else 'reference'} @ {s['rate']} msg/s")
        axes[1].set_title("ingest: send-to-ack latency")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of deliveries")
        ax.grid(True, which="both", alpha=0.3)
        ax.axvline(100, color="grey", lw=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
        else:
            ax.set_visible(False)
    fig.tight_layout()
    path = f"{prefix}-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    # Throughput against offered rate.
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    if fan and "ours" in fan:
        ax = axes[0]
        ax2 = ax.twinx()
        for kind in ("ours", "ref"):
            st = fan[kind]["steps"]
            ax.plot([s["rate"] for s in st], [s["deliveries_per_s_window"] for s in st], "o-", color=colors[kind],
                    label=f"{'ours' if kind == 'ours' else 'reference'}: delivered/s")
            ax2.plot([s["rate"] for s in st], [s["latency"]["p99_ms"] for s in st], "x:", color=colors[kind])
        top = max(s["rate"] for k in ("ours", "ref") for s in fan[k]["steps"])
        ax.plot([0, top], [0, top * fan["clients"]], color="grey", lw=0.8, label="offered deliveries/s")
        ax2.set_yscale("log")
        ax2.set_ylabel("p99 send-to-receive, ms (dotted)")
        ax.set_title(f"fan-out, {fan['clients']} clients")
        ax.set_xlabel("offered messages/s")
        ax.set_ylabel("deliveries/s during the sending window")
        ax.legend(fontsize=8, loc="upper left")
    if ing and "ours" in ing:
        ax = axes[1]
        for kind in ("ours", "ref"):
            st = ing[kind]["steps"]
            ax.plot([s["rate"] for s in st], [s["acked_per_s"] for s in st], "o-", color=colors[kind],
                    label=f"{'ours' if kind == 'ours' else 'reference (no storage)'}: acked/s")
        top = max(s["rate"] for k in ("ours", "ref") for s in ing[k]["steps"])
        ax.plot([0, top], [0, top], color="grey", lw=0.8, label="offered")
        ax.axhline(5000, color="green", lw=0.8, ls="--", label="target 5,000/s")
        ax3 = ax.twinx()
        for kind in ("ours", "ref"):
            st = ing[kind]["steps"]
            ax3.plot([s["rate"] for s in st], [s["ack_latency"]["p99_ms"] for s in st], "x:", color=colors[kind])
        ax3.set_yscale("log")
        ax3.set_ylabel("ack p99, ms (dotted)")
        ax.set_title("ingest")
        ax.set_xlabel("offered messages/s")
        ax.set_ylabel("acknowledged messages/s")
        ax.legend(fontsize=8, loc="upper left")
    if mn and "one" in mn:
        ax = axes[2]
        for layout, color in (("one", "tab:blue"), ("two", "tab:green")):
            st = mn[layout]["steps"]
            ax.plot([s["rate"] for s in st], [s["deliveries_per_s_window"] for s in st], "o-", color=color,
                    label=f"{layout} node{'s' if layout == 'two' else ''} (Redis)")
        ax.set_title(f"our fan-out over Redis, {mn['clients']} clients")
        ax.set_xlabel("offered messages/s")
        ax.set_ylabel("deliveries/s")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if not ax.lines:
            ax.set_visible(False)
    fig.tight_layout()
    path = f"{prefix}-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    return files + plot_history(sc.get("history"), prefix, plt)


def plot_history(hist: dict[str, Any] | None, prefix: Path, plt: Any) -> list[str]:
    files: list[str] = []
    if hist and "positions" in hist:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        names = list(hist["positions"])
        p50 = [hist["positions"][n]["p50_ms"] for n in names]
        p99 = [hist["positions"][n]["p99_ms"] for n in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
        ax.axhline(3, color="red", lw=0.8, ls="--", label="target p99 3 ms")
        ax.set_xticks(list(xs), names)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"history page of 50, room of {hist['rows']:,} messages")
        ax.legend()
        fig.tight_layout()
        path = f"{prefix}-history.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


# -- main -----------------------------------------------------------------------------------------------
def environment(ctx: Context) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return "?"

    socketio_version = "?"
    with contextlib.suppress(Exception):
        socketio_version = json.loads((BENCH / "node_modules" / "socket.io" / "package.json").read_text())["version"]
    commit = version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(version(["git", "-C", str(REPO), "status", "--porcelain", "--", "chat_server"]))
    return {"node": version([ctx.node, "--version"]), "socketio": socketio_version, "python": sys.version.split()[0],
            "commit": commit + ("+dirty" if dirty else ""), "cpus": ctx.cores, "server_core": ctx.server_core,
            "load_core": ctx.load_core, "profile": ctx.profile_name}


def wait_quiet(max_wait_s: float) -> dict[str, Any]:
    """Wait (up to max_wait_s) until the machine is nearly idle: other work on these two
    cores (another test run) would end up in the figures."""
    deadline = time.monotonic() + max_wait_s
    while True:
        a, pa = machine_cpu()[0], all_process_cpu()
        time.sleep(2.0)
        b, pb = machine_cpu()[0], all_process_cpu()
        busy = (b.get("cpu", 0) - a.get("cpu", 0)) / 2.0
        top = sorted(((pb[p][1] - pa[p][1]) / 2.0, pb[p][0]) for p in pb if p in pa and p != os.getpid())[-3:]
        if busy <= 0.1 or time.monotonic() >= deadline:
            if busy > 0.1:
                log(f"warning: the machine is busy ({busy:.2f} cores: " + ", ".join(f"{n} {c:.2f}" for c, n in reversed(top))
                    + "); figures will be disturbed")
            return {"busy_cores": busy, "top": [{"name": n, "cores": c} for c, n in reversed(top)]}
        log(f"waiting for a quiet machine ({busy:.2f} cores busy: " + ", ".join(f"{n} {c:.2f}" for c, n in reversed(top)) + ")")


def host_freezes(ctx: Context, seconds: float) -> list[dict[str, Any]]:
    """benchmarks/host_freezes.py on the server's and the generator's core at once: how
    often a shared host stops these cores, measured while nothing else runs."""
    cores = [ctx.server_core, ctx.load_core] if ctx.cores >= 2 else [None]
    procs = [subprocess.Popen([*ctx.pin(core), sys.executable, str(BENCH / "host_freezes.py"), str(seconds)],
                              stdout=subprocess.PIPE, text=True) for core in cores]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=seconds + 30)
        with contextlib.suppress(ValueError):
            out.append(json.loads(stdout))
    return out


def ensure_node_modules(ctx: Context) -> None:
    if (BENCH / "node_modules" / "ws").is_dir() and (BENCH / "node_modules" / "socket.io").is_dir():
        return
    npm = shutil.which("npm")
    if not npm:
        sys.exit("bench: npm is needed (Node.js >= 18) for the reference server and the load generator")
    log("installing benchmarks/node_modules (npm ci)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("BENCH_PROFILE") or "quick")
    parser.add_argument("--only", help=f"comma-separated scenarios (default all: {','.join(ALL_SCENARIOS)})")
    parser.add_argument("--skip", help="comma-separated scenarios to leave out")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE (default: the test database)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--wait-quiet", type=float, default=float(os.environ.get("BENCH_WAIT_QUIET", "120")),
                        help="seconds to wait at most for an idle machine before starting (default 120)")
    parser.add_argument("--set", action="append", default=[], metavar="SCENARIO.KEY=JSON",
                        help="override one profile value, e.g. --set fanout.rates=[50,100] (repeatable)")
    args = parser.parse_args()
    if args.profile not in PROFILES:
        parser.error(f"unknown profile {args.profile!r}")
    for item in args.set:
        try:
            path, value = item.split("=", 1)
            scenario, key = path.split(".", 1)
            PROFILES[args.profile][scenario][key] = json.loads(value)
        except (ValueError, KeyError) as exc:
            parser.error(f"--set {item!r}: expected SCENARIO.KEY=JSON for a scenario of the profile ({exc})")
    wanted = [s.strip() for s in (args.only.split(",") if args.only else ALL_SCENARIOS) if s.strip()]
    skipped = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    unknown = [s for s in [*wanted, *skipped] if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    wanted = [s for s in ALL_SCENARIOS if s in wanted and s not in skipped]

    # Many sockets on both sides of the loopback.
    with contextlib.suppress(Exception):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    ctx = Context(args)
    # The driver itself (and the history client) stays off the server's core.
    with contextlib.suppress(Exception):
        if ctx.cores >= 2:
            os.sched_setaffinity(0, {int(ctx.load_core)})
    ensure_node_modules(ctx)
    results: dict[str, Any] = {"profile": ctx.profile_name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": ctx.run_id,
                               "config": ctx.profile, "environment": environment(ctx), "scenarios": {}}
    results["machine_before"] = wait_quiet(args.wait_quiet)
    results["host_freezes"] = host_freezes(ctx, HOST_PROBE_S.get(ctx.profile_name, 10.0))
    t_start = time.monotonic()
    log(f"profile {ctx.profile_name}: {', '.join(wanted)}; results in {RESULTS}/{ctx.stamp}.json, logs in {ctx.logs}")
    needs_db = any(s in wanted for s in ("connections", "fanout", "ingest", "multinode"))
    failed = False
    try:
        if needs_db:
            admin_exec(ctx.admin_url, f'DROP DATABASE IF EXISTS "{ctx.db_name}" WITH (FORCE)', f'CREATE DATABASE "{ctx.db_name}"')
            migrate(ctx, ctx.db_url)
        for name in wanted:
            log(f"scenario {name}")
            t0 = time.monotonic()
            try:
                results["scenarios"][name] = SCENARIOS[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                failed = True
                traceback.print_exc()
                results["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                ctx.stop_all()
            log(f"scenario {name} done in {time.monotonic() - t0:.0f} s")
    finally:
        ctx.stop_all()
        with contextlib.suppress(Exception):
            ctx._pg.close()
        if needs_db:
            with contextlib.suppress(Exception):
                admin_exec(ctx.admin_url, f'DROP DATABASE IF EXISTS "{ctx.db_name}" WITH (FORCE)')
    results["seconds"] = time.monotonic() - t_start
    ext = set()
    for sc in results["scenarios"].values():
        for run in ([sc.get("main")] if isinstance(sc, dict) and "main" in sc else [sc]):
            if isinstance(run, dict) and isinstance(run.get("ours"), dict):
                ext.update(run["ours"].get("extensions") or run["ours"].get("connect", {}).get("extensions") or [])
    results["environment"]["ours_deflate"] = "yes" if any("deflate" in e for e in ext) else ("no" if ext else "?")
    others = [s.get("other_cpu_cores") for s in iter_steps(results["scenarios"]) if s.get("other_cpu_cores") is not None]
    results["other_cpu_cores_max"] = max(others) if others else None
    steals = [s["steal_cores"] for s in iter_steps(results["scenarios"]) if s.get("steal_cores") is not None]
    results["steal_cores_max"] = max(steals) if steals else None
    results["steal_cores_mean"] = sum(steals) / len(steals) if steals else None
    busiest: dict[str, float] = {}
    for step in iter_steps(results["scenarios"]):
        for o in step.get("other_processes", []):
            busiest[o["name"]] = max(busiest.get(o["name"], 0.0), o["cores"])
    results["other_processes"] = ", ".join(f"{n} {c:.2f}" for n, c in sorted(busiest.items(), key=lambda x: -x[1])[:4])
    rows = build_table(results)
    results["table"] = rows
    out = RESULTS / f"{ctx.stamp}.json"
    print()
    results["table_text"] = print_table(rows, results)
    try:
        results["plots"] = plot(results, RESULTS / ctx.stamp)
    except Exception:
        traceback.print_exc()
        results["plots"] = []
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {out}" + "".join(f"\nplot:    {p}" for p in results["plots"]) + f"\ntotal {results['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
