"""Run every benchmark, print each figure beside a baseline measured in the same run, save them.

``python -m bench.run`` (short, what ``make bench`` runs, a few minutes) or ``--full`` (the
figures quoted in docs/operations.md). Results go to ``bench/results/<mode>.json`` and a plot
``bench/results/<mode>.png`` (latency and throughput against data size), with a description of
the machine they came from.

Baselines, measured in the same run on the same machine:

- a raw Ed25519 verification loop (what one signature check costs here);
- a bare Flask endpoint that verifies one Ed25519 signature and inserts one row
  (``bench/baseline_app.py``), served by the same ``gunicorn.conf.py`` on the same engine.

Every figure is the median of several runs. The single-report runs alternate with runs of the
bare endpoint (both servers up), and its ratio is the median of each run's ratio to the bare
run just before it: this machine's speed drifts by a fifth within minutes, more than the
difference being measured. HTTP figures follow an unmeasured warm-up round,
on the bare endpoint and the registry alike: a gunicorn worker's first requests fill its caches
(compiled statements, the member keys it has seen, psycopg's prepared statements), which a
long-running server has long since done. Servers listen on 127.0.0.1 on free ports only;
every loop is bounded; everything started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench.baseline_app import create_table
from bench.generate import Member, ReportStream, bulk_load, institution_ids, national_id
from crypto import ed25519, httpsig
from registry import members as registry_members
from registry.clearing import Clearer
from registry.db import make_engine, make_session_factory, upgrade_to_head
from registry.policy import Policy
from registry.secrets import KeyMaterial, init_instance, load_key_material
from registry.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PG_ADMIN_DSN = os.environ.get(
    "REGISTRY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)

TARGETS = {
    "single_ratio": 0.5,
    "batch_sqlite": 3000.0,
    "batch_postgresql": 2000.0,
    "inquiry_p99_ms": 25.0,
    "inquiry_p50_growth": 1.5,
    "sweeper": 5000.0,
}


@dataclass(frozen=True)
class Mode:
    name: str
    repeats: int
    verify_loop: int
    http_requests: int
    concurrency: int
    batch_size: int
    batches_per_client: int
    batch_clients: int
    inquiry_sizes: tuple[int, ...]
    inquiries: int
    sweep_records: int
    readable_every: int


SHORT = Mode(
    name="short",
    repeats=3,
    verify_loop=5_000,
    http_requests=100,
    concurrency=8,
    batch_size=200,
    batches_per_client=1,
    batch_clients=2,
    inquiry_sizes=(10_000, 30_000),
    inquiries=50,
    sweep_records=60,
    readable_every=50,
)
FULL = Mode(
    name="full",
    repeats=3,
    verify_loop=20_000,
    http_requests=1000,
    concurrency=8,
    batch_size=1000,
    batches_per_client=2,
    batch_clients=2,
    inquiry_sizes=(10_000, 100_000, 1_000_000),
    inquiries=200,
    sweep_records=3_000,
    readable_every=100,
)
# Loading a million borrowers twice does not fit the time budget: SQLite (the embedded engine)
# stops at this size; PostgreSQL (the production engine) goes to the full sizes.
SQLITE_MAX_BORROWERS = {"short": 30_000, "full": 100_000}


def say(text: str) -> None:
    print(text, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --- machine -------------------------------------------------------------------------------


def machine(pg_version: str | None) -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    from importlib.metadata import version

    return {
        # Other work on the machine during the run slows everything: compare ratios to the
        # baselines of the same run, not absolute figures across machines.
        "load_average_at_start": list(os.getloadavg()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version,
        "packages": {
            name: version(name)
            for name in ("flask", "sqlalchemy", "gunicorn", "cryptography", "psycopg")
        },
    }


# --- databases and servers -----------------------------------------------------------------


@dataclass
class Database:
    engine_name: str
    url: str
    drop: Callable[[], None] = field(default=lambda: None)


def postgres_version() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except psycopg.Error:
        return None


def new_database(engine_name: str, workdir: Path, label: str) -> Database:
    if engine_name == "sqlite":
        return Database("sqlite", f"sqlite:///{workdir / f'{label}.db'}")
    name = f"registry_bench_{label}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    url = (
        f"postgresql+psycopg://{admin.get('user')}@{admin.get('host')}:"
        f"{admin.get('port', '5432')}/{name}"
    )

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    return Database("postgresql", url, drop)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """Serve ``app`` with the project's gunicorn.conf.py on 127.0.0.1; stop it afterwards."""
    port = free_port()
    full_env = dict(os.environ)
    full_env.update(env)
    full_env.setdefault("REGISTRY_MAX_REQUESTS", "0")
    full_env["PROMETHEUS_MULTIPROC_DIR"] = str(log.parent / f"metrics-{port}")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", app],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{app} exited at start; see {log}")
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{app} did not start in 60 s; see {log}") from None
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass
class Registry:
    """A registry instance (secrets, database at head, members admitted) for one engine."""

    db: Database
    settings: Settings
    engine: Engine
    material: KeyMaterial
    members: list[Member]
    institutions: list[int]

    @classmethod
    def create(cls, db: Database, workdir: Path, n_members: int = 5) -> Registry:
        settings = Settings(
            instance_path=workdir / f"instance-{db.engine_name}", database_url=db.url
        )
        settings.instance_path.mkdir(parents=True, exist_ok=True)
        init_instance(settings)
        engine = make_engine(settings)
        upgrade_to_head(engine)
        members = [Member.new(f"BENCH{i}") for i in range(n_members)]
        when = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        with Session(engine) as session:
            for member in members:
                registry_members.admit(session, member.code, f"{member.code} Bank", when)
                registry_members.add_key(session, member.code, member.public_pem(), when)
            session.commit()
        ids = institution_ids(engine, [m.code for m in members])
        return cls(db, settings, engine, load_key_material(settings), members, ids)

    def env(self) -> dict[str, str]:
        return {
            "REGISTRY_INSTANCE": str(self.settings.instance_path),
            "REGISTRY_DATABASE_URL": self.db.url,
        }


