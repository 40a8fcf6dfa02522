"""curl rendering: the command a learner would type, runnable by a shell, secrets redacted."""

from __future__ import annotations

import base64
import json
import shlex

import requests

from tiledesk_tutorial.curl import curl_for_prepared, render_curl

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJndWVzdCIsImZpcnN0bmFtZSI6IkpvaG4ifQ."
    "dGhpcy1pcy1ub3QtYS1yZWFsLXNpZ25hdHVyZQ"
)
URL = "http://127.0.0.1:3000/6b0690cb0ed30d16ca8ddc1a/requests/support-group-x/messages"


def args_of(command: str) -> list[str]:
    """What a POSIX shell would pass to curl."""
    return shlex.split(command.replace("\\\n", " "))


def test_message_call_looks_like_the_tutorial() -> None:
    prepared = requests.Request(
        "POST", URL, json={"text": "Hello, I'm John"}, headers={"Authorization": f"JWT {JWT}"}
    ).prepare()
    command = curl_for_prepared(prepared)
    assert command.splitlines()[0] == f"curl -X POST {URL} \\"
    args = args_of(command)
    assert args == [
        "curl",
        "-X",
        "POST",
        URL,
        "-H",
        "Content-Type: application/json",
        "-H",
        f"Authorization: JWT {JWT[:4]}…({len(JWT)} chars)",
        "-d",
        '{"text": "Hello, I\'m John"}',
    ]
    assert JWT not in command and JWT.split(".")[2] not in command


def test_passwords_in_bodies_and_basic_auth_are_hidden() -> None:
    prepared = requests.Request(
        "POST",
        "http://h/auth/signin",
        json={"email": "ada@example.com", "password": "Passw0rd!", "nested": [{"secret": "s"}]},
        auth=("ada@example.com", "Passw0rd!"),
    ).prepare()
    command = curl_for_prepared(prepared)
    args = args_of(command)
    assert args[args.index("-u") + 1] == "ada@example.com:***"
    assert json.loads(args[args.index("-d") + 1]) == {
        "email": "ada@example.com",
        "password": "***",
        "nested": [{"secret": "***"}],
    }
    assert "Passw0rd!" not in command
    assert base64.b64encode(b"ada@example.com:Passw0rd!").decode() not in command


def test_get_with_query_has_no_method_flag_and_keeps_commas_readable() -> None:
    command = render_curl("GET", "http://h/p/requests?page=0&status=100,200")
    assert args_of(command) == ["curl", "http://h/p/requests?page=0&status=100,200"]
    assert "-X" not in command


def test_put_without_body_and_unicode_text() -> None:
    assert args_of(render_curl("put", "http://h/x/close")) == [
        "curl",
        "-X",
        "PUT",
        "http://h/x/close",
    ]
    body = json.dumps({"text": "Ciao, perché?"}).encode()  # sent ASCII-escaped by requests
    args = args_of(render_curl("POST", "http://h/m", {"Content-Type": "application/json"}, body))
    assert args[-1] == '{"text": "Ciao, perché?"}'


def test_unknown_scheme_and_stray_jwts_are_hidden() -> None:
    command = render_curl(
        "POST", "http://h/x", {"Authorization": f"Bearer {JWT}"}, f"note={JWT}".encode()
    )
    assert JWT not in command
    assert "Authorization: Bearer ***" in command


def test_non_json_body_is_shown_as_is() -> None:
    args = args_of(render_curl("POST", "http://h/x", {"Content-Type": "text/plain"}, "a b"))
    assert args[-2:] == ["-d", "a b"]


def test_a_whole_delivery_is_shown_with_every_secret_hidden() -> None:
    """Event.redacted_raw: the body as it came, the token and any secret field shortened."""
    from tiledesk_tutorial.redact import redact_secrets
    from tiledesk_tutorial.webhooks import make_delivery, make_message_payload, parse_delivery

    secret = "a-secret-of-sufficient-length-0123456789"
    delivery = make_delivery(make_message_payload("hi"), secret)
    event = parse_delivery(delivery.body)
    token = event.raw["token"]
    shown = event.redacted_raw()
    assert sorted(shown) == ["hook", "payload", "timestamp", "token"]
    assert shown["payload"] == event.payload and shown["timestamp"] == event.timestamp
    assert shown["token"] == f"{token[:4]}…({len(token)} chars)"
    assert token not in json.dumps(shown)
    nested = {"hook": {"Secret": secret}, "notes": [f"copied JWT {token}"], "n": 1}
    hidden = redact_secrets(nested)
    assert hidden["hook"]["Secret"] == f"{secret[:4]}…({len(secret)} chars)"
    assert token not in hidden["notes"][0] and hidden["n"] == 1
    assert nested["hook"]["Secret"] == secret  # a copy: the event keeps what came
