"""Benchmark of the scoring API: the real server (one uvicorn worker) under load from a second process.

Measures, on 127.0.0.1:
- single-customer throughput, complete records and records with missing values (many keep-alive connections);
- latency percentiles with ONE client (sequential requests);
- batch throughput (customers/s) with 10,000-customer requests;
- a trivial route (/healthz) as the framework's ceiling on this machine;
- the server's CPU time (every thread, the decision log's included) per request and per batch: on a machine
  shared with other work it moves far less than the throughput figures;
for this checkout with its decision log on (the default, ``full``: every answer recorded as Parquet beside the
warehouse) and off (``--decisions off``), and prints them next to the same measurements of the previous commit
(``--against REV``, default ``HEAD~1``: a git worktree of it beside this checkout, its own server trained on the
same data), taken in turn in every round. ``--log-modes full,hash-only,off`` chooses this checkout's variants.

    .venv/bin/python benchmarks/bench_api.py [--train-rows 5000] [--duration 5] [--connections 16] [--repeat 3]
        [--against HEAD~1]

Targets (issue #5): >= 2,000 req/s complete, >= 300 req/s with gaps, p99 <= 5 ms one client, batch >= 50,000/s.
With 16 connections, one-customer requests that reach the server together are scored as one batch (see
``segmentation_pipeline/api/batching.py``): that is part of what the req/s figures measure; the one-client
latency figure is never batched.
The load generator is pure Python (selectors over raw keep-alive sockets, pre-built requests) so that one client
process can drive far more than the targets; it is pinned to another core than the server when possible.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import pickle
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import describe, previous_tree, python_env  # noqa: E402  (the benchmarks' own helper)

API_KEY = "bench-key-0123456789abcdef"
NUMERIC_FIELDS = ("ExpVolume", "ActualVolume", "CashUsage", "NumAlerts", "NonFacetoFaceUsage", "onlineFTusage")


# --- data ---------------------------------------------------------------------------------------------------------


def customer_records(n: int, seed: int) -> list[dict[str, object]]:
    """Synthetic customers as an onboarding system would push them: JSON numbers, ISO dates, channel lists."""
    from segmentation_pipeline.synthetic import generate_export

    frame = generate_export(n, seed=seed, channel_rows=False).to_frame()
    frame = frame.loc[:, ~frame.columns.duplicated()]
    records = []
    for row in frame.to_dict("records"):
        record: dict[str, object] = {}
        for key, value in row.items():
            if value is None or value is pd.NaT or (not isinstance(value, str) and pd.isna(value)) or value == "":
                continue
            if hasattr(value, "isoformat"):
                value = value.isoformat()[:10]
            elif isinstance(value, np.integer):
                value = int(value)
            elif isinstance(value, np.floating):
                value = float(value)
            if key == "SubscribedChannels":
                value = [part.strip() for part in str(value).split(",") if part.strip()]
            record[str(key)] = value
        records.append(record)
    return records


def complete_and_gappy(records: list[dict[str, object]], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Records with every numeric field, and copies with 1-3 numeric fields removed (they need the imputer)."""
    rng = np.random.default_rng(seed)
    complete = [r for r in records if all(f in r for f in NUMERIC_FIELDS) and "DateofBirth" in r]
    gappy = []
    for record in records:
        copy = dict(record)
        for name in rng.choice(NUMERIC_FIELDS, size=int(rng.integers(1, 4)), replace=False):
            copy.pop(str(name), None)
        gappy.append(copy)
    return complete, gappy


