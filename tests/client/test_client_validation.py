"""Bad input is refused before anything is sent, with a message that says what to do."""

from __future__ import annotations

import pytest
from support.client import AGENT_TOKEN, PROJECT_ID, REQUEST_ID
from support.replay_server import ReplayServer

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.config import Config


@pytest.fixture(autouse=True)
def nothing_sent(replay: ReplayServer):  # type: ignore[no-untyped-def]
    """Every test here must leave the server untouched."""
    yield
    assert replay.received == []


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_empty_text(agent: TiledeskClient, text: str | None) -> None:
    with pytest.raises(ValueError, match="text is empty"):
        agent.send_message(REQUEST_ID, text)
    with pytest.raises(ValueError, match="text is empty"):
        agent.send_message(REQUEST_ID, text, type="text")


@pytest.mark.parametrize(
    "project_id",
    ["", "not-a-project", "6b0690cb0ed30d16ca8ddc1", "6b0690cb0ed30d16ca8ddc1az", "x" * 24, 42],
)
def test_project_id_not_24_hex(agent: TiledeskClient, project_id: object) -> None:
    with pytest.raises(ValueError, match="24 hexadecimal characters"):
        agent.send_message(REQUEST_ID, "hi", project_id=project_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="24 hexadecimal characters"):
        agent.project_id = project_id  # type: ignore[assignment]
    with pytest.raises(ValueError, match="24 hexadecimal characters"):
        new_request_id(project_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="24 hexadecimal characters"):
        agent.sign_in_anonymously(project_id)  # type: ignore[arg-type]


def test_no_project_id_at_all(replay: ReplayServer) -> None:
    client = TiledeskClient(replay.url, token=AGENT_TOKEN)
    with pytest.raises(ValueError, match=r"no project id: pass project_id=\.\.\."):
        client.list_requests()


@pytest.mark.parametrize(
    "target",
    ["", "localhost:8000/hook", "ftp://example.com/hook", "http://", "/hook", "https:///x", None],
)
def test_subscription_target_not_http(agent: TiledeskClient, target: object) -> None:
    with pytest.raises(ValueError, match=r"not an http:// or https:// URL"):
        agent.create_subscription(target)  # type: ignore[arg-type]


@pytest.mark.parametrize("event", ["", "  ", "message create", None])
def test_subscription_event_empty(agent: TiledeskClient, event: object) -> None:
    with pytest.raises(ValueError, match=r"not an event name.*message\.create"):
        agent.create_subscription("https://example.com/hook", event)  # type: ignore[arg-type]


@pytest.mark.parametrize("request_id", ["", " ", "support-group/x", "a b"])
def test_bad_request_id(agent: TiledeskClient, request_id: str) -> None:
    with pytest.raises(ValueError, match="new_request_id"):
        agent.send_message(request_id, "hi")
    with pytest.raises(ValueError, match="new_request_id"):
        agent.close_request(request_id)


def test_fields_given_twice(agent: TiledeskClient) -> None:
    with pytest.raises(ValueError, match="'senderFullname' is given twice"):
        agent.send_message(REQUEST_ID, "hi", sender_fullname="A", senderFullname="B")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit": 101}, "between 1 and 100"),
        ({"limit": 0}, "between 1 and 100"),
        ({"page": -1}, "0 or more"),
        ({"status": "open-ish"}, "not a request status.*CLOSED \\(1000\\)"),
        ({"status": []}, "empty list"),
        ({"status": True}, "not a request status"),
    ],
)
def test_bad_paging(agent: TiledeskClient, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        agent.list_requests(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("not-an-email", "pw", "A", "B"), "not an email address"),
        (("a@b.c", "", "A", "B"), "password is empty"),
        (("a@b.c", "pw", " ", "B"), "firstname is empty"),
        (("a@b.c", "pw", "A", ""), "lastname is empty"),
    ],
)
def test_bad_sign_up(replay: ReplayServer, args: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TiledeskClient(replay.url).sign_up(*args)


def test_sign_in_without_credentials(replay: ReplayServer) -> None:
    with pytest.raises(ValueError, match="TILEDESK_EMAIL and TILEDESK_PASSWORD"):
        TiledeskClient(replay.url).sign_in()
    with pytest.raises(ValueError, match="TILEDESK_EMAIL and TILEDESK_PASSWORD"):
        TiledeskClient(replay.url, email="a@b.c").use_basic_auth()


@pytest.mark.parametrize(
    ("token", "match"),
    [
        ("", "token is empty"),
        ("   ", "token is empty"),
        ("Bearer abc.def.ghi", "Bearer.*JWT <token>"),
        ("JWT abc.def\n.ghi", "in one piece"),
    ],
)
def test_bad_tokens(replay: ReplayServer, token: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TiledeskClient(replay.url, token=token)


@pytest.mark.parametrize(
    ("base_url", "match"),
    [
        ("", "base URL is empty"),
        ("api.tiledesk.com/v3", "Did you mean https://api.tiledesk.com/v3"),
        ("ftp://x", "not an http:// or https:// URL"),
        ("http://x/?a=1", "must not have a query"),
    ],
)
def test_bad_base_url(base_url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TiledeskClient(base_url)


@pytest.mark.parametrize("timeout", [0, -1, (1, 2, 3), "5", True])
def test_bad_timeout(replay: ReplayServer, timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout must be"):
        TiledeskClient(replay.url, timeout=timeout)  # type: ignore[arg-type]


def test_from_config_needs_a_url(replay: ReplayServer) -> None:
    with pytest.raises(ValueError, match=r"sandbox_url=sandbox\.url"):
        TiledeskClient.from_config(Config())
    client = TiledeskClient.from_config(Config(project_id=PROJECT_ID), sandbox_url=replay.url)
    assert (client.base_url, client.project_id) == (replay.url, PROJECT_ID)
    real = TiledeskClient.from_config(
        Config(api_url="https://api.tiledesk.com/v3"), sandbox_url=replay.url
    )
    assert real.base_url == "https://api.tiledesk.com/v3"  # the setting wins over the sandbox
