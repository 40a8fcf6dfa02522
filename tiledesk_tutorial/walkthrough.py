"""The whole tutorial, headless: every step run for real, each printed with its result.

``make walkthrough`` (or ``python -m tiledesk_tutorial walkthrough``) is what a presenter runs
before going on stage. Without ``TILEDESK_API_URL`` it starts a private sandbox on a free port;
with it, it runs against that Tiledesk with the account in ``TILEDESK_EMAIL`` /
``TILEDESK_PASSWORD`` (environment or ``.env``; asked for when run in a terminal) and the
tutorial's project (``TILEDESK_PROJECT_ID``, or the one the notebooks remembered, or a new one).
Webhooks reach it through an ngrok tunnel in live mode, as in the notebooks; with ``--realtime``
it receives over Tiledesk's Realtime API instead (notebook 06): no tunnel, no subscription.

It stops at the first step that fails, prints why on one line, and exits with status 1. Secrets
(passwords, tokens, webhook secrets) are never printed in full.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

import requests

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.config import get_default
from tiledesk_tutorial.errors import EmailAlreadyRegisteredError, TiledeskTutorialError
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.realtime import RealtimeFeed
from tiledesk_tutorial.redact import redact
from tiledesk_tutorial.tunnel import close_tunnel, webhook_target
from tiledesk_tutorial.tutorial import (
    AGENT_FIRSTNAME,
    AGENT_LASTNAME,
    Tutorial,
    TutorialError,
)
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload

__all__ = ["WalkthroughFailed", "run_walkthrough"]

VISITOR_NAME = "John"
FIRST_TEXT = "hello my name is John and I need help"
VISITOR_TEXT = "My order #4242 has not arrived yet."
AGENT_TEXT = "Hi I'm Ada. How can I help you?"
_WIDTH = 47
# Long enough that PyJWT does not warn about a short HMAC key.
_FORGED_SECRET = "not-the-subscription-secret-0123456789abcdef"  # noqa: S105


class WalkthroughFailed(TiledeskTutorialError):
    """A step failed; ``step`` names it and the message says why."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        super().__init__(reason)


@dataclass
class _Run:
    """What the steps share."""

    tutorial: Tutorial
    timeout: float
    show_curl: bool
    agent: TiledeskClient | None = None
    visitor: TiledeskClient | None = None
    project_id: str = ""
    request_id: str = ""
    listener: WebhookListener | None = None
    feed: RealtimeFeed | None = None
    subscriptions: list[str] = field(default_factory=list)
    tunnel_opened: bool = False

    @property
    def source(self) -> WebhookListener | RealtimeFeed:
        """Where events arrive: the realtime feed, or the webhook listener."""
        source = self.feed or self.listener
        assert source is not None
        return source

    def wait(self, what: str, predicate: Callable[[Event], bool]) -> Event:
        channel = "realtime event" if self.feed is not None else "webhook"
        try:
            return self.source.wait_for(predicate, timeout=self.timeout)[0]
        except TimeoutError as exc:
            raise WalkthroughFailed("", f"no {what} {channel}: {exc}") from None


# -- the steps -----------------------------------------------------------------------------------
def _sign_up(run: _Run) -> str:
    account = run.tutorial.account
    agent = run.tutorial.client(show_curl=run.show_curl)
    run.agent = agent
    try:
        agent.sign_up(account.email, account.password, AGENT_FIRSTNAME, AGENT_LASTNAME)
    except EmailAlreadyRegisteredError:
        return f"{account.email} has an account already: signing in with it"
    return f"{account.email} signed up (password hidden)"


def _sign_in(run: _Run) -> str:
    assert run.agent is not None
    auth = run.agent.sign_in()
    return f"token {redact(auth.token)}, sub={auth.claims.get('sub')!r}"


def _project(run: _Run) -> str:
    assert run.agent is not None
    tutorial = run.tutorial
    if tutorial.is_live:
        run.project_id = tutorial.ensure_project(run.agent)
        run.agent.project_id = run.project_id
        return f"PROJECT_ID {run.project_id}"
    project = run.agent.create_project("Walkthrough")
    run.project_id = run.agent.project_id = project.id
    return f"PROJECT_ID {project.id} ({project.name!r})"


def _visitor(run: _Run) -> str:
    assert run.agent is not None
    run.visitor = run.agent.as_visitor(run.project_id, firstname=VISITOR_NAME)
    user = run.visitor.user
    token = run.visitor.token
    return (
        f"visitor {VISITOR_NAME} ({user.id if user else '?'}), token {redact(token)}, sub='guest'"
    )


