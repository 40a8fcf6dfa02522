"""Shared pieces of the benchmarks: a sandbox process, a tutorial world, percentiles."""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.faults import SandboxProcess  # noqa: E402 (the tests' helper, shared)

PASSWORD = "Bench-Passw0rd!"  # noqa: S105 - a throw-away local account


@dataclass
class BenchSandbox:
    """The sandbox started as its own process, as ``make lab`` runs it, timed until it answers."""

    process: SandboxProcess
    url: str
    ready_s: float
    data_dir: Path

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL if it does not stop)."""
        self.process.stop()

    def rss_mb(self) -> float:
        """Resident memory of the sandbox process, in MB."""
        return self.process.rss_kib() / 1024


def start_sandbox_process(*extra: str) -> BenchSandbox:
    """Start ``python -m tiledesk_tutorial.sandbox`` on a free port; time it until its first 200.

    The process is the tests' :class:`SandboxProcess` (one helper for both).
    """
    data_dir = Path(tempfile.mkdtemp(prefix="bench-sandbox-")) / "data"
    started = time.perf_counter()
    process = SandboxProcess(data_dir, *extra)
    url = process.start()
    session = requests.Session()
    while True:
        try:
            if session.get(url + "/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.001)
    ready = time.perf_counter() - started
    session.close()
    return BenchSandbox(process, url, ready, data_dir)


@dataclass
class World:
    """An agent owning a project; visitors are signed in on demand."""

    url: str
    agent_token: str
    project_id: str

    def visitor(self, session: requests.Session, name: str = "Visitor") -> str:
        """A new anonymous visitor's token."""
        response = session.post(
            self.url + "/auth/signinAnonymously",
            json={"id_project": self.project_id, "firstname": name},
            timeout=10,
        )
        return response.json()["token"]

    def request_id(self) -> str:
        """A fresh conversation id."""
        return f"support-group-{self.project_id}-{uuid.uuid4().hex}"

    def subscribe(self, target: str) -> dict:
        """Subscribe ``target`` to message.create."""
        response = requests.post(
            f"{self.url}/{self.project_id}/subscriptions",
            json={"event": "message.create", "target": target},
            headers={"Authorization": self.agent_token},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()


def make_world(url: str) -> World:
    """Sign up an agent, sign in, create a project."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    account = {"email": email, "password": PASSWORD, "firstname": "Ada", "lastname": "Agent"}
    requests.post(url + "/auth/signup", json=account, timeout=10).raise_for_status()
    token = requests.post(
        url + "/auth/signin", json={"email": email, "password": PASSWORD}, timeout=10
    ).json()["token"]
    project = requests.post(
        url + "/projects", json={"name": "Bench"}, headers={"Authorization": token}, timeout=10
    ).json()
    return World(url, token, project["_id"])


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]