# --- HTTP load -----------------------------------------------------------------------------


@dataclass
class Load:
    elapsed: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def drive(
    url: str,
    n: int,
    concurrency: int,
    build: Callable[[int], tuple[str, str, dict[str, str], bytes]],
) -> Load:
    """Send requests ``0..n-1`` from ``concurrency`` threads (one connection per request,
    as gunicorn's sync workers close after each answer); time each and the whole."""
    host, port = url.removeprefix("http://").split(":")
    counter = iter(range(n))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            method, path, headers, body = build(i)
            started = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=300)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            finally:
                conn.close()
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Load(time.perf_counter() - started, latencies, statuses)


def signed_headers(member: Member, url: str, method: str, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} if body else {}
    headers.update(
        httpsig.sign_request(
            method=method,
            url=url,
            headers=headers,
            body=body,
            key=member.key,
            keyid=member.keyid,
            created=int(time.time()),
            nonce=secrets.token_urlsafe(24),
        )
    )
    return headers


# --- the benchmarks ------------------------------------------------------------------------


def bench_verify_loop(mode: Mode) -> float:
    key = ed25519.generate_private_key()
    public = key.public_key()
    message = secrets.token_bytes(1000)
    signature = key.sign(message)
    rates = []
    for _ in range(mode.repeats):
        started = time.perf_counter()
        for _ in range(mode.verify_loop):
            public.verify(signature, message)
        rates.append(mode.verify_loop / (time.perf_counter() - started))
    return median(rates)