def _first_message(run: _Run) -> str:
    assert run.visitor is not None
    run.request_id = new_request_id(run.project_id)
    message = run.visitor.send_message(run.request_id, FIRST_TEXT)
    request = message.request
    status = request.status_name if request is not None else "?"
    return f"{run.request_id} created, status {status}"


def _agent_view(run: _Run) -> str:
    assert run.agent is not None
    request = run.agent.get_request(run.request_id)
    messages = run.agent.list_messages(run.request_id)
    texts = [m.text for m in messages]
    if FIRST_TEXT not in texts:
        raise WalkthroughFailed("", f"the agent does not see the first message; got {texts!r}")
    return f"the agent sees {request.lead_name or '?'}'s conversation, {len(messages)} message(s)"


def _listen(run: _Run) -> str:
    assert run.agent is not None
    run.listener = WebhookListener(port=0).start()
    target = webhook_target(run.listener, run.tutorial.api_url)
    run.tunnel_opened = target != run.listener.url
    for event in ("message.create", "request.close"):
        subscription = run.agent.create_subscription(target, event)
        if not subscription.secret:
            raise WalkthroughFailed("", f"the {event} subscription came back without its secret")
        run.listener.add_secret(subscription.secret)
        run.subscriptions.append(subscription.id)
    return f"{target} subscribed to message.create and request.close"


def _subscribe_realtime(run: _Run) -> str:
    assert run.agent is not None
    run.feed = RealtimeFeed(run.agent).start()
    return f"{run.feed.url} subscribed to /{run.project_id}/requests (no public URL needed)"


def _checked(run: _Run) -> str:
    return "(via realtime)" if run.feed is not None else "(secret checked)"


def _visitor_webhook(run: _Run) -> str:
    assert run.visitor is not None
    run.visitor.send_message(run.request_id, VISITOR_TEXT)
    event = run.wait(
        "visitor message", lambda e: e.is_message and e.text == VISITOR_TEXT and e.role == "visitor"
    )
    return f"[{event.role}] {event.sender_fullname}: {event.text} {_checked(run)}"


def _agent_webhook(run: _Run) -> str:
    assert run.agent is not None
    run.agent.send_message(run.request_id, AGENT_TEXT)
    event = run.wait(
        "agent reply", lambda e: e.is_message and e.text == AGENT_TEXT and e.role == "agent"
    )
    return f"[{event.role}] {event.sender_fullname}: {event.text} {_checked(run)}"


def _forged(run: _Run) -> str:
    assert run.listener is not None
    forged = make_delivery(
        make_message_payload("I am not Tiledesk", project_id=run.project_id), _FORGED_SECRET
    )
    answer = requests.post(run.listener.url, data=forged.data(), headers=forged.headers, timeout=5)
    if answer.status_code != 401:
        raise WalkthroughFailed("", f"a forged delivery got {answer.status_code}, expected 401")
    return "a delivery with a wrong x-hook-secret was refused with 401"


def _history(run: _Run) -> str:
    assert run.agent is not None and run.listener is not None
    # Servers record a delivery just after sending it: give the last ones a moment to appear.
    logs = run.agent.wait_for_subscription_history(run.listener.stats["kept"], timeout=3.0)
    if not logs:
        return "empty: this server does not log deliveries (SUBSCRIPTION_LOG_ENABLED is off)"
    ok = sum(1 for entry in logs if entry.ok)
    return f"{len(logs)} recorded deliveries, {ok} answered 2xx"


def _close(run: _Run) -> str:
    assert run.agent is not None
    request = run.agent.close_request(run.request_id)
    run.wait(
        "request.close", lambda e: e.event == "request.close" and e.request_id == run.request_id
    )
    # Tiledesk then posts a system message ("Chat closed"); count it when it comes soon.
    with contextlib.suppress(TimeoutError):
        run.source.wait_for(
            lambda e: e.is_message and e.role == "system" and e.request_id == run.request_id,
            timeout=min(run.timeout, 3.0),
        )
        return f"status {request.status_name}, request.close and the system message received"
    return f"status {request.status_name}, request.close received"


