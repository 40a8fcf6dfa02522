"""Bad input at scale against every sandbox endpoint: property-based, with hypothesis.

Random JSON, wrong types, huge and deeply nested bodies, invalid UTF-8, odd headers and raw HTTP
bytes, from every kind of caller. The properties: no answer is a 5xx, every JSON answer is strict
JSON, no stored row changes when a request is rejected, and the sandbox keeps serving.

The sandbox publishes no OpenAPI description, so schemathesis has nothing to read; the routes are
listed here by hand. Examples are derandomized, so every run sends the same cases.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from support.faults import (
    FUZZ,
    header_text,
    json_values,
    nested,
    raw_request,
    stored_state,
    strict_json,
)
from support.sandbox import PASSWORD, World, make_world

from tiledesk_tutorial.sandbox import RetryPolicy, SandboxHandle, start_sandbox

pytestmark = pytest.mark.fuzz

CASES: Counter[str] = Counter()
RAW_FUZZ = settings(FUZZ, max_examples=300)
AUTHORIZED_FUZZ = settings(FUZZ, max_examples=400)
QUERY_FUZZ = settings(FUZZ, max_examples=200)

KNOWN_FIELDS = (
    "text", "type", "sender", "senderFullname", "attributes", "metadata", "channel", "language",
    "email", "password", "firstname", "lastname", "id_project", "name", "event", "target",
    "force", "preflight", "priority", "subject", "sourcePage", "userAgent", "departmentid",
    "participants", "status", "request_status", "phone", "disableEmail",
)  # fmt: skip
QUERY_KEYS = ("page", "limit", "status", "sort", "direction", "preflight", "x")
NUMBERS_AS_TEXT = (
    "0", "-1", "1", "40", "101", "1e3", "99999999999999999999", "1,99999999999999999999999",
    "9" * 5000, "1,,2", " 7 ", "all", "", "NaN", "0x10", "١٢",
)  # fmt: skip


@dataclass(repr=False)
class Target:
    """The fuzzed sandbox and the ids and credentials a request can use."""

    sandbox: SandboxHandle
    world: World
    other: World
    request_id: str
    subscription_id: str

    def __repr__(self) -> str:  # hypothesis prints it with a failing case: no tokens in it
        return f"<Target {self.sandbox.url}>"

    @cached_property
    def ids(self) -> dict[str, list[str]]:
        """Ids for each path parameter: real ones, other projects', unknown and malformed."""
        w = self.world
        return {
            "pid": [w.project_id, self.other.project_id, "0" * 24, "not-a-project"],
            "rid": [self.request_id, w.request_id(), "support-group-x"],
            "sid": [self.subscription_id, "0" * 24, "x"],
        }

    @cached_property
    def credentials(self) -> list[str | None]:
        """Every kind of caller's Authorization header (None: no header)."""
        w = self.world
        basic = requests.auth._basic_auth_str(w.email, PASSWORD)
        return [
            None,
            w.agent_token,
            w.visitor_token,
            self.other.visitor_token,
            basic,
            "Bearer " + w.agent_token.removeprefix("JWT "),
            "JWT garbage",
        ]

    # Strategies are built once: hypothesis caches them, and building new ones for every
    # example costs more than the request.
    @cached_property
    def path_values(self) -> dict[str, st.SearchStrategy[str]]:
        """A strategy for each path parameter: one of ``ids``, or any text."""
        return {
            name: st.sampled_from(choices) | st.text(min_size=1, max_size=30)
            for name, choices in self.ids.items()
        }

    @cached_property
    def bodies(self) -> st.SearchStrategy[tuple[str, bytes | dict | None]]:
        """Request bodies (see :func:`bodies`)."""
        return bodies(self.ids)

    @cached_property
    def authorizations(self) -> st.SearchStrategy[str | None]:
        """A real caller's header, or any text."""
        return st.sampled_from(self.credentials) | header_text


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    # A sandbox of its own: fuzzed subscriptions must not send webhooks to other tests.
    with start_sandbox(retry_policy=RetryPolicy(retries=0, connect_timeout=0.5)) as sandbox:
        world, other = make_world(sandbox.url), make_world(sandbox.url)
        rid = world.request_id()
        world.send(rid, "the conversation under test")
        subscription = world.subscribe("http://127.0.0.1:9/dead-end")
        yield Target(sandbox, world, other, rid, subscription["_id"])
        world.api.close()
        other.api.close()
    print(f"\nsandbox fuzz cases run: {dict(CASES)}")