@contextmanager
def bare_server(mode: Mode, db: Database, workdir: Path) -> Iterator[Callable[[int, int], Load]]:
    """The bare endpoint, served and warmed up; yields ``load(requests, concurrency)``."""
    key = ed25519.generate_private_key()
    stream = ReportStream([Member.new("BASE")], seed=3, tag="base")
    bodies = [stream.single(0) for _ in range(mode.http_requests)]
    sigs = [base64.b64encode(key.sign(b)).decode() for b in bodies]
    env = {
        "BENCH_BASELINE_DB": db.url,
        "BENCH_BASELINE_KEY": ed25519.public_key_raw(key).hex(),
    }
    create_table(db.url)
    with gunicorn("bench.baseline_app:create_app()", env, workdir / "baseline.log") as url:

        def build(i: int) -> tuple[str, str, dict[str, str], bytes]:
            headers = {"Content-Type": "application/json", "X-Signature": sigs[i]}
            return "POST", "/ingest", headers, bodies[i]

        def load(requests: int, concurrency: int) -> Load:
            done = drive(url, requests, concurrency, build)
            assert done.statuses == {201: requests}, done.statuses
            return done

        load(warm_up(mode), mode.concurrency)
        yield load


def bench_bare_endpoint(mode: Mode, bare: Callable[[int, int], Load]) -> dict[str, float]:
    rates, p50s = [], []
    for _ in range(mode.repeats):
        rates.append(bare(mode.http_requests, mode.concurrency).rate)
        sequential = bare(min(200, mode.http_requests), 1)
        p50s.append(percentile(sequential.latencies, 0.5) * 1000)
    return {"requests_per_s": median(rates), "p50_ms": median(p50s)}


def warm_up(mode: Mode) -> int:
    """Requests sent, unmeasured, before the measured runs of an HTTP benchmark."""
    return min(200, mode.http_requests)


def signed_report(
    reg: Registry, stream: ReportStream, url: str, i: int
) -> tuple[str, str, dict[str, str], bytes]:
    """The ``i``-th single report request: a new account, its envelope and request signed."""
    member = reg.members[i % len(reg.members)]
    raw = stream.single(i % len(reg.members))
    return "POST", "/v1/reports", signed_headers(member, f"{url}/v1/reports", "POST", raw), raw


def bench_single(
    mode: Mode, reg: Registry, workdir: Path, bare: Callable[[int, int], Load]
) -> dict[str, Any]:
    """Runs of the registry alternate with runs of the bare endpoint, each ratio taken
    against the bare run just before it: this machine's speed drifts within minutes."""
    stream = ReportStream(reg.members, seed=5, tag="single")
    rates, bare_rates, ratios = [], [], []
    failed = 0
    with gunicorn("wsgi:app", reg.env(), workdir / f"registry-{reg.db.engine_name}.log") as url:
        warming = [signed_report(reg, stream, url, i) for i in range(warm_up(mode))]
        drive(url, len(warming), mode.concurrency, warming.__getitem__)
        for _ in range(mode.repeats):
            # NOTE: envelopes and request signatures are made before the clock starts, as the
            # bare endpoint's signatures are: the client's own signing is not part of either
            # figure (it ran inside the timed part until issue #6's second round). A thousand
            # signatures take well under a second of the 300-second replay window.
            requests = [signed_report(reg, stream, url, i) for i in range(mode.http_requests)]
            bare_rates.append(bare(mode.http_requests, mode.concurrency).rate)
            load = drive(url, mode.http_requests, mode.concurrency, requests.__getitem__)
            failed += mode.http_requests - load.statuses.get(201, 0)
            rates.append(load.statuses.get(201, 0) / load.elapsed)
            ratios.append(rates[-1] / bare_rates[-1])
    ratio = median(ratios)
    return {
        "reports_per_s": median(rates),
        "runs": rates,
        "failed_requests": failed,
        "baseline_requests_per_s": median(bare_rates),
        "baseline_runs": bare_rates,
        "ratios": ratios,
        "ratio": ratio,
        "target_ratio": TARGETS["single_ratio"],
        "met": ratio >= TARGETS["single_ratio"],
    }