STEPS: list[tuple[str, Callable[[_Run], str]]] = [
    ("Sign up", _sign_up),
    ("Sign in", _sign_in),
    ("Create the project (PROJECT_ID)", _project),
    ("Anonymous end-user sign-in", _visitor),
    ("Send the first message", _first_message),
    ("The agent's view of the conversation", _agent_view),
    ("Webhook listener and subscriptions", _listen),
    ("Visitor message received by webhook", _visitor_webhook),
    ("Agent reply received by webhook", _agent_webhook),
    ("Forged delivery refused", _forged),
    ("Delivery history", _history),
    ("Close the conversation", _close),
]
# With --realtime: the same conversation received over the Realtime API (no tunnel, nothing to
# subscribe or forge, no delivery history).
REALTIME_STEPS: list[tuple[str, Callable[[_Run], str]]] = [
    *STEPS[:6],
    ("Realtime feed connected and subscribed", _subscribe_realtime),
    ("Visitor message received live", _visitor_webhook),
    ("Agent reply received live", _agent_webhook),
    ("Close the conversation", _close),
]


# -- running -------------------------------------------------------------------------------------
def run_walkthrough(
    *,
    out: TextIO | None = None,
    timeout: float = 15.0,
    show_curl: bool = False,
    interactive: bool | None = None,
    realtime: bool = False,
) -> int:
    """Run every step; return 0 when all passed, 1 at the first failure (after cleaning up).

    ``realtime``: receive over the Realtime API instead of webhooks (no tunnel in live mode).
    """
    steps = REALTIME_STEPS if realtime else STEPS
    out = out if out is not None else sys.stdout
    started = time.monotonic()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    try:
        with _tutorial(say, interactive) as tutorial:
            run = _Run(tutorial=tutorial, timeout=timeout, show_curl=show_curl)
            try:
                for number, (name, step) in enumerate(steps, start=1):
                    label = f"[{number:2d}/{len(steps)}] {name} "
                    print(f"{label:.<{_WIDTH}} ", end="", file=out, flush=True)
                    try:
                        result = step(run)
                    except Exception as exc:
                        say("FAILED")
                        raise WalkthroughFailed(name, _one_line(exc)) from None
                    say(f"ok  {result}")
                received = run.source.stats["kept" if run.feed is None else "events_kept"]
            finally:
                _clean_up(run)
    except WalkthroughFailed as exc:
        say(f"Walkthrough failed at '{exc.step}': {exc}")
        return 1
    except (TutorialError, ValueError) as exc:
        say(f"Walkthrough could not start: {_one_line(exc)}")
        return 1
    elapsed = time.monotonic() - started
    what = "realtime events" if realtime else "webhooks"
    say(f"All {len(steps)} steps passed: {received} {what} received in {elapsed:.1f} s.")
    return 0


@contextlib.contextmanager
def _tutorial(say: Callable[[str], None], interactive: bool | None) -> Iterator[Tutorial]:
    config = get_default()
    can_ask = sys.stdin.isatty() if interactive is None else interactive
    if config.api_url:
        say(f"Tiledesk tutorial walkthrough, live mode: {config.api_url}")
        tutorial = Tutorial.live(config, ask=None if can_ask else _cannot_ask, say=say)
        try:
            yield tutorial
        finally:
            tutorial.close()
        return
    from tiledesk_tutorial.sandbox import start_sandbox

    sandbox = start_sandbox(port=0)
    say(f"Tiledesk tutorial walkthrough, sandbox mode: {sandbox.url} (private, temporary)")
    tutorial = Tutorial.on_sandbox(
        sandbox.url,
        config,
        home=sandbox.data_dir,
        sandbox=sandbox,
        where="started for the walkthrough",
        shared=False,
        say=say,
    )
    try:
        yield tutorial
    finally:
        tutorial.close()
        sandbox.stop()


def _cannot_ask(prompt: str, secret: bool) -> str:
    raise TutorialError(
        "live mode needs your Tiledesk account.",
        hint="set TILEDESK_EMAIL and TILEDESK_PASSWORD (environment or .env), or run the "
        "walkthrough in a terminal to be asked.",
    )


def _clean_up(run: _Run) -> None:
    """Delete the subscriptions (a real Tiledesk would keep posting to a dead URL), stop the
    listener and the tunnel. Failures here are not the walkthrough's result."""
    if run.agent is not None:
        for subscription_id in run.subscriptions:
            with contextlib.suppress(Exception):
                run.agent.delete_subscription(subscription_id)
    if run.feed is not None:
        run.feed.stop()
    if run.listener is not None:
        run.listener.stop()
    if run.tunnel_opened:
        close_tunnel()
    # The agent is the tutorial's client (closed with it); the visitor shares its connections.


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__
