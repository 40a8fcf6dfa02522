"""Helpers for the fault, fuzz, security and soak tests.

- :class:`SandboxProcess`: ``python -m tiledesk_tutorial.sandbox`` as a child process that a test
  can kill with SIGKILL, restart on the same data folder, and measure (RSS, listening sockets);
- :class:`ConcurrentSenders`: visitors sending messages from several threads, recording which
  sends were acknowledged with a 200;
- :class:`DeliveryLedger`: a receiver's answer policy that injects failures and records which
  deliveries it accepted;
- :func:`table_rows` / :func:`stored_state`: what the sandbox's database holds, to prove that a
  rejected request changed nothing;
- :func:`find_secrets` / :func:`notebook_leaks`: where a secret (or any whole JWT) shows up;
- hypothesis strategies and raw-HTTP helpers shared by the fuzz tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "sandbox.sqlite3"
# Tables whose rows only an API call writes; the delivery worker writes `outbox` and
# `delivery_log` in the background, so those are compared separately.
API_TABLES = (
    "meta", "users", "projects", "project_users", "departments", "leads", "requests", "messages",
    "subscriptions", "counters",
)  # fmt: skip
# A whole JWT: three base64url parts, the first one a JSON object ("eyJ").
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
# A webhook secret as the sandbox makes them: a UUIDv4 and 16 hex digits.
SANDBOX_WEBHOOK_SECRET = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}-[0-9a-f]{16}"
)
# A made-up ngrok authtoken for runs that must show it redacted, never in full.
FAKE_NGROK_AUTHTOKEN = "2fakeNGROKauthtokenFORtests_0123456789abcdefXYZ"

# The fuzz tests' settings: a fixed number of cases, reproducible (derandomized, no example
# database), no time limit per case (the machine is shared with the servers under test).
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the sandbox as a process ----------------------------------------------------------------------
class SandboxProcess:
    """The sandbox CLI in a child process, on one data folder, restartable after a SIGKILL.

    stdout and stderr go to files next to the data folder (a pipe nobody reads could fill up and
    block the sandbox); ``stderr_text()`` reads every run's log so far.
    """

    def __init__(self, data_dir: Path, *args: str, wrapper: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.args = args
        self.wrapper = wrapper  # a command that runs the sandbox's (see tests/support/mounts.py)
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self.runs = 0
        self._logs: list[Path] = []

    @property
    def pid(self) -> int:
        """The running sandbox's process id."""
        assert self.process is not None, "the sandbox is not running"
        return self.process.pid

    def start(self, timeout: float = 30.0) -> str:
        """Start the sandbox (port 0) and return the URL it prints first."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.runs += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.data_dir.parent / f"{self.data_dir.name}-run{self.runs}.out"
        err = self.data_dir.parent / f"{self.data_dir.name}-run{self.runs}.err"
        self._logs.append(err)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    *self.wrapper,
                    sys.executable,
                    "-m",
                    "tiledesk_tutorial.sandbox",
                    "--port",
                    "0",
                    "--data",
                    str(self.data_dir),
                    *self.args,
                ],
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first = out.read_text().partition("\n")
            if first[1]:
                self.url = first[0].strip()
                return self.url
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the sandbox exited with {self.process.returncode}: {err.read_text()[-2000:]}"
                )
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"the sandbox printed no URL in {timeout:g} s")

    def start_refused(self, timeout: float = 30.0) -> tuple[int, str]:
        """Start the sandbox expecting it to refuse: its exit code and what this run wrote to
        stderr."""
        try:
            url = self.start(timeout)
        except AssertionError:
            assert self.process is not None and self.process.poll() is not None
            return self.process.returncode, self._logs[-1].read_text(errors="replace")
        self.kill()
        raise AssertionError(f"the sandbox started on {url}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush, close or clean up anything."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(15)

    def stop(self) -> int:
        """SIGTERM and wait: a clean stop. Returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def rss_kib(self) -> int:
        """The resident memory of the sandbox process, in KiB (``VmRSS``)."""
        return rss_kib(self.pid)

    def stderr_text(self) -> str:
        """Everything the sandbox wrote to stderr, over every run so far."""
        return "".join(path.read_text(errors="replace") for path in self._logs if path.exists())

    @property
    def db_path(self) -> Path:
        """The sandbox's SQLite file."""
        return self.data_dir / DB_NAME


