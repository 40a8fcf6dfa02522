"""``make bench``: how fast a message reaches the notebook, and how much the sandbox holds.

Prints a readable table, then one JSON object on the last line. Every figure is measured here, on
this machine, with the client load on the same cores as the sandbox (as in a workshop laptop).

    python bench/run.py                 # everything
    python bench/run.py --only latency  # one part: import, ready, latency, throughput, notebooks
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, make_world, percentile, start_sandbox_process

from tiledesk_tutorial.listener import WebhookListener

TARGETS = {
    "webhook_p50_ms": ("<=", 3),
    "webhook_p99_ms": ("<=", 15),
    "throughput_msgs_per_s": (">=", 1000),
    "lost": ("<=", 0),
    "notebooks_s": ("<=", 30),
    "sandbox_ready_s": ("<=", 1),
    "import_s": ("<=", 0.3),
}


def measure_import(runs: int = 7) -> float:
    """Median wall time of ``python -c "import tiledesk_tutorial"`` in a fresh interpreter."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tiledesk_tutorial"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_ready(runs: int = 5) -> float:
    """Median time from starting the sandbox process to its first 200."""
    times = []
    for _ in range(runs):
        sandbox = start_sandbox_process()
        times.append(sandbox.ready_s)
        sandbox.stop()
    return statistics.median(times)


def measure_latency(messages: int = 1000, warmup: int = 50, polls: int = 20) -> dict[str, float]:
    """Visitor POST start → the listener holds the message.create event; and a polling baseline."""
    sandbox = start_sandbox_process()
    listener = WebhookListener(port=0, max_events=messages + warmup + 10).start()
    try:
        world = make_world(sandbox.url)
        subscription = world.subscribe(listener.url)
        listener.add_secret(subscription["secret"])
        session = requests.Session()
        token = world.visitor(session)
        rid = world.request_id()
        path = f"{sandbox.url}/{world.project_id}/requests/{rid}/messages"
        headers = {"Authorization": token}
        latencies = []
        for n in range(warmup + messages):
            text = f"latency {n}"
            started = time.time()
            session.post(path, json={"text": text}, headers=headers, timeout=10).raise_for_status()
            [event] = listener.wait_for(lambda e, text=text: e.text == text, timeout=10)
            if n >= warmup:
                latencies.append((event.received_at.timestamp() - started) * 1000)
            # wait_for scans every event kept; with hundreds kept, that scan would compete with
            # the listener's thread for the interpreter while the next delivery arrives.
            listener.clear()
        poll_latencies = _polling_baseline(session, sandbox.url, world, token, polls)
    finally:
        listener.stop()
        sandbox.stop()
    p50 = percentile(latencies, 0.50)
    return {
        "webhook_p50_ms": round(p50, 2),
        "webhook_p99_ms": round(percentile(latencies, 0.99), 2),
        "webhook_max_ms": round(max(latencies), 2),
        "polling_p50_ms": round(percentile(poll_latencies, 0.50), 1),
        "polling_to_webhook_ratio": round(percentile(poll_latencies, 0.50) / p50, 1),
    }


def _polling_baseline(session, url, world, token, count) -> list[float]:
    """A learner without webhooks: GET the messages once a second until the new one shows up."""
    rid = world.request_id()
    path = f"{url}/{world.project_id}/requests/{rid}/messages"
    headers = {"Authorization": token}
    seen_at: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        poller = requests.Session()
        while not stop.is_set():
            for message in poller.get(path, headers=headers, timeout=10).json():
                seen_at.setdefault(message.get("text", ""), time.time())
            stop.wait(1.0)
        poller.close()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    sent_at = {}
    for n in range(count):
        time.sleep(0.37)  # not a multiple of the poll interval: messages land all over it
        text = f"poll {n}"
        sent_at[text] = time.time()
        session.post(path, json={"text": text}, headers=headers, timeout=10).raise_for_status()
    deadline = time.time() + 5
    while len([t for t in sent_at if t in seen_at]) < count and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    return [(seen_at[t] - sent_at[t]) * 1000 for t in sent_at if t in seen_at]


