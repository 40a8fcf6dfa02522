"""``tiledesk-tutorial listen`` as a learner runs it: a subprocess, stopped with Ctrl-C.

Events on standard output (lines, or JSON Lines), everything else on standard error; with
``--forward-to``, each message reaches a real local receiver in Tiledesk's webhook format, with the
secret shown once and the token signed with it; a failing receiver gets the delivery again.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from realtime.helpers import Receiver
from tiledesk_tutorial import TiledeskClient, new_request_id
from tiledesk_tutorial.webhooks import verify_token
from tiledesk_tutorial.wire import new_object_id

PASSWORD = "Listen-Passw0rd!"
WAIT = 30.0


class Listen:
    """``python -m tiledesk_tutorial listen ...`` running, its two streams read line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tiledesk_tutorial", "listen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._err_cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out.put)),
            threading.Thread(target=self._read, args=(self.process.stderr, self._err_line)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, put: object) -> None:
        assert stream is not None
        for line in stream:
            put(line.rstrip("\n"))  # type: ignore[operator]

    def _err_line(self, line: str) -> None:
        with self._err_cond:
            self.err.append(line)
            self._err_cond.notify_all()

    def said(self, text: str, timeout: float = WAIT) -> str:
        """The first standard-error line containing ``text`` (waits for it)."""
        with self._err_cond:
            found = self._err_cond.wait_for(
                lambda: (
                    next((line for line in self.err if text in line), None)
                    or self.process.poll() is not None
                ),
                timeout,
            )
            line = next((line for line in self.err if text in line), None)
        assert line is not None, f"never said {text!r}; stderr: {self.err} ({found})"
        return line

    def lines(self, count: int, timeout: float = WAIT) -> list[str]:
        """The next ``count`` lines of standard output."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            try:
                got.append(self.out.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"got {got}; stderr: {self.err}") from None
        return got

    def interrupt(self) -> int:
        """Ctrl-C; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the end (killing it if it hangs) and for both streams."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            for reader in self._readers:
                reader.join(10)
        return code


@pytest.fixture
def account(sandbox_session) -> Iterator[TiledeskClient]:  # type: ignore[no-untyped-def]
    """An owner with a project, on the session's sandbox."""
    agent = TiledeskClient(sandbox_session.url)
    email = f"listen-{uuid.uuid4().hex[:10]}@example.com"
    agent.sign_up(email, PASSWORD, "Ada", "Agent")
    agent.sign_in(email, PASSWORD)
    agent.project_id = agent.create_project("Listen").id
    yield agent
    agent.close()


def environment(agent: TiledeskClient, home: Path, **extra: str) -> dict[str, str]:
    """The learner's environment: their Tiledesk (here the sandbox) and account, nothing else."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TILEDESK_", "NGROK_", "PYNGROK_"))
    }
    assert agent.user is not None and agent.user.email
    env.update(
        TILEDESK_API_URL=agent.base_url,
        TILEDESK_EMAIL=agent.user.email,
        TILEDESK_PASSWORD=PASSWORD,
        TILEDESK_PROJECT_ID=agent.project_id or "",
        TILEDESK_TUTORIAL_HOME=str(home),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def chat(agent: TiledeskClient) -> str:
    """The visitor writes, the agent answers; returns the conversation's id."""
    rid = new_request_id(agent.project_id)
    agent.as_visitor(firstname="Vic").send_message(rid, "Hello from Vic\nsecond line")
    agent.send_message(rid, "Hi Vic, Ada here")
    return rid


SOURCES = ["realtime", "webhook"]


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_lines_one_per_event_and_ctrl_c_stops_cleanly(
    source: str, account: TiledeskClient, tmp_path: Path
) -> None:
    run = Listen(["--source", source], environment(account, tmp_path), tmp_path)
    run.said("Ctrl-C to stop")
    rid = chat(account)
    messages = [line for line in run.lines(3 if source == "realtime" else 2) if "message" in line]
    assert len(messages) == 2
    assert (
        "message.create  visitor Vic: Hello from Vic ⏎ second line  [support-group-"
        in (messages[0])
    )
    assert "message.create  agent   Ada Agent: Hi Vic, Ada here  [" in messages[1]
    assert rid[-12:] in messages[0]
    assert run.interrupt() == 0
    assert run.err[-1].startswith("Stopped: ") and "Traceback" not in "\n".join(run.err)
    assert PASSWORD not in "\n".join(run.err)