def rss_kib(pid: int) -> int:
    """``VmRSS`` of a process, in KiB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs a process listens on, read from /proc (Linux).

    A socket belongs to the process when one of its file descriptors links to ``socket:[inode]``;
    ``/proc/<pid>/net/tcp{,6}`` gives each inode's local address and state (0A = LISTEN).
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:
                continue
            hex_address, hex_port = local.split(":")
            found.add((_proc_address(hex_address), int(hex_port, 16)))
    return found


def _proc_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc writes each 32-bit word in host (little-endian) order.
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    return str(ipaddress.ip_address(packed))


# -- load ------------------------------------------------------------------------------------------
@dataclass
class Sender:
    """One visitor sending into one conversation."""

    token: str
    request_id: str


@dataclass
class ConcurrentSenders:
    """Visitors each sending messages as fast as the sandbox answers, from one thread each.

    A send is *acknowledged* when it got a 200; its message ``_id`` and text are kept in
    ``acked``. A send that failed any other way (the sandbox died mid-request) is in
    ``unacked``: it may or may not have been stored. Each thread stops at its first connection
    error, or when ``stop()`` is called.
    """

    base_url: str
    project_id: str
    senders: list[Sender]
    label: str = "m"
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # _id -> (request_id, text)
    unacked: list[tuple[str, str, str]] = field(default_factory=list)  # (rid, text, error)
    errors: list[str] = field(default_factory=list)  # non-200 answers: must stay empty

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acks = threading.Condition(self._lock)

    def start(self) -> ConcurrentSenders:
        """Start one thread per sender."""
        for index, sender in enumerate(self.senders):
            thread = threading.Thread(
                target=self._run, args=(index, sender), name=f"load-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def wait_for_acks(self, count: int, timeout: float = 60.0) -> int:
        """Block until at least ``count`` sends are acknowledged; return how many are."""
        deadline = time.monotonic() + timeout
        with self._acks:
            while len(self.acked) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set() or self.errors:
                    break
                self._acks.wait(min(remaining, 0.5))
            return len(self.acked)

    def stop(self) -> None:
        """Ask every thread to stop after its current send, and wait for them."""
        self._stop.set()
        self.join()

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the threads to end (they end by themselves when the sandbox dies)."""
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a sender thread did not stop"

    def _run(self, index: int, sender: Sender) -> None:
        url = f"{self.base_url}/{self.project_id}/requests/{sender.request_id}/messages"
        headers = {"Authorization": sender.token}
        with requests.Session() as session:
            number = 0
            while not self._stop.is_set():
                text = f"{self.label}-{index}-{number}"
                number += 1
                try:
                    response = session.post(url, json={"text": text}, headers=headers, timeout=15)
                except requests.RequestException as exc:
                    with self._lock:
                        self.unacked.append((sender.request_id, text, type(exc).__name__))
                    return
                with self._acks:
                    if response.status_code == 200:
                        self.acked[response.json()["_id"]] = (sender.request_id, text)
                        self._acks.notify_all()
                    else:
                        self.errors.append(f"{response.status_code} {response.text[:200]}")
                        return