def bench_batch(mode: Mode, reg: Registry, workdir: Path, baseline_rps: float) -> dict[str, Any]:
    stream = ReportStream(reg.members, seed=9, tag="batch")
    runs = []
    stored = 0
    failed = 0
    clients = min(mode.batch_clients, len(reg.members))
    with gunicorn("wsgi:app", reg.env(), workdir / f"registry-{reg.db.engine_name}.log") as url:
        generators = [stream.batches(c, mode.batch_size) for c in range(clients)]
        for _ in range(mode.repeats):
            bodies = []
            for c in range(clients):
                for _ in range(mode.batches_per_client):
                    batch = next(generators[c])
                    payload = {"envelopes": [e.decode() for e in batch]}
                    bodies.append((c, json.dumps(payload, separators=(",", ":")).encode()))

            def build(
                i: int, bodies: list[tuple[int, bytes]] = bodies
            ) -> tuple[str, str, dict[str, str], bytes]:
                member, body = bodies[i]
                target = f"{url}/v1/reports/batch"
                return (
                    "POST",
                    "/v1/reports/batch",
                    signed_headers(reg.members[member], target, "POST", body),
                    body,
                )

            load = drive(url, len(bodies), clients, build)
            failed += len(bodies) - load.statuses.get(200, 0)
            reports = load.statuses.get(200, 0) * mode.batch_size
            rate = reports / load.elapsed
            runs.append({"stored_before": stored, "reports": reports, "reports_per_s": rate})
            stored += reports
    rate = median([r["reports_per_s"] for r in runs])
    target = TARGETS[f"batch_{reg.db.engine_name}"]
    return {
        "reports_per_s": rate,
        "runs": runs,
        "batch_size": mode.batch_size,
        "failed_batches": failed,
        "concurrent_batches": clients,
        "baseline_requests_per_s": baseline_rps,
        "ratio_to_bare_endpoint": rate / baseline_rps,
        "target": target,
        "met": rate >= target,
    }


def bench_inquiries(mode: Mode, reg: Registry, workdir: Path, bare_p50_ms: float) -> dict[str, Any]:
    sizes = []
    failed = 0
    loaded = 0
    readable: list[tuple[int, int]] = []
    rng = random.Random(13)
    log = workdir / f"registry-{reg.db.engine_name}.log"
    limit = SQLITE_MAX_BORROWERS[mode.name] if reg.db.engine_name == "sqlite" else None
    for size in [s for s in mode.inquiry_sizes if limit is None or s <= limit]:
        started = time.perf_counter()
        result = bulk_load(
            reg.engine,
            reg.material,
            reg.institutions,
            start=10_000_000 + loaded,
            count=size - loaded,
            readable_every=mode.readable_every,
        )
        load_seconds = time.perf_counter() - started
        readable.extend(result.readable)
        loaded = size
        say(f"    loaded {size:>9,} borrowers ({load_seconds:.0f} s)")
        p50s, p99s = [], []
        with gunicorn("wsgi:app", reg.env(), log) as url:
            for _ in range(mode.repeats):
                picks = [rng.choice(readable) for _ in range(mode.inquiries)]

                def build(
                    i: int, picks: list[tuple[int, int]] = picks
                ) -> tuple[str, str, dict[str, str], bytes]:
                    serial, member = picks[i]
                    body = json.dumps(
                        {"national_id": national_id(serial), "purpose": "account_review"}
                    ).encode()
                    headers = signed_headers(
                        reg.members[member], f"{url}/v1/inquiries", "POST", body
                    )
                    return "POST", "/v1/inquiries", headers, body

                drive(url, 20, 1, build)  # warm the workers' caches and connections
                load = drive(url, mode.inquiries, 1, build)
                failed += mode.inquiries - load.statuses.get(200, 0)
                ms = [x * 1000 for x in load.latencies]
                p50s.append(percentile(ms, 0.5))
                p99s.append(percentile(ms, 0.99))
        sizes.append(
            {
                "borrowers": size,
                "database_bytes": database_bytes(reg),
                "p50_ms": median(p50s),
                "p99_ms": median(p99s),
                "load_seconds": load_seconds,
            }
        )
        say(f"    {size:>9,} borrowers: p50 {median(p50s):.1f} ms  p99 {median(p99s):.1f} ms")
    growth = sizes[-1]["p50_ms"] / sizes[0]["p50_ms"]
    return {
        "sizes": sizes,
        "bare_endpoint_p50_ms": bare_p50_ms,
        "p50_growth": growth,
        "failed_inquiries": failed,
        "p99_target_ms": TARGETS["inquiry_p99_ms"],
        "p50_growth_target": TARGETS["inquiry_p50_growth"],
        "met_p99": sizes[-1]["p99_ms"] <= TARGETS["inquiry_p99_ms"],
        "met_growth": growth <= TARGETS["inquiry_p50_growth"],
        "largest": sizes[-1]["borrowers"],
    }


