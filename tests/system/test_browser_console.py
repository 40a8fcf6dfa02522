"""The agent console in a real browser: sign in, watch a visitor write, reply, and see the webhook.

Headless Chromium drives ``/console`` on a fresh sandbox as an agent would; the visitor writes
through the REST API from the test, and a webhook listener subscribed to ``message.create`` checks
that the agent's reply from the page is a real message of the conversation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import PageErrors, launch_chromium, needs_chromium, output_dir, save_screenshot
from support.sandbox import PASSWORD, Api, World, make_world

from tiledesk_tutorial.listener import WebhookListener

pytestmark = [pytest.mark.browser, needs_chromium]

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 600}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def world(sandbox) -> Iterator[World]:
    world = make_world(sandbox.url)
    yield world
    world.api.close()


@pytest.fixture
def listener(world: World) -> Iterator[WebhookListener]:
    with WebhookListener(port=0) as hooks:
        subscription = world.subscribe(hooks.url, "message.create")
        hooks.add_secret(subscription["secret"])
        yield hooks


def sign_in(page: Any, url: str, email: str, password: str = PASSWORD) -> None:
    page.goto(url)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def conversation(page: Any, request_id: str) -> Any:
    return page.locator(f'#conversations button[data-rid="{request_id}"]')


def test_agent_sees_a_visitor_live_and_replies(sandbox, world, listener, page, request):
    errors = PageErrors(page)
    sign_in(page, sandbox.url + "/console", world.email)
    page.get_by_text("No open conversations").wait_for()
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    # A visitor writes through the API: the conversation shows up without a reload.
    first = world.request_id()
    world.send(first, "Hello, my parcel has not arrived")
    item = conversation(page, first)
    item.wait_for()
    assert "Visitor Vic" in item.inner_text()
    assert "Hello, my parcel has not arrived" in item.inner_text()
    assert item.locator(".unread").inner_text() == "1"

    item.click()
    messages = page.locator("#messages li")
    messages.first.wait_for()
    assert messages.first.get_attribute("data-role") == "visitor"
    assert messages.first.locator(".text").inner_text() == "Hello, my parcel has not arrived"
    assert item.locator(".unread").is_hidden()

    # The visitor writes again while the conversation is open: it is appended, live.
    world.send(first, "Order 1234, sent last Monday")
    page.locator("#messages li", has_text="Order 1234").wait_for()

    # The agent replies from the page (Enter sends); the webhook carries it as an agent message.
    reply = "Hi, I'm Ada. I'm sorry! Let me check order 1234."
    page.get_by_label("Reply").fill(reply)
    page.get_by_label("Reply").press("Enter")
    mine = page.locator('#messages li[data-role="agent"]', has_text=reply)
    mine.wait_for()
    assert "(you)" in mine.locator(".sender").inner_text()
    assert page.get_by_label("Reply").input_value() == ""
    [event] = listener.wait_for(lambda e: e.text == reply, timeout=10)
    assert event.role == "agent"
    assert event.request_id == first
    assert event.payload["sender"] == world.agent_id

    # Someone else in the room starts a conversation: it appears with an unread count.
    other_token, _ = world.new_visitor("Grace")
    second = world.request_id()
    response = world.api.post(
        world.messages_path(second), json={"text": "Do you ship to Norway?"}, token=other_token
    )
    assert response.status_code == 200, response.text
    conversation(page, second).locator(".unread", has_text="1").wait_for()
    page.locator("#status.ok").wait_for()
    save_screenshot(page.locator("body"), output_dir(request.node), "console.png")

    # Markup in a message is shown as text and never runs.
    world.send(first, XSS)
    shown = page.locator('#messages li[data-role="visitor"] .text', has_text="window.__xss=1")
    shown.wait_for()
    assert shown.inner_text() == XSS
    assert page.locator("#messages img, #messages script").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("window.__sameDocument") is True
    errors.assert_none()


def test_sign_in_errors_close_and_an_expired_session(sandbox, world, page):
    errors = PageErrors(page)
    rid = world.request_id()
    world.send(rid, "Can someone help?")

    # Served under the API prefix too; a wrong password is explained on the form.
    sign_in(page, sandbox.url + "/v3/console/", world.email, "not-the-password")
    page.get_by_role("alert").filter(has_text="Wrong password").wait_for()

    sign_in(page, sandbox.url + "/v3/console/", world.email)
    conversation(page, rid).click()
    page.locator("#messages li", has_text="Can someone help?").wait_for()

    # Closing takes two clicks; the sandbox then adds its "Chat closed" system message.
    close = page.get_by_role("button", name="Close conversation")
    close.click()
    page.get_by_role("button", name="Click again to close").click()
    page.locator('#messages li[data-role="system"]', has_text="Chat closed").wait_for()
    assert page.get_by_label("Reply").is_disabled()
    assert page.locator("#conv-state").inner_text().lower() == "closed"
    conversation(page, rid).wait_for(state="detached")  # open conversations only, by default
    page.get_by_label("Show closed").check()
    conversation(page, rid).locator(".state", has_text="closed").wait_for()

    # The token is kept in sessionStorage only; a token the sandbox refuses leads back to sign-in.
    token = page.evaluate("JSON.parse(sessionStorage.getItem('tiledesk-console')).token")
    assert token.startswith("JWT ")
    assert token.split()[1] not in page.url
    assert page.evaluate("localStorage.length") == 0
    page.evaluate(
        """() => {
            const saved = JSON.parse(sessionStorage.getItem('tiledesk-console'));
            saved.token = 'JWT not-a-valid-token';
            sessionStorage.setItem('tiledesk-console', JSON.stringify(saved));
        }"""
    )
    page.reload()
    page.get_by_role("alert").filter(has_text="sign in again").wait_for()
    assert page.get_by_label("Email").input_value() == world.email
    errors.assert_none(ignore=("401 (UNAUTHORIZED)", "401 (Unauthorized)"))


def test_a_presenter_starts_from_an_empty_sandbox(sandbox, page):
    errors = PageErrors(page)
    page.goto(sandbox.url + "/console")
    page.get_by_role("button", name="No account on this sandbox? Create one").click()
    page.get_by_label("First name").fill("Pat")
    page.get_by_label("Last name").fill("Presenter")
    page.get_by_label("Email").fill("pat@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and sign in").click()

    page.get_by_text("not an agent of any project yet").wait_for()
    page.get_by_label("Project name").fill("Friday workshop")
    page.get_by_role("button", name="Create project").click()
    project_id = page.locator("#project-id")
    project_id.filter(has_text=re.compile(r"^[0-9a-f]{24}$")).wait_for()
    assert page.locator("#project").input_value() == project_id.inner_text()

    # Someone in the room writes to that PROJECT_ID as an anonymous visitor.
    api = Api(sandbox.url)
    try:
        pid = project_id.inner_text()
        visitor = api.post(
            "/auth/signinAnonymously", json={"id_project": pid, "firstname": "Sam"}
        ).json()
        rid = f"support-group-{pid}-{uuid.uuid4().hex}"
        sent = api.post(
            f"/{pid}/requests/{rid}/messages",
            json={"text": "Hi from row 3"},
            token=visitor["token"],
        )
        assert sent.status_code == 200, sent.text
    finally:
        api.close()
    conversation(page, rid).filter(has_text="Hi from row 3").wait_for()

    # Signing up again with the same email explains what happened.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="No account on this sandbox? Create one").click()
    page.get_by_label("First name").fill("Pat")
    page.get_by_label("Last name").fill("Again")
    page.get_by_label("Email").fill("pat@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and sign in").click()
    page.get_by_role("alert").filter(has_text="Email already registered").wait_for()
    errors.assert_none(ignore=("403 (FORBIDDEN)", "403 (Forbidden)"))


def test_messages_arrive_over_the_realtime_socket_and_survive_a_restart(tmp_path, page):
    """No polling: after the first load, live messages come over the WebSocket only; when the
    sandbox restarts, the page says it is reconnecting, then catches up and goes on live."""
    from tiledesk_tutorial.sandbox import start_sandbox

    data = tmp_path / "data"
    rest_calls: list[str] = []
    page.on("request", lambda r: rest_calls.append(r.url) if "/requests" in r.url else None)
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    errors = PageErrors(page)
    with start_sandbox(data_dir=data) as first:
        world = make_world(first.url)
        rid = world.request_id()
        world.send(rid, "Are you there?")
        sign_in(page, first.url + "/console", world.email)
        conversation(page, rid).click()
        page.locator("#messages li", has_text="Are you there?").wait_for()
        page.locator('#status[data-live="live"]').wait_for()
        assert [s.url.split("?")[0] for s in sockets] == [first.url.replace("http", "ws") + "/ws/"]
        before = len(rest_calls)
        for n in range(3):
            world.send(rid, f"live message {n}")
            page.locator("#messages li", has_text=f"live message {n}").wait_for()
        assert rest_calls[before:] == []  # every one of them came over the socket
        port = first.port
    page.locator('#status[data-live="reconnecting"]').wait_for()
    assert "reconnecting" in page.locator("#status").inner_text().lower()
    with start_sandbox(port=port, data_dir=data) as second:
        world.api.base_url = second.url
        world.send(rid, "sent while the page was reconnecting")
        page.locator("#messages li", has_text="sent while the page was reconnecting").wait_for()
        page.locator('#status[data-live="live"]').wait_for()
        world.send(rid, "and live again")
        page.locator("#messages li", has_text="and live again").wait_for()
        assert page.locator("#messages li").count() == 6  # nothing shown twice
    world.api.close()
    errors.assert_none(ignore=("WebSocket connection to",))


def test_projects_of_the_same_name_are_told_apart_in_the_picker(sandbox, world, page):
    """A tutorial run twice may leave two "Tutorial Project"s: each option says which is which."""
    errors = PageErrors(page)
    second = world.api.post("/projects", json={"name": "Tutorial Project"}, token=world.agent_token)
    assert second.status_code == 200, second.text
    ids = [world.project_id, second.json()["_id"]]
    sign_in(page, sandbox.url + "/console", world.email)
    page.get_by_text("2 projects: choose one.").wait_for()
    options = page.locator("#project option")
    labels = {options.nth(i).get_attribute("value"): options.nth(i).inner_text() for i in (1, 2)}
    assert sorted(labels) == sorted(ids)
    for pid, label in labels.items():
        assert re.fullmatch(
            rf"Tutorial Project · …{pid[-6:]} · created \d\d:\d\d \(owner\)", label
        ), label
    assert len(set(labels.values())) == 2
    page.locator("#project").select_option(ids[1])
    page.locator("#project-id").filter(has_text=ids[1]).wait_for()
    errors.assert_none()