def _sender(url: str, project_id: str, token: str, seconds: float, start_at: float, out) -> None:
    """One participant sending messages back to back over a kept-alive connection.

    It uses the standard library's http.client rather than requests: the load generator should
    spend as little of the shared two cores as possible, so that what is measured is the sandbox.
    """
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    rid = f"support-group-{project_id}-{multiprocessing.current_process().pid:032x}"
    path = f"/{project_id}/requests/{rid}/messages"
    headers = {"Authorization": token, "Content-Type": "application/json"}
    accepted, errors, n = [], 0, 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        n += 1
        try:
            connection.request("POST", path, json.dumps({"text": f"load {n}"}), headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            continue
        if response.status == 200:
            accepted.append(json.loads(body)["_id"])
        else:
            errors += 1
    connection.close()
    out.put((accepted, errors))


def measure_throughput(senders: int = 8, seconds: float = 10.0, grace: float = 30.0) -> dict:
    """Messages accepted per second from ``senders`` concurrent processes; deliveries lost."""
    sandbox = start_sandbox_process()
    listener = WebhookListener(port=0, max_events=200_000).start()
    try:
        world = make_world(sandbox.url)
        subscription = world.subscribe(listener.url)
        listener.add_secret(subscription["secret"])
        session = requests.Session()
        tokens = [world.visitor(session, f"Load {n}") for n in range(senders)]
        out: multiprocessing.Queue = multiprocessing.Queue()
        start_at = time.time() + 1.0
        processes = [
            multiprocessing.Process(
                target=_sender, args=(sandbox.url, world.project_id, t, seconds, start_at, out)
            )
            for t in tokens
        ]
        for process in processes:
            process.start()
        results = [out.get(timeout=seconds + 60) for _ in processes]
        for process in processes:
            process.join(10)
        accepted = [message_id for ids, _ in results for message_id in ids]
        errors = sum(e for _, e in results)
        deadline = time.time() + grace
        wanted = set(accepted)
        while time.time() < deadline:
            got = {e.message_id for e in listener.events}
            if wanted <= got:
                break
            time.sleep(0.2)
        got = {e.message_id for e in listener.events}
        rss = sandbox.rss_mb()
    finally:
        listener.stop()
        sandbox.stop()
    return {
        "throughput_msgs_per_s": round(len(accepted) / seconds, 1),
        "lost": len(wanted - got),
        "send_errors": errors,
        "sandbox_rss_mb": round(rss, 1),
    }


def measure_notebooks() -> float | None:
    """Wall time to execute every tutorial notebook headless against a fresh sandbox."""
    try:
        from notebook_runner import run_all_notebooks
    except ImportError:
        return None
    return run_all_notebooks()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=["import", "ready", "latency", "throughput", "notebooks"], default=None
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    results: dict[str, float | int | None] = {}
    parts = {
        "import": lambda: results.update(import_s=round(measure_import(), 3)),
        "ready": lambda: results.update(sandbox_ready_s=round(measure_ready(), 3)),
        "latency": lambda: results.update(measure_latency(messages=args.messages)),
        "throughput": lambda: results.update(measure_throughput(seconds=args.seconds)),
        "notebooks": lambda: results.update(notebooks_s=measure_notebooks()),
    }
    for name, run in parts.items():
        if args.only in (None, name):
            print(f"measuring {name}...", file=sys.stderr, flush=True)
            run()
    print_table(results)
    print(json.dumps(results, separators=(",", ":")))
    return 0


def print_table(results: dict) -> None:
    """A readable table of every figure, with its target when the issue named one."""
    print(f"{'measure':<28}{'value':>12}  {'target':<10}{'met':>4}")
    print("-" * 56)
    for key, value in results.items():
        target = TARGETS.get(key)
        if target and value is not None:
            op, bound = target
            met = value <= bound if op == "<=" else value >= bound
            print(f"{key:<28}{value!s:>12}  {op + ' ' + str(bound):<10}{'yes' if met else 'NO':>4}")
        else:
            print(f"{key:<28}{value!s:>12}")


if __name__ == "__main__":
    sys.exit(main())