def database_bytes(reg: Registry) -> int:
    """The database's size on disk (file and WAL for SQLite), to quote storage per borrower."""
    if reg.db.engine_name == "sqlite":
        path = Path(reg.db.url.removeprefix("sqlite:///"))
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    with reg.engine.connect() as c:
        return int(c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())


def bench_sweeper(mode: Mode, reg: Registry, verify_rate: float) -> dict[str, Any]:
    policy = Policy(retention_days_after_settlement=30)
    clearer = Clearer(reg.material, policy)
    sessions = make_session_factory(reg.engine)
    rates = []
    start = 50_000_000
    for run in range(mode.repeats):
        bulk_load(
            reg.engine,
            reg.material,
            reg.institutions,
            start=start + run * mode.sweep_records,
            count=mode.sweep_records,
            readable_every=1,
            settled_days_ago=60,
        )
        started = time.perf_counter()
        report = clearer.sweep(sessions, dt.datetime.now(dt.UTC))
        took = time.perf_counter() - started
        cleared = report.cleared.get("retention", 0)
        assert cleared == mode.sweep_records, report
        rates.append(cleared / took)
    rate = median(rates)
    return {
        "records_per_s": rate,
        "runs": rates,
        "records_per_run": mode.sweep_records,
        "ed25519_verify_per_s": verify_rate,
        "target": TARGETS["sweeper"],
        "met": rate >= TARGETS["sweeper"],
    }