# -- a receiver that fails on purpose --------------------------------------------------------------
class DeliveryLedger:
    """An answer policy for ``support.sandbox.Receiver``: fail each new delivery's first attempt(s).

    ``failures_per_delivery`` attempts of each distinct body get a 503 (an injected fault), the
    next gets a 200; ``accepted`` holds the ``(event, payload _id)`` of every delivery answered 200.
    """

    def __init__(self, failures_per_delivery: int = 1) -> None:
        self.failures_per_delivery = failures_per_delivery
        self.accepted: set[tuple[str, str]] = set()
        self.faults = 0
        self._attempts: dict[bytes, int] = {}
        self._cond = threading.Condition()

    def __call__(self, index: int, delivery: Any) -> int:
        with self._cond:
            seen = self._attempts.get(delivery.raw, 0)
            self._attempts[delivery.raw] = seen + 1
            if seen < self.failures_per_delivery:
                self.faults += 1
                return 503
            self.accepted.add((delivery.body["hook"]["event"], delivery.body["payload"]["_id"]))
            self._cond.notify_all()
            return 200

    def wait_for(self, wanted: Iterable[tuple[str, str]], timeout: float) -> set[tuple[str, str]]:
        """Wait until every wanted ``(event, _id)`` was accepted; return those still missing."""
        wanted = set(wanted)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= self.accepted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
            return wanted - self.accepted


# -- what the database holds -----------------------------------------------------------------------
def table_rows(conn: sqlite3.Connection, tables: Iterable[str] = API_TABLES) -> dict[str, list]:
    """Every row of ``tables``, in primary-key order: compare two of these to prove no change."""
    state = {}
    for table in tables:
        state[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
    return state


def stored_state(sandbox: Any) -> dict[str, list]:
    """The API-written rows of an in-process sandbox, plus the outbox's highest sequence number."""
    with sandbox.store.reading() as conn:
        state = table_rows(conn)
        state["outbox_inserts"] = conn.execute("SELECT MAX(seq) FROM outbox").fetchall()
    return state


def open_db(path: Path) -> sqlite3.Connection:
    """Open a (stopped) sandbox's database file directly."""
    return sqlite3.connect(str(path), timeout=30)


# -- secrets ---------------------------------------------------------------------------------------
def find_secrets(text: str, secrets: Mapping[str, str]) -> list[str]:
    """The names of the ``secrets`` whose full value appears in ``text``, plus any whole JWT.

    A JWT is reported as ``"a JWT: <first 12 chars>..."`` so that the failure message itself does
    not print it.
    """
    found = [name for name, value in secrets.items() if value and value in text]
    found.extend(f"a JWT: {match.group(0)[:12]}..." for match in JWT_RE.finditer(text))
    return found


def notebook_leaks(path: Path, secrets: Mapping[str, str]) -> list[str]:
    """What an executed notebook file shows of ``secrets``, whole JWTs or webhook secrets.

    The whole file is read: outputs of every MIME type, tracebacks, and the widget state saved
    in its metadata (what JupyterLab shows again when the notebook is reopened).
    """
    text = path.read_text(encoding="utf-8")
    found = find_secrets(text, secrets)
    found += [
        f"a webhook secret: {m.group(0)[:8]}..." for m in SANDBOX_WEBHOOK_SECRET.finditer(text)
    ]
    return found


def bare(token: str) -> str:
    """A token without its ``JWT `` scheme."""
    return token.removeprefix("JWT ")


# -- fuzzing ---------------------------------------------------------------------------------------
# Any JSON value, NaN and infinities included (Python's json writes and reads them).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)


# Text that requests accepts as a header value (Latin-1, no control characters).
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
).map(str.strip)


def strict_json(text: str) -> Any:
    """Parse JSON as a browser does: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def raw_request(url: str, data: bytes, timeout: float = 10) -> tuple[int | None, bytes]:
    """Send bytes as they are; return the answer's status (``None`` if the server hung up)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].split()
    if len(status_line) >= 2 and status_line[1].isdigit():
        return int(status_line[1]), answer
    return None, answer


def nested(depth: int) -> str:
    """JSON text nested ``depth`` levels deep, objects and lists in turn (built as text: encoding
    it with json.dumps would itself hit the recursion limit)."""
    opening = "".join("[" if level % 2 else '{"a": ' for level in range(depth))
    closing = "".join("]" if level % 2 else "}" for level in reversed(range(depth)))
    return opening + '"x"' + closing
