"""``make bench``: how fast a message reaches the notebook, and how much the sandbox holds.

Prints a readable table, then one JSON object on the last line. Every figure is measured here, on
this machine, with the client load on the same cores as the sandbox (as in a workshop laptop).
Absolute figures differ up to 3x between machines of this kind, so the run first measures a floor
(``floor_ms``: a POST round trip to a server that does nothing, on the sandbox's HTTP stack) and
the targets are multiples of it. Calls are timed with a bare kept-alive ``http.client``
connection; the learner's view through ``TiledeskClient`` has its own keys (``client_*``).

    python bench/run.py                 # everything
    python bench/run.py --only latency  # one part: import, ready, floor, listener, latency,
                                        # throughput, room, listing, uploads, notebooks
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, make_world, percentile, start_sandbox_process

from tiledesk_tutorial import Event, RealtimeFeed, TiledeskClient, WebhookListener, make_delivery
from tiledesk_tutorial.sandbox.room import Room
from tiledesk_tutorial.sandbox.store import Store

# Fixed targets; those in multiples of the floor are checked in print_table.
TARGETS = {
    "throughput_msgs_per_s": (">=", 1000),
    "lost": ("<=", 0),
    "room_lost": ("<=", 0),
    "notebooks_s": ("<=", 30),
    "sandbox_ready_s": ("<=", 1),
    "import_s": ("<=", 0.3),
}
FLOOR_TARGETS = {
    "webhook_p50_ms": 4,
    "realtime_p50_ms": 3,
    "realtime_bare_p50_ms": 3,
}  # N x floor_ms
P99_OVER_P50 = {
    "webhook_p99_ms": "webhook_p50_ms",
    "realtime_p99_ms": "realtime_p50_ms",
    "realtime_bare_p99_ms": "realtime_bare_p50_ms",
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


class Bare:
    """A kept-alive ``http.client`` connection: the cheapest client, to time the server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: dict, headers: dict) -> tuple[int, bytes]:
        """POST JSON; (status, body)."""
        data = json.dumps(body).encode()
        self.connection.request("POST", path, data, {**headers, "Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def measure_floor(rounds: int = 3000, warmup: int = 300) -> dict[str, float]:
    """p50 of a POST round trip to a server that does nothing (bench/floor.py), same stack."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("floor.py"))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        url = process.stdout.readline().strip()
        client = _connected(url)
        times = []
        body = {"text": "floor"}
        for n in range(warmup + rounds):
            started = time.perf_counter()
            client.post("/p/requests/r/messages", body, {"Authorization": "JWT x"})
            if n >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        process.stdout.close()
    return {"floor_ms": round(percentile(times, 0.50), 3)}


def _connected(url: str) -> Bare:
    deadline = time.time() + 10
    while True:
        try:
            return Bare(url)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.01)


def measure_latency(messages: int = 1000, warmup: int = 50, polls: int = 20) -> dict[str, float]:
    """A visitor's POST until the notebook holds the message: over the Realtime API (the
    package's ``RealtimeFeed``, and a bare ``websockets`` client subscribed to the conversation),
    over a webhook (the package's ``WebhookListener``), the webhook through ``TiledeskClient``,
    and a polling baseline."""
    sandbox = start_sandbox_process()
    listener = WebhookListener(port=0, max_events=messages + warmup + 10).start()
    try:
        world = make_world(sandbox.url)
        session = requests.Session()
        token = world.visitor(session)
        headers = {"Authorization": token}
        bare = Bare(sandbox.url)
        results = {}

        # 1. Realtime: no subscription yet, so no webhook competes with the frame. First the
        # package's RealtimeFeed (what a notebook and `listen` use), then a bare `websockets`
        # client subscribed to the conversation, the cheapest possible, for comparison.
        rid = world.request_id()
        path = f"/{world.project_id}/requests/{rid}/messages"
        bare.post(path, {"text": "opens the conversation"}, headers)
        feed = _feed_latencies(sandbox.url, world, lambda t: bare.post(path, {"text": t}, headers),
                               messages, warmup)  # fmt: skip
        results.update(
            realtime_p50_ms=round(percentile(feed, 0.50), 3),
            realtime_p99_ms=round(percentile(feed, 0.99), 3),
        )
        frames = _RealtimeClient(sandbox.url, world.agent_token, world.project_id, rid)
        realtime = []
        for n in range(warmup + messages):
            text = f"realtime {n}"
            started = time.perf_counter()
            status, _ = bare.post(path, {"text": text}, headers)
            assert status == 200, status
            arrived = frames.wait_for(text)
            if n >= warmup:
                realtime.append((arrived - started) * 1000)
        frames.close()
        results.update(
            realtime_bare_p50_ms=round(percentile(realtime, 0.50), 3),
            realtime_bare_p99_ms=round(percentile(realtime, 0.99), 3),
        )

        # 2. Webhooks, timed with the same bare client; then the listener alone.
        subscription = world.subscribe(listener.url)
        listener.add_secret(subscription["secret"])
        webhook = _webhook_latencies(
            listener, lambda text: bare.post(path, {"text": text}, headers), messages, warmup
        )
        results.update(
            webhook_p50_ms=round(percentile(webhook, 0.50), 3),
            webhook_p99_ms=round(percentile(webhook, 0.99), 3),
            webhook_max_ms=round(max(webhook), 2),
        )
        alone = _listener_alone(listener, subscription, messages, warmup)
        results.update(
            listener_alone_p50_ms=round(percentile(alone, 0.50), 3),
            listener_share_of_webhook=round(percentile(alone, 0.50) / percentile(webhook, 0.50), 2),
        )

        # 3. The learner's view: the package's client (requests, retries, error handling).
        client = TiledeskClient(sandbox.url, token=token, project_id=world.project_id)
        learner = _webhook_latencies(
            listener, lambda text: client.send_message(rid, text), messages // 2, warmup
        )
        results.update(
            client_webhook_p50_ms=round(percentile(learner, 0.50), 3),
            client_webhook_p99_ms=round(percentile(learner, 0.99), 3),
        )

        # 4. The same webhooks with the listener's app on werkzeug's development server, what the
        # listener ran on before waitress: the before-and-after in one run.
        werkzeug = _webhook_on_werkzeug(world, subscription, bare, path, headers, messages, warmup)
        results.update(
            webhook_werkzeug_p50_ms=round(percentile(werkzeug, 0.50), 3),
            webhook_werkzeug_p99_ms=round(percentile(werkzeug, 0.99), 3),
        )
        bare.close()
        poll_latencies = _polling_baseline(session, sandbox.url, world, token, polls)
    finally:
        listener.stop()
        sandbox.stop()
    results.update(
        polling_p50_ms=round(percentile(poll_latencies, 0.50), 1),
        polling_to_webhook_ratio=round(
            percentile(poll_latencies, 0.50) / results["webhook_p50_ms"], 1
        ),
    )
    return results


def _feed_latencies(url: str, world, send, messages: int, warmup: int) -> list[float]:
    """POST start until the package's ``RealtimeFeed`` holds the message.create event."""
    arrivals: queue.Queue[Event] = queue.Queue()
    feed = RealtimeFeed(
        token=world.agent_token,
        api_url=url,
        url="ws" + url.removeprefix("http") + "/",
        project_id=world.project_id,
        max_events=100,
    )
    feed.on_event(lambda event: arrivals.put(event) if event.event == "message.create" else None)
    feed.start()
    latencies = []
    try:
        for n in range(warmup + messages):
            text = f"feed {n}"
            started = time.time()
            status, _ = send(text)
            assert status == 200, status
            while True:
                event = arrivals.get(timeout=10)
                if event.text == text:
                    break
            if n >= warmup:
                # received_at: when the feed turned the frame into an event (before any callback).
                latencies.append((event.received_at.timestamp() - started) * 1000)
    finally:
        feed.stop()
    return latencies


class _RealtimeClient:
    """A ``websockets`` client subscribed to one conversation; timestamps each frame's arrival."""

    def __init__(self, url: str, token: str, project_id: str, rid: str) -> None:
        ws_url = "ws" + url.removeprefix("http") + "/?token=" + quote(token)
        self.socket = connect(ws_url, ping_interval=None).__enter__()
        topic = f"/{project_id}/requests/{rid}/messages"
        self.socket.send(json.dumps({"action": "subscribe", "payload": {"topic": topic}}))
        self.arrivals: queue.Queue[tuple[float, dict]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for text in self.socket:
                self.arrivals.put((time.perf_counter(), json.loads(text)))
        except Exception:  # closed
            return

    def wait_for(self, text: str, timeout: float = 10) -> float:
        """When the frame carrying the message ``text`` arrived (perf_counter seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            arrived, frame = self.arrivals.get(timeout=max(0.01, deadline - time.monotonic()))
            message = frame.get("payload", {}).get("message")
            if isinstance(message, dict) and message.get("text") == text:
                return arrived

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()
        self.thread.join(5)


def _webhook_latencies(listener, send, messages: int, warmup: int) -> list[float]:
    """POST start until the listener holds the message.create event, for each message."""
    latencies = []
    for n in range(warmup + messages):
        text = f"webhook {n} {time.time()}"
        started = time.time()
        send(text)
        [event] = listener.wait_for(lambda e, text=text: e.text == text, timeout=10)
        if n >= warmup:
            latencies.append((event.received_at.timestamp() - started) * 1000)
        # wait_for scans every event kept; with hundreds kept, that scan would compete with
        # the listener's thread for the interpreter while the next delivery arrives.
        listener.clear()
    return latencies


def _webhook_on_werkzeug(world, subscription, bare, path, headers, messages, warmup) -> list[float]:
    """Webhook latencies with the listener's Flask app served by werkzeug instead of waitress
    (the sandbox delivers to it alone: the first subscription is deleted first)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: object) -> None:
            pass

    auth = {"Authorization": world.agent_token}
    base = f"{world.url}/{world.project_id}/subscriptions"
    requests.delete(f"{base}/{subscription['_id']}", headers=auth, timeout=10).raise_for_status()
    before = WebhookListener(max_events=messages + warmup + 10)  # its app only, served below
    httpd = make_server("127.0.0.1", 0, before.app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        target = world.subscribe(f"http://127.0.0.1:{httpd.port}{before.path}")
        before.add_secret(target["secret"])
        return _webhook_latencies(
            before, lambda text: bare.post(path, {"text": text}, headers), messages, warmup
        )
    finally:
        httpd.shutdown()
        thread.join(5)


def measure_listener(deliveries: int = 2000, warmup: int = 200) -> dict[str, float]:
    """The listener's app on werkzeug, cheroot and waitress, side by side: a delivery's round trip
    over one kept-alive ``http.client`` connection (werkzeug closes it after every answer, so the
    client reconnects), and the server process's CPU time per delivery."""
    import psutil

    secret = "bench-listener-secret-0123456789abcdef0123"  # noqa: S105 - made up for the bench
    results: dict[str, float] = {}
    for server in ("werkzeug", "cheroot", "waitress"):
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("listener_servers.py")), server, secret],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            url = process.stdout.readline().strip()
            if not url:  # cheroot is not a dependency of the package: measured when installed
                continue
            path = urlsplit(url).path
            client = _connected(url)
            watched = psutil.Process(process.pid)
            times = []
            for n in range(warmup + deliveries):
                if n == warmup:
                    cpu = watched.cpu_times()
                payload = {"_id": f"{n:024x}", "text": f"listener {n}", "sender": "v"}
                delivery = make_delivery(payload, secret)
                started = time.perf_counter()
                status, _ = client.post(path, delivery.body, {"x-hook-secret": secret})
                times.append((time.perf_counter() - started) * 1000)
                assert status == 200, (server, status)
            spent = watched.cpu_times()
            client.close()
            cpu_s = (spent.user - cpu.user) + (spent.system - cpu.system)
            measured = times[warmup:]
            results[f"listener_{server}_p50_ms"] = round(percentile(measured, 0.50), 3)
            results[f"listener_{server}_p99_ms"] = round(percentile(measured, 0.99), 3)
            results[f"listener_{server}_cpu_us"] = round(cpu_s / deliveries * 1e6, 1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
            process.stdout.close()
    return results


def _listener_alone(listener, subscription: dict, messages: int, warmup: int) -> list[float]:
    """A delivery POSTed straight to the listener (no sandbox) until it holds the event."""
    client = Bare(listener.url)
    path = urlsplit(listener.url).path or "/"
    hook = {key: subscription[key] for key in ("_id", "target", "event", "id_project")}
    latencies = []
    for n in range(warmup + messages):
        text = f"alone {n}"
        payload = {
            "_id": f"{n:024x}",
            "text": text,
            "id_project": subscription["id_project"],
            "sender": "v",
            "recipient": "r",
            "createdAt": "2026-01-01T00:00:00.000Z",
        }
        delivery = make_delivery(payload, subscription["secret"], hook=hook)
        started = time.time()
        headers = {k: v for k, v in delivery.headers.items() if k != "Content-Type"}
        client.post(path, delivery.body, headers)
        [event] = listener.wait_for(lambda e, text=text: e.text == text, timeout=10)
        if n >= warmup:
            latencies.append((event.received_at.timestamp() - started) * 1000)
        listener.clear()
    client.close()
    return latencies


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


def _learner_sender(url: str, learners: list, seconds: float, every: float, start_at: float, out):
    """Several learners in one process, each sending a message every ``every`` seconds, at its
    own moment in the period (a room does not type in step)."""
    connections: dict[int, Bare] = {}
    sent: list[tuple[str, float, int]] = []
    errors = 0
    rounds = int(seconds / every)
    schedule = sorted(
        (start_at + r * every + offset, learner, project_id, rid, token)
        for r in range(rounds)
        for learner, offset, project_id, rid, token in learners
    )
    for n, (due, learner, project_id, rid, token) in enumerate(schedule):
        time.sleep(max(0.0, due - time.time()))
        connection = connections.get(learner) or Bare(url)
        connections[learner] = connection
        started = time.time()
        try:
            status, body = connection.post(
                f"/{project_id}/requests/{rid}/messages",
                {"text": f"room {n}"},
                {"Authorization": token},
            )
        except (OSError, http.client.HTTPException):
            errors += 1
            connections.pop(learner).close()
            continue
        if status == 200:
            sent.append((json.loads(body)["_id"], started, learner))
        else:
            errors += 1
    for connection in connections.values():
        connection.close()
    out.put((sent, errors))


class _SleepingLaptop:
    """A webhook target that accepts connections and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                return

    def stop(self) -> None:
        self.server.close()
        for connection in self.accepted:
            connection.close()


def measure_room(
    learners: int = 100,
    asleep: int = 10,
    seconds: float = 8.0,
    every: float = 1.0,
    repeats: int = 3,
) -> dict:
    """A workshop room in room mode, the presenter's room view open: each learner's visitor
    writes to their own project, each webhook goes to that learner's laptop; each learner sends a
    message every ``every`` seconds (a busy room). The p99 of every learner's webhooks with every
    laptop awake (``room_awake_*``), and of the healthy learners' with ``asleep`` laptops that
    accept connections and never answer (``room_healthy_*``): the two alternate ``repeats`` times
    and each figure is the median of its runs (one stall of the shared machine does not decide).
    Then the cost of one room view update for that room (``room_snapshot_ms``)."""
    sandbox = start_sandbox_process("--room", "--host", "127.0.0.1")
    listeners = [WebhookListener(port=0, max_events=5000).start() for _ in range(learners)]
    sleepers = [_SleepingLaptop() for _ in range(asleep)]
    runs: dict[str, list[dict]] = {"awake": [], "healthy": []}
    view = None
    try:
        view = _RoomViewer(_room_view_url(sandbox))
        with ThreadPoolExecutor(4) as pool:  # signing up is scrypt twice: use both cores
            worlds = list(pool.map(lambda _: make_world(sandbox.url), range(learners)))
        session = requests.Session()
        room = []
        for world, listener in zip(worlds, listeners, strict=True):
            subscription = world.subscribe(listener.url)
            listener.add_secret(subscription["secret"])
            room.append([world, subscription, world.visitor(session)])
        for phase in ("awake", "healthy") * repeats:
            for index in range(asleep):  # point the sleepers' webhooks at their laptop's state
                world, subscription, _ = room[index]
                target = sleepers[index].url if phase == "healthy" else listeners[index].url
                requests.delete(
                    f"{sandbox.url}/{world.project_id}/subscriptions/{subscription['_id']}",
                    headers={"Authorization": world.agent_token},
                    timeout=10,
                )
                room[index][1] = world.subscribe(target)
                if phase == "awake":
                    listeners[index].add_secret(room[index][1]["secret"])
            healthy = range(asleep, learners) if phase == "healthy" else range(learners)
            runs[phase].append(_room_phase(sandbox.url, room, listeners, healthy, seconds, every))
    finally:
        if view is not None:
            view.close()
        for listener in listeners:
            listener.stop()
        for sleeper in sleepers:
            sleeper.stop()
        sandbox.stop()
    results: dict = {"room_learners": learners, "room_asleep": asleep}
    for phase, phase_runs in runs.items():
        for key in ("p50_ms", "p99_ms"):
            results[f"room_{phase}_{key}"] = statistics.median(r[key] for r in phase_runs)
        results[f"room_{phase}_p99_runs_ms"] = [r["p99_ms"] for r in phase_runs]
        results[f"room_{phase}_webhooks"] = sum(r["webhooks"] for r in phase_runs)
    results["room_lost"] = sum(r["lost"] for rs in runs.values() for r in rs)
    results["room_send_errors"] = sum(r["errors"] for rs in runs.values() for r in rs)
    results["room_healthy_over_awake_p99"] = round(
        results["room_healthy_p99_ms"] / results["room_awake_p99_ms"], 2
    )
    results["room_view_updates"] = view.updates if view is not None else 0
    results["room_view_frame_kb"] = round(view.last_size / 1024, 1) if view is not None else 0
    results["room_snapshot_ms"] = _room_snapshot_ms(sandbox.data_dir)
    return results


def _room_view_url(sandbox) -> str:
    """The ``Room view:`` address the sandbox printed (its second line on standard output)."""
    out = sandbox.data_dir.parent / f"{sandbox.data_dir.name}-run1.out"
    deadline = time.time() + 10
    while time.time() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("Room view: "):
                return line.removeprefix("Room view: ")
        time.sleep(0.02)
    raise RuntimeError("the sandbox printed no 'Room view:' line")


class _RoomViewer:
    """The presenter's page, reduced to its socket: counts the room updates it receives."""

    def __init__(self, view_url: str) -> None:
        url = "ws" + view_url.removeprefix("http").replace("/room?", "/room/live?", 1)
        self.socket = connect(url, ping_interval=None, max_size=None).__enter__()
        self.updates = 0
        self.last_size = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for text in self.socket:
                self.updates += 1
                self.last_size = len(text)
        except Exception:  # closed
            return

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()
        self.thread.join(5)


def _room_snapshot_ms(data_dir: Path, rounds: int = 20) -> float:
    """Median time to build one room view update from the room's database, in this process."""
    store = Store(data_dir / "sandbox.sqlite3")
    try:
        room = Room(store)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            room.snapshot()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    return round(statistics.median(times), 2)


def _room_phase(url, room, listeners, healthy, seconds: float, every: float) -> dict:
    """One run of the room: every learner sends; the healthy learners' webhook latencies."""
    for listener in listeners:
        listener.clear()
    per_process = 4
    groups: list[list] = [[] for _ in range(per_process)]
    for index, (world, _, token) in enumerate(room):
        offset = every * index / len(room)
        groups[index % per_process].append(
            (index, offset, world.project_id, world.request_id(), token)
        )
    out: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.time() + 1.0
    processes = [
        multiprocessing.Process(
            target=_learner_sender, args=(url, group, seconds, every, start_at, out)
        )
        for group in groups
    ]
    for process in processes:
        process.start()
    results_of = [out.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join(10)
    sent = {m: at for result in results_of for m, at, who in result[0] if who in healthy}
    wanted = [listeners[i] for i in healthy]
    deadline = time.time() + 30
    received: dict[str, float] = {}
    while time.time() < deadline:
        received = {
            e.message_id: e.received_at.timestamp() for listener in wanted for e in listener.events
        }
        if all(m in received for m in sent):
            break
        time.sleep(0.2)
    latencies = [(received[m] - sent[m]) * 1000 for m in sent if m in received]
    return {
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "webhooks": len(latencies),
        "lost": len(sent) - len(latencies),
        "errors": sum(r[1] for r in results_of),
    }


def measure_listing(conversations: int = 1000, rounds: int = 100) -> dict[str, float]:
    """A page of 100 out of ``conversations`` open conversations, as an agent lists them."""
    bench = start_sandbox_process()
    try:
        url = bench.url
        world = make_world(url)
        client = _connected(url)
        path = f"/{world.project_id}/requests/{{}}/messages"
        headers = {"Authorization": world.agent_token}
        for n in range(conversations):
            rid = f"support-group-{world.project_id}-{n:032x}"
            client.post(path.format(rid), {"text": f"hello {n}"}, headers)
        client.close()
        session = requests.Session()
        times = []
        for n in range(rounds):
            page = n % (conversations // 100)
            started = time.perf_counter()
            answer = session.get(
                f"{url}/{world.project_id}/requests?limit=100&page={page}",
                headers=headers,
                timeout=30,
            )
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200 and len(answer.json()["requests"]) == 100
        session.close()
    finally:
        bench.stop()
    return {
        "list_page_p50_ms": round(percentile(times, 0.50), 2),
        "list_page_max_ms": round(max(times), 2),
    }


def measure_uploads(rounds: int = 40) -> dict[str, float]:
    """A visitor's chat upload of a photo near the 1 MB limit (written and fsynced before its
    answer), and the agent's download of it, on a sandbox process with a real data folder."""
    bench = start_sandbox_process()
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (1000 * 1024 // 256)
    try:
        world = make_world(bench.url)
        session = requests.Session()
        visitor_token = world.visitor(session)
        uploads, downloads = [], []
        for n in range(rounds):
            started = time.perf_counter()
            answer = session.post(
                f"{bench.url}/{world.project_id}/files/chat",
                files={"file": (f"photo-{n}.png", photo, "image/png")},
                headers={"Authorization": visitor_token},
                timeout=30,
            )
            uploads.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 201, answer.text
            started = time.perf_counter()
            got = session.get(
                f"{bench.url}/{world.project_id}/files",
                params={"path": answer.json()["filename"]},
                headers={"Authorization": world.agent_token},
                timeout=30,
            )
            downloads.append((time.perf_counter() - started) * 1000)
            assert got.status_code == 200 and got.content == photo
        session.close()
    finally:
        bench.stop()
    return {
        "upload_1mb_p50_ms": round(percentile(uploads, 0.50), 2),
        "upload_1mb_max_ms": round(max(uploads), 2),
        "download_1mb_p50_ms": round(percentile(downloads, 0.50), 2),
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
        "--only",
        choices=[
            "import",
            "ready",
            "floor",
            "listener",
            "latency",
            "throughput",
            "room",
            "listing",
            "uploads",
            "notebooks",
        ],
        default=None,
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    results: dict[str, float | int | None] = {}
    parts = {
        "import": lambda: results.update(import_s=round(measure_import(), 3)),
        "ready": lambda: results.update(sandbox_ready_s=round(measure_ready(), 3)),
        "floor": lambda: results.update(measure_floor()),
        "listener": lambda: results.update(measure_listener()),
        "latency": lambda: results.update(measure_latency(messages=args.messages)),
        "throughput": lambda: results.update(measure_throughput(seconds=args.seconds)),
        "room": lambda: results.update(measure_room()),
        "listing": lambda: results.update(measure_listing()),
        "uploads": lambda: results.update(measure_uploads()),
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
    targets = dict(TARGETS)
    floor = results.get("floor_ms")
    if floor:
        for key, times in FLOOR_TARGETS.items():
            targets[key] = ("<=", round(times * floor, 3))
    for key, of in P99_OVER_P50.items():
        if results.get(of):
            targets[key] = ("<=", round(5 * results[of], 3))
    if results.get("room_awake_p99_ms"):
        targets["room_healthy_p99_ms"] = ("<=", round(2 * results["room_awake_p99_ms"], 2))
    for key, value in results.items():
        target = targets.get(key)
        if target and value is not None:
            op, bound = target
            met = value <= bound if op == "<=" else value >= bound
            print(f"{key:<28}{value!s:>12}  {op + ' ' + str(bound):<10}{'yes' if met else 'NO':>4}")
        else:
            print(f"{key:<28}{value!s:>12}")


if __name__ == "__main__":
    sys.exit(main())