# --- plot ----------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for engine, data in results.get("inquiry", {}).items():
        xs = [s["borrowers"] for s in data["sizes"]]
        left.plot(xs, [s["p50_ms"] for s in data["sizes"]], "o-", label=f"{engine} p50")
        left.plot(xs, [s["p99_ms"] for s in data["sizes"]], "s--", label=f"{engine} p99")
    left.axhline(TARGETS["inquiry_p99_ms"], color="red", lw=0.8, label="p99 target 25 ms")
    left.set_xscale("log")
    left.set_xlabel("borrowers loaded")
    left.set_ylabel("inquiry latency over HTTP (ms)")
    left.set_title("Inquiry latency against data size")
    left.legend(fontsize=8)
    for engine, data in results.get("batch", {}).items():
        xs = [max(r["stored_before"], 1) for r in data["runs"]]
        right.plot(xs, [r["reports_per_s"] for r in data["runs"]], "o-", label=f"batch {engine}")
        right.axhline(data["target"], ls=":", lw=0.8, label=f"batch target {engine}")
    for engine, data in results.get("bare_endpoint", {}).items():
        right.axhline(data["requests_per_s"], ls="--", lw=0.8, label=f"bare endpoint {engine}")
    for engine, data in results.get("single_report", {}).items():
        right.axhline(data["reports_per_s"], ls="-.", lw=0.8, label=f"single report {engine}")
    right.set_yscale("log")
    right.set_xlabel("reports already stored")
    right.set_ylabel("per second")
    right.set_title("Intake throughput against data size")
    right.legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(
        f"{results['mode']} run, {m['nproc']} x {m['cpu']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------


BENCHMARKS = ("single", "batch", "sweeper", "inquiry")


def run(
    mode: Mode, engines: list[str], out: Path, only: tuple[str, ...] = BENCHMARKS
) -> dict[str, Any]:
    began = time.perf_counter()
    pg = postgres_version()
    if "postgresql" in engines and pg is None:
        say("!! PostgreSQL is not reachable: its benchmarks are skipped")
        engines = [e for e in engines if e != "postgresql"]
    results: dict[str, Any] = {
        "mode": mode.name,
        "settings": asdict(mode),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(pg),
        "targets": TARGETS,
        "bare_endpoint": {},
        "single_report": {},
        "batch": {},
        "inquiry": {},
        "sweeper": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    databases: list[Database] = []
    try:
        verify = bench_verify_loop(mode)
        results["ed25519_verify_per_s"] = verify
        say(f"ed25519 verify loop (baseline): {verify:,.0f} verifications/s")
        for engine in engines:
            say(f"== {engine}")
            base_db = new_database(engine, workdir, "baseline")
            databases.append(base_db)
            db = new_database(engine, workdir, "registry")
            databases.append(db)
            reg = Registry.create(db, workdir)
            with bare_server(mode, base_db, workdir) as bare_load:
                bare = bench_bare_endpoint(mode, bare_load)
                results["bare_endpoint"][engine] = bare
                say(
                    f"  bare endpoint (baseline): {bare['requests_per_s']:,.0f} requests/s, "
                    f"p50 {bare['p50_ms']:.1f} ms"
                )
                if "single" in only:
                    single = bench_single(mode, reg, workdir, bare_load)
                    results["single_report"][engine] = single
                    say(
                        f"  single signed report over HTTP: {single['reports_per_s']:,.0f}/s = "
                        f"{single['ratio']:.2f} x bare endpoint, median of run-by-run ratios "
                        f"{[round(r, 2) for r in single['ratios']]} (target >= "
                        f"{TARGETS['single_ratio']})"
                    )
            if "batch" in only:
                batch = bench_batch(mode, reg, workdir, bare["requests_per_s"])
                results["batch"][engine] = batch
                say(
                    f"  batch intake: {batch['reports_per_s']:,.0f} reports/s "
                    f"({batch['ratio_to_bare_endpoint']:.2f} x bare endpoint requests/s; "
                    f"target >= {batch['target']:,.0f}/s; {batch['failed_batches']} batches failed)"
                )
            if "sweeper" in only:
                sweeper = bench_sweeper(mode, reg, verify)
                results["sweeper"][engine] = sweeper
                say(
                    f"  sweeper: {sweeper['records_per_s']:,.0f} records/s "
                    f"(target >= 5,000; ed25519 verify loop {verify:,.0f}/s)"
                )
            if "inquiry" in only:
                say("  inquiries (account_review, one client, sequential):")
                inquiry = bench_inquiries(mode, reg, workdir, bare["p50_ms"])
                results["inquiry"][engine] = inquiry
                say(
                    f"  inquiry at {inquiry['largest']:,}: p99 "
                    f"{inquiry['sizes'][-1]['p99_ms']:.1f} ms (target <= 25), p50 growth "
                    f"{inquiry['p50_growth']:.2f} x (target <= 1.5); bare endpoint p50 "
                    f"{bare['p50_ms']:.1f} ms"
                )
            reg.engine.dispose()
            save(results, out, began)  # after each engine: a later failure keeps these
    finally:
        for database in databases:
            try:
                database.drop()
            except psycopg.Error as exc:
                say(f"!! could not drop a benchmark database: {exc}")
        logs = Path(tempfile.gettempdir()) / f"registry-bench-logs-{mode.name}"
        logs.mkdir(exist_ok=True)
        for log in workdir.glob("*.log"):
            shutil.copy(log, logs / log.name)
        say(f"server logs: {logs}")
        shutil.rmtree(workdir, ignore_errors=True)
    save(results, out, began)
    say(f"results: {out / (mode.name + '.json')}, plot: {out / (mode.name + '.png')}")
    say(f"took {results['duration_s']:.0f} s")
    return results


def save(results: dict[str, Any], out: Path, began: float) -> None:
    results["duration_s"] = round(time.perf_counter() - began, 1)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    name = results["mode"]
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    plot(results, out / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description="Registry benchmarks (see bench/run.py)")
    parser.add_argument("--full", action="store_true", help="the full run (long)")
    parser.add_argument(
        "--engines", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (baselines always run): {','.join(BENCHMARKS)}",
    )
    args = parser.parse_args()
    only = tuple(name for name in args.only.split(",") if name)
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    run(FULL if args.full else SHORT, args.engines.split(","), args.out, only)


if __name__ == "__main__":
    main()
