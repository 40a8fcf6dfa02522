"""The conversation view inside a real ipykernel, fed by hundreds of webhooks from outside.

This is the situation of a workshop: the kernel is idle or busy, the room sends messages, and the
listener's worker thread updates the widget. ipykernel 7.0 broke widget updates from threads for a
while, and a thread per request exhausts the kernel's sockets under a burst ("Too many open
files"): this test drives exactly that, so a kernel version that breaks it fails here. The tested
range is the one pinned in pyproject.toml (``ipykernel>=6.29,<7.5``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipykernel
import pytest
import requests
from jupyter_client import BlockingKernelClient, KernelManager
from packaging.requirements import Requirement
from packaging.version import Version
from support.tutorial import REPO

from tiledesk_tutorial.webhooks import make_delivery, make_message_payload

SECRET = "kernel-burst-secret-0123456789abcdef0123"
RID = "support-group-5f00000000000000000000aa-0123456789abcdef0123456789abcdef"
DELIVERIES = 500
RATE = 100  # deliveries per second: about what a busy workshop room produces at its peak
WINDOW = 200


class Kernel:
    """A started ipykernel with a client; iopub is drained by a thread into ``messages``."""

    def __init__(self, cwd: Path) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd))
        self.client: BlockingKernelClient = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.messages: list[dict[str, Any]] = []
        self._inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._read_iopub, name="test-iopub", daemon=True)
        self._drain.start()

    def _read_iopub(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.client.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            self.messages.append(message)
            self._inbox.put(message)

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute ``code``; return what it printed; fail on an error or anything on stderr."""
        msg_id = self.client.execute(code)
        reply = self.client.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.client.get_shell_msg(timeout=timeout)
        # Outputs come on iopub before the kernel reports idle for this request.
        printed: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self._inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                assert content["name"] == "stdout", f"stderr in the kernel: {content['text']}"
                printed.append(content["text"])
            elif kind == "error":
                raise AssertionError(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(printed)

    def close(self) -> None:
        self._stop.set()
        self._drain.join(5)
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A real ipykernel (the ``python3`` kernelspec of this environment)."""
    started = Kernel(tmp_path)
    yield started
    started.close()


def test_the_tested_ipykernel_is_in_the_pinned_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [
        Requirement(spec)
        for specs in project["optional-dependencies"].values()
        for spec in specs
        if spec.startswith("ipykernel")
    ]
    assert pins, "pyproject.toml no longer pins ipykernel"
    for pin in pins:
        assert Version(ipykernel.__version__) in pin.specifier, (ipykernel.__version__, str(pin))


@pytest.mark.timeout(180)
def test_widget_follows_a_sustained_burst_inside_a_kernel(kernel: Kernel) -> None:
    started = kernel.run(
        "import json\n"
        "from IPython.display import display\n"
        "from tiledesk_tutorial import ConversationView, WebhookListener\n"
        f"listener = WebhookListener(secret={SECRET!r}, port=0).start()\n"
        f"view = ConversationView(listener, max_messages={WINDOW})\n"
        "display(view)\n"
        "print(json.dumps({'url': listener.url}))\n"
    )
    url = json.loads(started.strip().splitlines()[-1])["url"]

    deliveries = [
        make_delivery(make_message_payload(f"msg-{i:04d}", request_id=RID), SECRET)
        for i in range(DELIVERIES)
    ]
    statuses: list[int] = []
    busy_answer: list[str] = []
    with requests.Session() as session:
        begin = time.monotonic()
        for i, delivery in enumerate(deliveries):
            # Sustained, not all at once: hold the pace of RATE per second.
            pause = begin + i / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            answer = session.post(url, data=delivery.data(), headers=delivery.headers, timeout=10)
            statuses.append(answer.status_code)
            if i == DELIVERIES // 2:  # the kernel still answers a cell in the middle of it
                busy_answer.append(kernel.run("print(6 * 7)", timeout=30))
    assert statuses == [200] * DELIVERIES
    assert busy_answer == ["42\n"]

    result = kernel.run(
        "listener.wait_for(lambda e: e.text == 'msg-0499', timeout=30)\n"
        "shown = view.wait_until_shown('msg-0499', timeout=30)\n"
        "print(json.dumps({'shown': shown, 'count': view.count_text, 'html': view.html,\n"
        "                  'stats': listener.stats}))\n"
        "listener.stop()\n"
    )
    seen = json.loads(result.strip().splitlines()[-1])
    assert seen["shown"] is True
    assert seen["count"] == (
        f"{DELIVERIES} messages in 1 conversation (the newest {WINDOW} shown) · "
        f"{DELIVERIES} updates received"
    )
    first_shown = DELIVERIES - WINDOW
    assert f"msg-{first_shown:04d}" in seen["html"]
    assert f"msg-{first_shown - 1:04d}" not in seen["html"]
    stats = seen["stats"]
    assert stats["kept"] == DELIVERIES and stats["rejected"] == 0
    assert stats["callback_errors"] == 0, stats["last_callback_error"]

    # What the kernel sent to the front end: widget updates, and no error of any kind.
    updates = [
        m
        for m in kernel.messages
        if m["msg_type"] == "comm_msg"
        and m["content"]["data"].get("method") == "update"
        and "msg-" in str(m["content"]["data"].get("state", {}).get("value", ""))
    ]
    assert updates, "the widget never sent an update from the listener's thread"
    assert len(updates) < DELIVERIES  # bursts are coalesced into fewer redraws
    assert "msg-0499" in updates[-1]["content"]["data"]["state"]["value"]
    problems = [
        m
        for m in kernel.messages
        if m["msg_type"] == "error"
        or (m["msg_type"] == "stream" and m["content"]["name"] == "stderr")
        or "Too many open files" in json.dumps(m["content"])
    ]
    assert problems == []
