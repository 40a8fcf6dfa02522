"""No log line, printed output, exception message or ``repr`` shows a secret in full.

One whole flow (sandbox, client as agent and as visitor, webhook listener verifying tokens, an
ngrok tunnel through the stand-in agent, and the usual mistakes), with the ``tiledesk_tutorial``
and ``pyngrok`` loggers (and the root logger) at DEBUG. Then every captured log line, everything
printed, every error's message, repr, traceback and curl, and the ``repr`` and ``str`` of every
object a learner gets back are scanned for the password, the agent's and the visitor's JWTs, the
webhook secrets, the delivery token, the ngrok authtoken, and any other whole JWT.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.faults import bare, find_secrets

from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.config import Config
from tiledesk_tutorial.errors import TiledeskError
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.sandbox import RetryPolicy, start_sandbox
from tiledesk_tutorial.sandbox.subscriptions import Delivery
from tiledesk_tutorial.tunnel import TunnelError, close_tunnel, open_tunnel

pytestmark = pytest.mark.security

PASSWORD = "Tr0ub4dor&3 correct horse battery staple"
AUTHTOKEN = "2xyzSECRETngrokTOKENabc_0123456789ABCDEFghijklmnop"
EVENTS = ("message.create", "request.create", "request.update", "request.close")


class _Capture(logging.Handler):
    """Keeps every record as the text a log file would show (traceback included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[_Capture]:
    """Every log record at DEBUG and above, from every logger, while the test runs."""
    capture = _Capture()
    names = ("", "tiledesk_tutorial", "pyngrok", "werkzeug", "urllib3")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(capture)
    yield capture
    logging.getLogger().removeHandler(capture)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _failure(call: Any) -> BaseException:
    """The exception ``call()`` raises (the test fails if it raises none)."""
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError(f"{call} raised nothing")


def _shown(exc: BaseException) -> list[str]:
    """Everything a learner can see of an error: message, repr, traceback, notebook view, curl."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, TiledeskError):
        texts += [*exc.short_traceback(), exc.curl or "", exc.hint or "", repr(exc.body)]
    return texts


def test_a_whole_flow_shows_no_secret_anywhere(
    tmp_path: Path,
    logs: _Capture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    standin,
) -> None:
    email = f"secret-keeper-{uuid.uuid4().hex[:6]}@example.com"
    shown: dict[str, Any] = {}  # what was shown, by where it was shown
    errors: dict[str, BaseException] = {}
    policy = RetryPolicy(retries=2, backoff=0.05, max_backoff=0.1)
    with (
        start_sandbox(retry_policy=policy) as sandbox,
        WebhookListener(verify_token=True, store_file=tmp_path / "events.jsonl") as listener,
    ):
        agent = TiledeskClient(sandbox.url, show_curl=True)
        shown["sign up"] = agent.sign_up(email, PASSWORD, "Ada", "Lovelace")
        shown["sign in"] = agent.sign_in()
        shown["project"] = agent.create_project("Keep it secret")
        agent.project_id = shown["project"].id
        subscriptions = [agent.create_subscription(listener.url, event) for event in EVENTS]
        for subscription in subscriptions:
            listener.add_secret(subscription.secret)
        visitor = agent.as_visitor(firstname="Vic")
        request_id = visitor.new_request_id()
        shown["visitor message"] = visitor.send_message(request_id, "hello")
        shown["agent message"] = agent.send_message(request_id, "hi, how can I help?")
        shown["messages"] = agent.list_messages(request_id)
        shown["request"] = agent.get_request(request_id)
        shown["requests"] = agent.list_requests()
        shown["my requests"] = visitor.list_my_requests()
        shown["projects"] = agent.list_projects()
        shown["subscriptions"] = agent.list_subscriptions()
        shown["closed"] = agent.close_request(request_id)
        # 3 messages ("Chat closed" too), request.create, request.update and request.close
        events = listener.wait_for(count=6)
        assert sandbox.wait_for_deliveries()
        shown["history"] = agent.subscription_history()
        shown["events"] = events
        shown["event summaries"] = [event.summary() for event in events]
        shown["listener"] = listener
        shown["listener stats"] = listener.stats
        shown["clients"] = [agent, visitor]
        shown["sandbox"] = sandbox
        shown["sandbox caller"] = sandbox.auth.authenticate(agent.token)
        delivery_token = events[0].raw["token"]
        shown["outbox delivery"] = Delivery(
            seq=1,
            subscription_id=subscriptions[0].id,
            id_project=agent.project_id,
            event="message.create",
            target=listener.url,
            secret=subscriptions[0].secret,
            body=json.dumps(events[0].raw),
        )

        # HTTP Basic, as the tutorial's webhook section does.
        basic = TiledeskClient(
            sandbox.url, email=email, password=PASSWORD, project_id=agent.project_id
        )
        basic.use_basic_auth()
        shown["basic requests"] = basic.list_requests()
        shown["basic client"] = basic

        # The usual mistakes.
        errors["wrong password"] = _failure(lambda: agent.sign_in(email, PASSWORD + "!"))
        errors["signed up twice"] = _failure(lambda: agent.sign_up(email, PASSWORD, "A", "L"))
        errors["visitor on admin route"] = _failure(visitor.list_subscriptions)
        errors["visitor on another project"] = _failure(
            lambda: visitor.list_messages(request_id, project_id="0" * 24)
        )
        errors["Bearer token"] = _failure(
            lambda: TiledeskClient(sandbox.url, token="Bearer " + bare(agent.token))
        )
        wrong_basic = TiledeskClient(
            sandbox.url, email=email, password="not " + PASSWORD, project_id=agent.project_id
        )
        wrong_basic.use_basic_auth()
        errors["wrong Basic password"] = _failure(wrong_basic.list_requests)
        forged = TiledeskClient(
            sandbox.url, token=bare(agent.token)[:-4] + "AAAA", project_id=agent.project_id
        )
        errors["forged token"] = _failure(forged.list_requests)
        shown["forged client"] = forged
        sandbox_url = sandbox.url

        # A tunnel with an authtoken, then an authtoken the agent rejects (ngrok echoes it).
        public = open_tunnel(
            listener, AUTHTOKEN, ngrok_path=str(standin.path), config_path=str(standin.config_path)
        )
        shown["tunnel url"] = public
        close_tunnel()
        monkeypatch.setenv("NGROK_STANDIN_FAIL", "105")
        errors["rejected authtoken"] = _failure(
            lambda: open_tunnel(
                listener,
                AUTHTOKEN,
                ngrok_path=str(standin.path),
                config_path=str(standin.config_path),
            )
        )
        for client in (agent, basic, wrong_basic, forged):
            client.close()
    errors["sandbox gone"] = _failure(
        lambda: TiledeskClient(sandbox_url, retries=0).get_project("0" * 24)
    )
    shown["settings"] = Config(
        api_url=sandbox_url,
        email=email,
        password=PASSWORD,
        ngrok_authtoken=AUTHTOKEN,
        project_id=agent.project_id,
    )
    shown["settings table"] = shown["settings"].describe()

    assert isinstance(errors["rejected authtoken"], TunnelError)
    secrets = {
        "password": PASSWORD,
        "agent JWT": bare(agent.token),
        "visitor JWT": bare(visitor.token),
        "delivery token": delivery_token,
        "ngrok authtoken": AUTHTOKEN,
    }
    secrets |= {f"webhook secret of {s.event}": s.secret for s in subscriptions}
    printed = capfd.readouterr()
    texts = {"printed": printed.out + printed.err}
    texts |= {f"log line {n}": line for n, line in enumerate(logs.lines)}
    for name, value in shown.items():
        texts[f"repr of {name}"] = repr(value)
        texts[f"str of {name}"] = str(value)
    for name, exc in errors.items():
        for n, text in enumerate(_shown(exc)):
            texts[f"error {name} ({n})"] = text
    leaks = {
        where: found for where, text in texts.items() if (found := find_secrets(text, secrets))
    }
    assert leaks == {}
    # The scan saw what it had to see: curl commands, DEBUG lines of each part, every error.
    assert "curl" in texts["printed"] and "Authorization: JWT eyJh" in texts["printed"]
    everything = "\n".join(logs.lines)
    for logger in ("tiledesk_tutorial.client", "tiledesk_tutorial.listener", "pyngrok"):
        assert f"\n{logger}" in "\n" + everything, logger
    assert "ERR_NGROK_105" in everything
    print(f"\nsecrets scan: {len(texts)} texts, {len(logs.lines)} log lines, {len(errors)} errors")
