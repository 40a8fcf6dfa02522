"""``tiledesk-tutorial listen``: print every event of a project live, and relay it to your code.

    tiledesk-tutorial listen                           # one line per event, via the Realtime API
    tiledesk-tutorial listen --json                    # JSON Lines, for jq or a script
    tiledesk-tutorial listen --forward-to http://127.0.0.1:5000/webhook
    tiledesk-tutorial listen --source webhook          # a local webhook listener instead

Events go to standard output, one per line, as they arrive; everything else (where it listens,
the forwarding secret, reconnections, each forward) goes to standard error, so that ``--json``
output can be piped as is. Ctrl-C (or SIGTERM) stops cleanly: subscriptions made for
``--source webhook`` are deleted, what could not be forwarded is listed, and the exit status is 0.

The server and the account are the notebooks': ``TILEDESK_API_URL`` with ``TILEDESK_EMAIL`` and
``TILEDESK_PASSWORD`` (environment or ``.env``), else the running sandbox and the tutorial's
throw-away account. The project is ``--project-id``, else ``TILEDESK_PROJECT_ID``, else the one the
notebooks remember.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from tiledesk_tutorial.errors import TiledeskTutorialError
from tiledesk_tutorial.forwarder import ForwardResult, WebhookForwarder
from tiledesk_tutorial.models import MESSAGE_CREATE
from tiledesk_tutorial.wire import WEBHOOK_EVENTS, request_status_name, trim_name

__all__ = ["ListenOptions", "event_line", "event_record", "run_listen"]

Source = Literal["realtime", "webhook"]


@dataclass(frozen=True)
class ListenOptions:
    """What ``tiledesk-tutorial listen`` was asked to do (its command-line options)."""

    source: Source = "realtime"
    project_id: str | None = None
    json_lines: bool = False
    forward_to: str | None = None
    forward_secret: str | None = None
    events: tuple[str, ...] = (MESSAGE_CREATE,)
    include_history: bool = False
    port: int = 0


# -- what is printed -------------------------------------------------------------------------------
def event_record(event: Any) -> dict[str, Any]:
    """The JSON Lines record of an event: the fields a script needs, whichever the source."""
    created = event.created_at
    received = event.received_at
    record = {
        "event": event.event,
        "source": getattr(event, "source", "webhook"),
        "request_id": event.request_id,
        "message_id": event.message_id,
        "text": event.text,
        "sender": event.sender if event.is_message else None,
        "sender_fullname": trim_name(event.sender_fullname) if event.is_message else None,
        "role": event.role,
        "status": None if event.is_message else event.payload.get("status"),
        "created_at": created.isoformat() if created else None,
        "received_at": received.isoformat() if received else None,
    }
    return record


def event_line(event: Any) -> str:
    """One readable line: time, event, role, who and what (a message's text on one line)."""
    moment = event.created_at or event.received_at
    clock = moment.astimezone().strftime("%H:%M:%S")
    conversation = _short(event.request_id or "")
    if event.is_message:
        who = trim_name(event.sender_fullname) or event.sender or "?"
        text = event.text if event.text is not None else f"<{event.payload.get('type')} message>"
        text = text.replace("\r\n", "\n").replace("\n", " ⏎ ")
        return f"{clock}  {event.event:<15} {event.role or '?':<7} {who}: {text}  [{conversation}]"
    status = event.payload.get("status")
    name = request_status_name(status) or (str(status) if status is not None else "")
    lead = getattr(event, "lead_name", None)
    visitor = f" visitor {lead}" if lead else ""
    return f"{clock}  {event.event:<15} {name:<7} [{conversation}]{visitor}"


def _short(request_id: str) -> str:
    return request_id if len(request_id) <= 30 else f"{request_id[:14]}…{request_id[-12:]}"


# -- the command -----------------------------------------------------------------------------------
class _Stopped(Exception):
    """Ctrl-C or SIGTERM."""


def run_listen(
    options: ListenOptions, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Run ``listen`` until Ctrl-C or SIGTERM; return the exit status (0, or 1 on a failure)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    say = _printer(err)
    with _signals_stop():
        try:
            return _listen(options, out, say)
        except _Stopped:
            return 0  # stopped before anything started
        except Exception as exc:
            # The package's own errors say what to do in one sentence; anything else is a bug.
            if not type(exc).__module__.startswith("tiledesk_tutorial"):
                raise
            say(f"Error: {exc}")
            return 1


def _listen(options: ListenOptions, out: IO[str], say: Any) -> int:
    agent, api_url = _signed_in_agent(options, say)
    project_id = agent.project_id
    lock = threading.Lock()
    kept = {"events": 0}

    def show(event: Any) -> None:
        text = json.dumps(event_record(event), ensure_ascii=False) if options.json_lines else None
        with lock:
            kept["events"] += 1
            out.write((text if text is not None else event_line(event)) + "\n")
            out.flush()

    forwarder = _forwarder(options, agent, api_url, say)
    source: Any = None
    cleanup: list[Any] = []
    try:
        if options.source == "webhook":
            source = _webhook_source(options, agent, api_url, say, cleanup)
        else:
            from tiledesk_tutorial.realtime import RealtimeFeed

            source = RealtimeFeed(agent, include_history=options.include_history)
            cleanup.append(source.stop)
            source.start()
            say(
                f"Listening to project {project_id} on {source.url} (Realtime API: no public URL "
                "needed). Ctrl-C to stop."
            )
        source.on_event(show)
        if forwarder is not None:
            source.on_event(forwarder.submit)
        return _wait(source, say)
    except _Stopped:
        return 0
    finally:
        for step in reversed(cleanup):
            with contextlib.suppress(Exception):
                step()
        summary = f"Stopped: {kept['events']} event(s) received"
        if forwarder is not None:
            left = forwarder.stop(timeout=2.0)
            summary += f", {forwarder.forwarded} forwarded"
            if forwarder.refused:
                summary += f", {forwarder.refused} refused by the receiver"
            if left:
                ids = ", ".join(e.message_id or "?" for e in left[:5])
                more = f" and {len(left) - 5} more" if len(left) > 5 else ""
                summary += (
                    f", {len(left)} not forwarded ({forwarder.target} did not take them: "
                    f"{ids}{more})"
                )
        say(summary + ".")
        agent.close()


def _wait(source: Any, say: Any) -> int:
    """Wait for Ctrl-C, telling about reconnections as they happen."""
    last = None
    while True:
        time.sleep(0.2)
        state = getattr(source, "state", None)
        if state is None:
            continue
        mark = (state.status, state.reconnects)
        if mark != last and last is not None:
            if state.status == "reconnecting":
                say(f"Connection lost ({state.last_error}); reconnecting…")
            elif state.status == "connected":
                say("Reconnected: caught up with what happened meanwhile.")
            elif state.status == "failed":
                say(f"Error: the feed stopped: {state.last_error}")
                return 1
        last = mark


def _forwarder(
    options: ListenOptions, agent: Any, api_url: str, say: Any
) -> WebhookForwarder | None:
    if not options.forward_to:
        return None
    parts = urlsplit(api_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    user = agent.user.id if agent.user is not None else None

    def report(result: ForwardResult) -> None:
        say(result.summary(forwarder.target))

    try:
        forwarder = WebhookForwarder(
            options.forward_to,
            project_id=agent.project_id,
            secret=options.forward_secret,
            origin=origin,
            created_by=user,
            events=options.events,
            report=report,
        )
    except ValueError as exc:
        raise TiledeskTutorialError(str(exc)) from None
    kinds = ", ".join(options.events)
    if forwarder.secret_generated:
        say(
            f"Forwarding {kinds} to {forwarder.target}. Your webhook secret (x-hook-secret, and "
            f"the key of each delivery's token) is {forwarder.secret} (shown once; set "
            "TILEDESK_FORWARD_SECRET to choose it)."
        )
    else:
        say(f"Forwarding {kinds} to {forwarder.target}, with the secret you set (not shown).")
    return forwarder.start()


def _webhook_source(
    options: ListenOptions, agent: Any, api_url: str, say: Any, cleanup: list[Any]
) -> Any:
    from tiledesk_tutorial import WebhookListener, close_tunnel, webhook_target

    listener = WebhookListener(port=options.port).start()
    cleanup.append(listener.stop)
    target = webhook_target(listener, api_url)
    cleanup.append(close_tunnel)
    for kind in options.events:
        subscription = agent.create_subscription(target, kind)
        cleanup.append(lambda sid=subscription.id: agent.delete_subscription(sid))
        listener.add_secret(subscription.secret)
    say(
        f"Listening to project {agent.project_id} with webhooks at {target} "
        f"({', '.join(options.events)}; deleted again at exit). Ctrl-C to stop."
    )
    return listener


def _signed_in_agent(options: ListenOptions, say: Any) -> tuple[Any, str]:
    """The notebooks' agent: the same server, account and project, found the same way."""
    from tiledesk_tutorial import tutorial
    from tiledesk_tutorial.config import get_default

    config = get_default()
    if config.uses_sandbox:
        _require_running_sandbox(config.sandbox_url)
    if options.project_id:  # what TILEDESK_PROJECT_ID does (tutorial.start reads it again)
        os.environ["TILEDESK_PROJECT_ID"] = options.project_id
    # The tutorial's notes ("created the project...") go with the other messages, to stderr.
    with contextlib.redirect_stdout(_Lines(say)):
        tt = tutorial.start()  # a TutorialError says what is missing, in one sentence
        agent = tt.agent()
    return agent, tt.api_url


def _require_running_sandbox(explicit: str | None) -> None:
    """Listening must not start a sandbox of its own (it would go when listen stops)."""
    from tiledesk_tutorial.sandbox_discovery import DEFAULT_SANDBOX_PORT, probe_sandbox

    shared = f"http://127.0.0.1:{DEFAULT_SANDBOX_PORT}"
    found = (explicit and probe_sandbox(explicit, require_mark=False)) or probe_sandbox(shared)
    if not found:
        raise TiledeskTutorialError(
            "no sandbox is running, and TILEDESK_API_URL is not set",
            hint=(
                "start the sandbox in another terminal (`make sandbox`) or open a notebook "
                "(tutorial.start() starts it), or set TILEDESK_API_URL to use a real Tiledesk."
            ),
        )


class _Lines:
    """A text stream that hands each complete line to ``say``."""

    def __init__(self, say: Any) -> None:
        self._say = say
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                self._say(line)
        return len(text)

    def flush(self) -> None:
        pass


def _printer(err: IO[str]) -> Any:
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            err.write(text + "\n")
            err.flush()

    return say


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Stopped` in the main thread while listening."""

    stopping = []

    def stop(signum: int, frame: Any) -> None:
        if not stopping:  # a second Ctrl-C while cleaning up does not cut the cleaning short
            stopping.append(signum)
            raise _Stopped

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: The event kinds ``--events`` accepts (those of Tiledesk's webhooks the tutorial knows).
EVENT_CHOICES = WEBHOOK_EVENTS