@pytest.fixture
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """Every record the sandbox logs at ERROR or above while the fuzz runs (must stay empty)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("tiledesk_tutorial.sandbox")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


ROUTES = (
    ("GET", "/"), ("POST", "/auth/signup"), ("POST", "/auth/signin"),
    ("POST", "/auth/signinAnonymously"), ("POST", "/projects"), ("GET", "/projects"),
    ("GET", "/projects/{pid}"), ("GET", "/console"),
    ("GET", "/{pid}/requests"), ("GET", "/{pid}/requests/me"), ("GET", "/{pid}/requests/{rid}"),
    ("POST", "/{pid}/requests/{rid}/messages"), ("GET", "/{pid}/requests/{rid}/messages"),
    ("PUT", "/{pid}/requests/{rid}/close"), ("PUT", "/{pid}/requests/{rid}/closeg"),
    ("POST", "/{pid}/subscriptions"), ("GET", "/{pid}/subscriptions"),
    ("GET", "/{pid}/subscriptions/history"), ("GET", "/{pid}/subscriptions/{sid}"),
    ("DELETE", "/{pid}/subscriptions/{sid}"),
)  # fmt: skip


def check(target: Target, response_status: int | None, before: dict, body_text: str | None,
          content_type: str, errors_logged: list) -> None:  # fmt: skip
    """The properties every answer must have."""
    assert response_status is None or response_status < 500, body_text
    if content_type.startswith("application/json") and body_text:
        strict_json(body_text)
    if response_status is None or response_status >= 400:
        assert stored_state(target.sandbox) == before, "a rejected request changed stored rows"
    assert errors_logged == [], [r.getMessage() for r in errors_logged]


def bodies(ids: dict[str, list[str]]) -> st.SearchStrategy[tuple[str, bytes | dict | None]]:
    """(kind, body) pairs: JSON of any shape, known fields of any type, bytes, forms, nothing."""
    known_value = json_values | st.sampled_from(
        [*ids["pid"], *ids["rid"], "a@example.com", "http://127.0.0.1:9/x", "message.create"]
    )
    field_dicts = st.dictionaries(st.sampled_from(KNOWN_FIELDS), known_value, max_size=6)
    return st.one_of(
        st.tuples(st.just("json"), json_values.map(lambda v: _dumps(v))),
        st.tuples(st.just("fields"), field_dicts.map(lambda v: _dumps(v))),
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
        st.tuples(
            st.just("bad utf-8"),
            st.tuples(st.sampled_from(KNOWN_FIELDS), st.binary(min_size=1, max_size=20)).map(
                lambda kv: b'{"' + kv[0].encode() + b'": "\xff' + kv[1] + b'"}'
            ),
        ),
        st.tuples(st.just("form"), st.dictionaries(st.sampled_from(KNOWN_FIELDS), st.text())),
        st.tuples(st.just("empty"), st.none()),
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity are written as Python writes them


_SET_BY_THE_TEST = {"authorization", "content-type", "content-length", "host", "transfer-encoding"}


def _token(name: str) -> bool:
    """A usable header name (an HTTP token) that does not replace one the test sets."""
    usable = all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
    return bool(name) and usable and name.lower() not in _SET_BY_THE_TEST


header_names = st.lists(header_text.filter(_token), max_size=3)
any_route = st.sampled_from(ROUTES) | st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
)
content_types = (
    st.sampled_from(
        [
            "application/json; charset=latin-1",
            "application/vnd.api+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ]
    )
    | header_text
)
queries = st.dictionaries(
    st.sampled_from(QUERY_KEYS), st.sampled_from(NUMBERS_AS_TEXT) | st.text(max_size=20)
)


numbers = st.integers().map(str) | st.sampled_from(NUMBERS_AS_TEXT)
listing_queries = st.dictionaries(
    st.sampled_from(QUERY_KEYS),
    numbers | st.lists(numbers, min_size=1, max_size=3).map(",".join) | st.text(max_size=20),
    min_size=1,
    max_size=2,  # few parameters at a time: one bad one hides what the others would do
)


@FUZZ
@given(data=st.data())
def test_no_request_gets_a_5xx_or_changes_anything_when_rejected(
    target: Target, errors_logged: list, data: st.DataObject
) -> None:
    method, template = data.draw(any_route, label="route")
    path = template
    for name, values in target.path_values.items():
        if "{" + name + "}" in path:
            value = data.draw(values, label=name)
            path = path.replace("{" + name + "}", requests.utils.quote(value, safe=""))
    prefix = data.draw(st.sampled_from(["", "/v3"]), label="prefix")
    kind, body = data.draw(target.bodies, label="body")
    headers = {}
    authorization = data.draw(target.authorizations, label="auth")
    if authorization:
        headers["Authorization"] = authorization
    if kind in ("json", "fields", "bad utf-8") or data.draw(st.booleans(), label="json type"):
        headers["Content-Type"] = "application/json"
    if data.draw(st.booleans(), label="odd content type"):
        headers["Content-Type"] = data.draw(content_types, label="content type")
    for name in data.draw(header_names, label="headers"):
        headers[name] = data.draw(header_text)
    params = data.draw(queries, label="query")
    before = stored_state(target.sandbox)
    response = requests.request(
        method,
        target.sandbox.url + prefix + path,
        params=params,
        data=body,
        headers=headers,
        timeout=10,
    )
    CASES["structured"] += 1
    check(
        target,
        response.status_code,
        before,
        response.text,
        response.headers.get("Content-Type", ""),
        errors_logged,
    )


# Routes with the caller who may use them, so that the body and the query reach the service.
AUTHORIZED = (
    ("POST", "/auth/signup", None), ("POST", "/auth/signin", None),
    ("POST", "/auth/signinAnonymously", None), ("POST", "/projects", "agent"),
    ("GET", "/{pid}/requests", "agent"), ("GET", "/{pid}/requests/me", "visitor"),
    ("GET", "/{pid}/requests/{rid}", "agent"),
    ("POST", "/{pid}/requests/{rid}/messages", "visitor"),
    ("POST", "/{pid}/requests/{new_rid}/messages", "visitor"),
    ("POST", "/{pid}/requests/{rid}/messages", "agent"),
    ("GET", "/{pid}/requests/{rid}/messages", "visitor"),
    ("PUT", "/{pid}/requests/{rid}/close", "agent"),
    ("PUT", "/{pid}/requests/{rid}/closeg", "visitor"), ("POST", "/{pid}/subscriptions", "agent"),
    ("GET", "/{pid}/subscriptions/history", "agent"),
    ("GET", "/{pid}/subscriptions/{sid}", "agent"),
)  # fmt: skip


@AUTHORIZED_FUZZ
@given(data=st.data())
def test_authorized_requests_with_random_bodies_and_queries(
    target: Target, errors_logged: list, data: st.DataObject
) -> None:
    """The right caller on each route, so that only the body and the query string are wrong."""
    w = target.world
    method, template, who = data.draw(st.sampled_from(AUTHORIZED), label="route")
    path = template.format(
        pid=w.project_id, rid=target.request_id, new_rid=w.request_id(), sid=target.subscription_id
    )
    token = {"agent": w.agent_token, "visitor": w.visitor_token, None: None}[who]
    kind, body = data.draw(target.bodies, label="body")
    headers = {"Content-Type": "application/json"} if kind != "form" else {}
    params = data.draw(queries, label="query")
    before = stored_state(target.sandbox)
    response = w.api.call(method, path, params=params, data=body, headers=headers, token=token)
    CASES["authorized"] += 1
    check(
        target,
        response.status_code,
        before,
        response.text,
        response.headers.get("Content-Type", ""),
        errors_logged,
    )


@QUERY_FUZZ
@given(data=st.data())
def test_query_strings_of_the_listing_routes(
    target: Target, errors_logged: list, data: st.DataObject
) -> None:
    """Paging, status and sort parameters: any text, huge numbers, lists, negative values."""
    w = target.world
    path, token = data.draw(
        st.sampled_from(
            [
                (f"/{w.project_id}/requests", w.agent_token),
                (f"/{w.project_id}/requests/me", w.visitor_token),
                (f"/{w.project_id}/subscriptions/history", w.agent_token),
                (w.messages_path(target.request_id), w.visitor_token),
            ]
        ),
        label="route",
    )
    params = data.draw(listing_queries, label="query")
    before = stored_state(target.sandbox)
    response = w.api.get(path, params=params, token=token)
    CASES["query"] += 1
    check(
        target,
        response.status_code,
        before,
        response.text,
        response.headers.get("Content-Type", ""),
        errors_logged,
    )
    assert response.status_code in (200, 400), response.text


EDGE_NUMBERS = (
    str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), "1" + "0" * 20, "9" * 4300,
    "9" * 4301, f"1,{2**64}", "-0", "+5", "1_000",
)  # fmt: skip


@pytest.mark.parametrize("value", EDGE_NUMBERS, ids=lambda v: v[:22])
@pytest.mark.parametrize("name", ["page", "limit", "status", "direction"])
def test_numbers_at_the_edges_of_64_bits(
    target: Target, errors_logged: list, name: str, value: str
) -> None:
    """Boundary values the random search may miss: SQLite integers stop at 2**63 - 1."""
    w = target.world
    for path, token in (
        (f"/{w.project_id}/requests", w.agent_token),
        (f"/{w.project_id}/requests/me", w.visitor_token),
        (f"/{w.project_id}/subscriptions/history", w.agent_token),
    ):
        response = w.api.get(path, params={name: value}, token=token)
        CASES["edge"] += 1
        assert response.status_code in (200, 400), (path, response.text)
        strict_json(response.text)
    assert errors_logged == []


raw_bytes = st.binary(max_size=40)


@RAW_FUZZ
@given(data=st.data())
def test_raw_http_bytes_never_get_a_5xx(
    target: Target, errors_logged: list, data: st.DataObject
) -> None:
    """Request lines, paths and headers that no HTTP library would send: invalid UTF-8 included."""
    ids = target.ids
    method = data.draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]) | raw_bytes)
    path = data.draw(
        st.sampled_from(
            [
                f"/{ids['pid'][0]}/requests/{ids['rid'][0]}/messages".encode(),
                b"/auth/signin",
                f"/{ids['pid'][0]}/subscriptions".encode(),
                b"/projects",
            ]
        )
        | raw_bytes.map(lambda b: b"/" + b)
    )
    headers = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"Authorization", b"Content-Type", b"X-Odd", b"Accept"])
                | raw_bytes,
                st.sampled_from([target.world.agent_token.encode(), b"application/json"])
                | raw_bytes,
            ),
            max_size=4,
        )
    )
    body = data.draw(st.sampled_from([b'{"text": "hi"}', b""]) | st.binary(max_size=200))
    length = data.draw(st.sampled_from([len(body), 0, len(body) + 5, 10**12]))
    chunked = data.draw(st.booleans())
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: sandbox", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % length)
    before = stored_state(target.sandbox)
    status, answer = raw_request(target.sandbox.url, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    CASES["raw"] += 1
    head, _, text = answer.partition(b"\r\n\r\n")
    json_answer = b"content-type: application/json" in head.lower()
    check(
        target,
        status,
        before,
        text.decode("utf-8", "replace"),
        "application/json" if json_answer else "",
        errors_logged,
    )
    assert requests.get(target.sandbox.url + "/", timeout=5).status_code == 200


# (kind, value, status of the visitor's message POST)
EDGE_BODIES = [
    *[("nested attributes", depth, 200) for depth in (10, 99)],
    *[("nested attributes", depth, 400) for depth in (100, 500, 900, 950, 980, 990, 1000, 5000)],
    *[("nested body", depth, 400) for depth in (500, 990, 1000, 100_000)],
    ("size", 500 * 1024 - 64, 200),
    ("size", 500 * 1024 + 1, 413),
    ("size", 5 * 1024 * 1024, 413),
    ("constant", "NaN", 400),
    ("constant", "Infinity", 400),
    ("constant", "-Infinity", 400),
    ("constant", "1e999", 400),
    ("constant", "-1e999", 400),
    ("constant", "1" * 5000, 400),
    ("constant", "1e308", 200),
    ("bom", "\ufeff", 400),
    ("nul", "\x00", 200),
    ("surrogate", "\\ud800", 400),
    ("surrogate pair", "\\ud83d\\ude00", 200),
]


@pytest.mark.parametrize(("kind", "value", "status"), EDGE_BODIES, ids=lambda v: str(v)[:20])
def test_edge_bodies_are_refused_or_stored_cleanly(
    target: Target, errors_logged: list, kind: str, value: Any, status: int
) -> None:
    """Deep nesting near Python's recursion limit, the body limit, non-JSON numbers, odd text."""
    w = target.world
    if kind == "nested attributes":
        data = ('{"text": "deep", "attributes": ' + nested(value) + "}").encode()
    elif kind == "nested body":
        data = (b"[" * value) + (b"]" * value)
    elif kind == "size":
        data = json.dumps({"text": "x" * (value - 12)}).encode()
    elif kind == "constant":
        data = ('{"text": "n", "attributes": {"n": ' + value + "}}").encode()
    else:
        data = json.dumps({"text": f"odd {value} text"}).encode().replace(b"\\\\", b"\\")
        if kind == "bom":
            data = value.encode() + data
    for path, token in (
        (w.messages_path(target.request_id), w.visitor_token),
        ("/projects", w.agent_token),
        ("/auth/signinAnonymously", None),
    ):
        before = stored_state(target.sandbox)
        response = w.api.post(
            path, data=data, headers={"Content-Type": "application/json"}, token=token
        )
        CASES["edge"] += 1
        check(
            target,
            response.status_code,
            before,
            response.text,
            response.headers.get("Content-Type", ""),
            errors_logged,
        )
        if path.endswith("/messages"):
            assert response.status_code == status, response.text[:300]
            if status == 400:
                assert len(response.json()["err"]) < 300  # one clear sentence, not an echo
    listed = w.api.get(w.messages_path(target.request_id), token=w.agent_token)
    assert listed.status_code == 200
    strict_json(listed.text)  # whatever was stored can still be read back as JSON


def test_the_sandbox_still_serves_the_tutorial_flow_after_the_fuzz(target: Target) -> None:
    world = make_world(target.sandbox.url)
    rid = world.request_id()
    world.send(rid, "still here")
    world.send(rid, "me too", as_agent=True)
    texts = [
        m["text"] for m in world.api.get(world.messages_path(rid), token=world.agent_token).json()
    ]
    assert texts == ["still here", "me too"]
    world.api.close()