def test_json_lines_carry_the_fields_a_script_needs(
    source: str, account: TiledeskClient, tmp_path: Path
) -> None:
    run = Listen(["--source", source, "--json"], environment(account, tmp_path), tmp_path)
    run.said("Ctrl-C to stop")
    rid = chat(account)
    records = [json.loads(line) for line in run.lines(3 if source == "realtime" else 2)]
    assert run.interrupt() == 0
    messages = [r for r in records if r["event"] == "message.create"]
    assert [(r["role"], r["sender_fullname"], r["text"]) for r in messages] == [
        ("visitor", "Vic", "Hello from Vic\nsecond line"),
        ("agent", "Ada Agent", "Hi Vic, Ada here"),
    ]
    for record in messages:
        assert record["request_id"] == rid and record["source"] == source
        assert record["created_at"].endswith("+00:00") and record["message_id"]
    if source == "realtime":
        assert records[0]["event"] == "request.create" and records[0]["request_id"] == rid


def test_forward_to_posts_tiledesk_webhooks_with_the_secret_shown_once(
    source: str, account: TiledeskClient, tmp_path: Path, receiver: Receiver
) -> None:
    run = Listen(
        ["--source", source, "--forward-to", receiver.url], environment(account, tmp_path), tmp_path
    )
    announced = run.said("Your webhook secret")
    run.said("Ctrl-C to stop")
    chat(account)
    got = receiver.wait(2)
    run.said("[200] POST")
    assert run.interrupt() == 0
    secret = announced.split(" is ", 1)[1].split(" ", 1)[0]
    assert "\n".join(run.err).count(secret) == 1  # shown once
    assert [r.body["payload"]["text"] for r in got] == [
        "Hello from Vic\nsecond line",
        "Hi Vic, Ada here",
    ]
    for delivery in got:
        assert delivery.headers["x-hook-secret"] == secret
        assert delivery.headers["user-agent"] == "tiledesk-webhooks"
        assert delivery.headers["origin"] == account.base_url
        hook = delivery.body["hook"]
        assert hook["event"] == "message.create" and hook["id_project"] == account.project_id
        verify_token(delivery.body["token"], secret, hook["_id"])
    assert "2 forwarded" in run.err[-1]


def test_a_failing_receiver_is_retried_and_a_set_secret_never_shown(
    account: TiledeskClient, tmp_path: Path, receiver: Receiver
) -> None:
    source = "realtime"
    receiver.answers = [503, 503]
    secret = f"forward-secret-{uuid.uuid4().hex}"
    env = environment(account, tmp_path, TILEDESK_FORWARD_SECRET=secret)
    run = Listen(["--source", source, "--forward-to", receiver.url], env, tmp_path)
    run.said("with the secret you set (not shown)")
    run.said("Ctrl-C to stop")
    rid = new_request_id(account.project_id)
    account.as_visitor(firstname="Vic").send_message(rid, "retried until accepted")
    [delivery] = receiver.wait(1)
    run.said("[200] POST")
    assert run.interrupt() == 0
    retries = [line for line in run.err if line.startswith("[503] POST")]
    assert len(retries) == 2 and "attempt 1 failed, trying again in" in retries[0]
    assert delivery.body["payload"]["text"] == "retried until accepted"
    verify_token(delivery.body["token"], secret, delivery.body["hook"]["_id"])
    assert secret not in "\n".join(run.err)


def test_no_sandbox_running_is_one_sentence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TILEDESK_", "NGROK_"))}
    env.update(
        TILEDESK_TUTORIAL_HOME=str(tmp_path),
        TILEDESK_SANDBOX_URL="http://127.0.0.1:9",  # nothing there
        PYTHONUNBUFFERED="1",
    )
    run = Listen([], env, tmp_path)
    if not run.said("Error:", timeout=WAIT).startswith("Error: no sandbox is running"):
        pytest.skip("a sandbox answers on 127.0.0.1:3000 on this machine")
    assert run.finish() == 1
    assert "make sandbox" in "\n".join(run.err) and "Traceback" not in "\n".join(run.err)


def test_bad_options_are_refused_by_the_parser(tmp_path: Path) -> None:
    for args, expected in (
        (["--project-id", "nope"], "24 hexadecimal characters"),
        (["--events", "message.create,typo"], "unknown typo"),
        (["--project-id", new_object_id(), "--port", "70000"], "--port must be from 0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "tiledesk_tutorial", "listen", *args],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 2 and expected in done.stderr, done.stderr