def http_request(port: int, path: str, body: object | None = None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    method = "GET" if body is None else "POST"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


# --- load generator (runs in its own process) -----------------------------------------------------------------------


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def _load(port: int, requests: list[bytes], connections: int, duration: float, warmup: float, out: mp.Queue) -> None:
    """Keep ``connections`` keep-alive connections busy for warmup + duration; report what the window saw."""
    _pin(1)
    selector = selectors.DefaultSelector()
    states = []
    for i in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = {"sock": sock, "buf": bytearray(), "sent": 0.0, "next": i}
        states.append(state)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    start = time.perf_counter()
    window_start, end = start + warmup, start + warmup + duration
    n_requests = len(requests)
    total = 0  # every answer, warm-up included (the server's CPU time is read around the whole load)

    def send(state: dict) -> None:
        state["sent"] = time.perf_counter()
        state["sock"].setblocking(True)
        state["sock"].sendall(requests[state["next"] % n_requests])  # blocking send, then wait for the answer
        state["sock"].setblocking(False)
        state["next"] += connections

    for state in states:
        selector.register(state["sock"], selectors.EVENT_READ, state)
        send(state)
    open_connections = connections
    while open_connections:
        for key, _ in selector.select(timeout=5):
            state = key.data
            chunk = state["sock"].recv(1 << 20)
            if not chunk:
                raise RuntimeError("server closed the connection")
            buf = state["buf"]
            buf += chunk
            header_end = buf.find(b"\r\n\r\n")
            if header_end < 0:
                continue
            headers = bytes(buf[:header_end]).lower()
            at = headers.find(b"content-length:")
            length = int(headers[at + 15 : headers.find(b"\r\n", at)]) if at >= 0 else 0
            if len(buf) < header_end + 4 + length:
                continue
            now = time.perf_counter()
            total += 1
            if now >= window_start and state["sent"] >= window_start:
                latencies.append(now - state["sent"])
                statuses[int(headers[9:12])] += 1
            del buf[: header_end + 4 + length]
            if now < end:
                send(state)
            else:
                selector.unregister(state["sock"])
                state["sock"].close()
                open_connections -= 1
    out.put({"latencies": latencies, "statuses": dict(statuses), "seconds": duration, "total": total})


def run_load(port: int, requests: list[bytes], *, connections: int, duration: float, warmup: float = 1.0) -> dict:
    """Load from a second process; returns req/s, latency percentiles (ms) and status counts."""
    queue: mp.Queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=_load, args=(port, requests, connections, duration, warmup, queue))
    process.start()
    result = queue.get(timeout=warmup + duration + 120)
    process.join()
    latencies = np.array(result["latencies"]) * 1000
    return {
        "rps": len(latencies) / result["seconds"],
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p99": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
        "statuses": result["statuses"],
        "total": result["total"],
    }


def run_batches(port: int, bodies: list[bytes], *, connections: int, batch: int, duration: float) -> dict:
    """Batch requests from ``connections`` threads of a second process (http.client is fine at this rate)."""
    script = f"""
import http.client, json, os, pickle, sys, threading, time
if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
    os.sched_setaffinity(0, {{1}})  # the other core than the server, as for the single-request load
bodies = pickle.loads(sys.stdin.buffer.read())
done, statuses, stop = [], [], time.perf_counter() + {duration}
def worker(offset):
    conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=120)
    i = offset
    while time.perf_counter() < stop:
        body = bodies[i % len(bodies)]; i += 1
        conn.request("POST", "/v1/score", body, {{"X-API-Key": "{API_KEY}", "Content-Type": "application/json"}})
        response = conn.getresponse(); response.read()
        statuses.append(response.status); done.append(time.perf_counter())
threads = [threading.Thread(target=worker, args=(i,)) for i in range({connections})]
start = time.perf_counter()
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps({{"requests": len(done), "seconds": max(done) - start, "statuses": statuses}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], input=pickle.dumps(bodies), capture_output=True, check=True
    )
    result = json.loads(completed.stdout)
    return {
        "customers_per_s": result["requests"] * batch / result["seconds"],
        "requests": result["requests"],
        "seconds_per_request": result["seconds"] / max(result["requests"], 1),
        "statuses": dict(Counter(result["statuses"])),
    }


# --- in-process -------------------------------------------------------------------------------------------------


def fast_in_process(warehouse: Path, complete: list[dict], gappy: list[dict]) -> dict[str, float]:
    """parse_records + the compiled scorer per call, in-process: what is left of a request without HTTP."""
    from segmentation_pipeline.stages.records import parse_records
    from segmentation_pipeline.warehouse import Warehouse
    from segmentation_pipeline.warehouse.models import load_model

    scorer = load_model(Warehouse(warehouse)).scorer
    out = {}
    for label, records in (("complete_us", complete), ("gappy_us", gappy)):
        start = time.perf_counter()
        for record in records[:2000]:
            scored = scorer.score(parse_records([record], reference_date=scorer.reference_date))
            scorer.reason_table(scored)
        out[label] = (time.perf_counter() - start) / min(2000, len(records)) * 1e6
    return out


# --- orchestration ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TRAIN_CHILD = """
import sys
from pathlib import Path
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import run_pipeline
summary = run_pipeline(Path(sys.argv[1]), Path(sys.argv[2]), settings=SegmentationSettings(n_init=3))
sys.exit(0 if summary.success else f"training failed: {summary.error}")
"""


def train(source: Path, warehouse: Path, tree: Path | None) -> None:
    """A warehouse trained by ``tree``'s own pipeline (None: this checkout): each serves its own model format."""
    subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(source), str(warehouse)], env=python_env(tree),
                   cwd=tree or REPO, check=True)  # fmt: skip


def start_server(warehouse: Path, port: int, tree: Path | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = python_env(tree, SEGMENTATION_API_KEYS=API_KEY)
    command = [sys.executable, "-m", "segmentation_pipeline.cli", "serve", "--port", str(port),
               "--warehouse", str(warehouse), *extra]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=tree or REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read().decode()) from None
            time.sleep(0.2)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        # Every thread of the server (affinity is per thread: the BLAS pool and the model watcher already
        # exist); threads it starts later inherit the main thread's.
        for task in Path(f"/proc/{server.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), {0})
    return server


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) the server process has used: a figure a busy machine disturbs
    far less than wall-clock throughput."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_round(port: int, pid: int, loads: dict[str, list[bytes]], args: argparse.Namespace) -> dict[str, dict]:
    out = {}
    for name, measure, count in (
        ("trivial", lambda: run_load(port, loads["health"], connections=args.connections, duration=args.duration),
         "total"),
        ("complete", lambda: run_load(port, loads["single"], connections=args.connections, duration=args.duration),
         "total"),
        ("gappy", lambda: run_load(port, loads["gaps"], connections=args.connections, duration=args.duration), "total"),
        ("one_client", lambda: run_load(port, loads["single"], connections=1, duration=args.duration), "total"),
        ("batch", lambda: run_batches(port, loads["bodies"], connections=2, batch=args.batch,
                                      duration=max(args.duration, 8)), "requests"),
    ):  # fmt: skip
        before = server_cpu(pid)
        measured = measure()
        time.sleep(1.2)  # the decision log's last flush of this load
        measured["cpu_ms"] = (server_cpu(pid) - before) / max(measured[count], 1) * 1000
        out[name] = measured
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=5_000)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every measurement (median reported)")
    parser.add_argument("--against", default="HEAD~1", help="git revision measured beside this checkout ('none')")
    parser.add_argument("--log-modes", default="full,off", help="decision-log modes of this checkout to measure")
    args = parser.parse_args()
    from segmentation_pipeline.synthetic import generate_export, write_export

    with (
        tempfile.TemporaryDirectory(prefix="bench_api_") as tmp,
        previous_tree(args.against) if args.against != "none" else contextlib.nullcontext() as tree,
    ):
        source = write_export(generate_export(args.train_rows, seed=11), Path(tmp) / "train.csv")
        checkouts = {"this": None} if tree is None else {"this": None, "previous": tree}
        warehouses = {}
        for name, checkout in checkouts.items():
            print(f"training {name} on {args.train_rows:,} synthetic customers ...", file=sys.stderr, flush=True)
            warehouses[name] = Path(tmp) / f"{name}.duckdb"
            train(source, warehouses[name], checkout)
        records = customer_records(max(args.batch, 4_000), seed=12345)
        batches = [records[: args.batch]] + [customer_records(args.batch, seed=seed) for seed in (2, 3, 4)]
        complete, gappy = complete_and_gappy(records)
        print(f"{len(complete):,} complete / {len(gappy):,} gappy request bodies", file=sys.stderr)
        # Each variant: (its checkout's warehouse, the checkout, serve's extra arguments).
        variants = {f"log {mode}": ("this", None, ("--decisions", mode)) for mode in args.log_modes.split(",")}
        if tree is not None:
            variants["previous"] = ("previous", tree, ())
        rounds: dict[str, list[dict]] = {name: [] for name in variants}
        for round_number in range(args.repeat):  # rounds, in turn: a slow spell of the machine hits every variant
            for name, (trained, checkout, extra) in variants.items():
                print(f"round {round_number + 1}/{args.repeat}: {name} ...", file=sys.stderr, flush=True)
                port = free_port()
                shutil.rmtree(Path(tmp) / f"{trained}_decisions", ignore_errors=True)  # each round from empty
                server = start_server(warehouses[trained], port, checkout, extra)
                try:
                    loads = {
                        "single": [http_request(port, "/v1/score", r) for r in complete],
                        "gaps": [http_request(port, "/v1/score", r) for r in gappy],
                        "health": [http_request(port, "/healthz")],
                        # Several distinct batches in rotation: per-text memos must not flatter the figure.
                        "bodies": [json.dumps({"customers": batch}).encode() for batch in batches],
                    }
                    rounds[name].append(measure_round(port, server.pid, loads, args))
                finally:
                    server.terminate()
                    server.wait(timeout=30)
        fast = fast_in_process(warehouses["this"], complete, gappy)

    bad = {
        f"{name} {k} (round {i + 1})": v["statuses"]
        for name, results in rounds.items() for i, measured in enumerate(results) for k, v in measured.items()
        if set(v["statuses"]) - {200}
    }  # fmt: skip

    def figures(name: str, measure: str, key: str) -> list[float]:
        return [results[measure][key] for results in rounds[name]]

    cpus = os.cpu_count()
    print(f"\nscoring API, one uvicorn worker, load from a second process, 127.0.0.1, {cpus} CPUs, "
          f"median of {args.repeat} rounds (range over the rounds)")  # fmt: skip
    if "previous" in rounds:
        print(f"previous = {describe(args.against)}")
    print(f"{'measure':<38}" + "".join(f"{name:>12}{'range':>20}" for name in rounds) + f"{'target':>11}")
    rows = [
        ("complete customers, req/s", "complete", "rps", ">= 2,000"),
        ("customers with missing values, req/s", "gappy", "rps", ">= 300"),
        ("p99 latency, one client, ms", "one_client", "p99", "<= 5"),
        ("batch, customers/s", "batch", "customers_per_s", ">= 50,000"),
        ("server CPU per complete request, ms", "complete", "cpu_ms", ""),
        (f"server CPU per batch of {args.batch:,}, ms", "batch", "cpu_ms", ""),
        ("p50 latency, one client, ms", "one_client", "p50", ""),
        (f"p99 latency, {args.connections} connections, ms", "complete", "p99", ""),
        ("trivial route /healthz, req/s", "trivial", "rps", ""),
        (f"batch request of {args.batch:,}, s", "batch", "seconds_per_request", ""),
    ]
    for label, measure, key, target in rows:
        fmt = "{:,.3f}" if label.endswith(", s") else "{:,.2f}" if label.endswith("ms") else "{:,.0f}"
        line = f"{label:<38}"
        for name in rounds:
            measured = figures(name, measure, key)
            spread = f"{fmt.format(min(measured))}-{fmt.format(max(measured))}"
            line += f"{fmt.format(float(np.median(measured))):>12}{spread:>20}"
        print(line + f"{target:>11}")
    print(f"{'in-process, complete, us (this)':<38}{fast['complete_us']:>10.1f}")
    print(f"{'in-process, with gaps, us (this)':<38}{fast['gappy_us']:>10.1f}")
    if bad:
        print(f"NON-200 RESPONSES: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
