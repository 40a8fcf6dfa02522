"""The room view in a real browser: no token no page, learners appear live, failing targets show.

Headless Chromium opens the ``Room view:`` address of a sandbox in room mode, as the presenter
would; learners act through the REST API from the test (sign up, create a project, send), their
webhook targets are real local servers (one answering 500, one that accepts and never answers),
and one learner follows their project over the Realtime API. The last test makes the README's
screenshot (``docs/images/room-view.png`` with ``UPDATE_DOC_IMAGES=1``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import PageErrors, needs_chromium, output_dir, save_screenshot
from support.sandbox import Api, Receiver, Socket, World, sign_up_agent

from tiledesk_tutorial.sandbox import RetryPolicy, SandboxHandle, start_sandbox

pytestmark = [pytest.mark.browser, needs_chromium]

#: Retries slow enough that a failing target stays "failing" while the page is looked at.
PATIENT = RetryPolicy(retries=50, backoff=0.5, max_backoff=1.0)


@pytest.fixture
def room_sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox(port=0, retry_policy=PATIENT, room=True) as handle:
        yield handle


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def failing_target() -> Iterator[Receiver]:
    receiver = Receiver(respond=lambda n, _: 500)
    yield receiver
    receiver.stop()


def learner_world(url: str, first: str, last: str) -> World:
    """A learner who signed up as ``first last``, with a project and a visitor."""
    api = Api(url)
    email, token, user_id = sign_up_agent(api, first, last)
    project = api.post("/projects", json={"name": f"{first}'s helpdesk"}, token=token).json()
    world = World(api, email, token, user_id, project["_id"], "", "")
    world.visitor_token, world.visitor_id = world.new_visitor("Vic")
    return world


def row(page: Any, world: World) -> Any:
    return page.locator(f'#learners tr[data-learner="{world.agent_id}"]')


def test_no_token_no_page(room_sandbox: SandboxHandle, page: Any) -> None:
    for address in (room_sandbox.url + "/room", room_sandbox.url + "/room?token=guess"):
        response = page.goto(address)
        assert response.status == 401
        assert "presenter token" in page.content()
        assert page.locator("table").count() == 0


def test_a_learner_appears_live_as_they_sign_up_and_send(
    room_sandbox: SandboxHandle, page: Any, failing_target: Receiver
) -> None:
    errors = PageErrors(page)
    page.goto(room_sandbox.room.view_url(room_sandbox.url))
    page.get_by_text("No learner has signed up yet").wait_for()
    page.locator("#connection.live").wait_for()
    assert "token" not in page.url  # out of the address bar, which is projected on the wall
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    api = Api(room_sandbox.url)
    email, token, user_id = sign_up_agent(api, "Grace", "Hopper")
    learner = page.locator(f'#learners tr[data-learner="{user_id}"]')
    learner.wait_for()
    assert "Grace Hopper" in learner.inner_text() and email in learner.inner_text()
    learner.get_by_text("no project yet").wait_for()
    assert learner.get_attribute("data-status") == "attention"

    project = api.post("/projects", json={"name": "Grace's helpdesk"}, token=token).json()
    learner.get_by_text("Grace's helpdesk").wait_for()
    world = World(api, email, token, user_id, project["_id"], "", "")
    world.visitor_token, _ = world.new_visitor("Vic")
    world.send(world.request_id(), "Hello, where is my parcel?")
    learner.locator('td[data-sent="1"]').wait_for()
    assert "1 as visitor" in learner.inner_text()
    assert "where is my parcel" not in page.content()  # counts, never the text

    # The learner's handler answers 500: the row shows it failing, with the next retry.
    world.subscribe(failing_target.url)
    world.send(world.request_id(), "second conversation")
    hook = learner.locator('li[data-state="failing"]')
    hook.wait_for()
    assert "HTTP 500" in hook.inner_text() and "failing for" in hook.inner_text()
    assert "next retry" in hook.inner_text()
    assert learner.get_attribute("data-status") == "stuck"
    assert "1 with a failing webhook" in page.locator("#summary").inner_text()
    assert page.evaluate("window.__sameDocument") is True

    # A reload keeps the room open (the token is in the page's cookie now).
    page.reload()
    learner.locator('li[data-state="failing"]').wait_for()
    errors.assert_none()
    api.close()


def test_a_restarted_sandbox_asks_for_its_new_address(tmp_path, page: Any) -> None:
    first = start_sandbox(port=0, data_dir=tmp_path, room=True)
    port = first.port
    try:
        page.goto(first.room.view_url(first.url))
        page.locator("#connection.live").wait_for()
        learner = learner_world(first.url, "Ada", "Lovelace")
        row(page, learner).wait_for()
        learner.api.close()
    finally:
        first.stop()
    page.locator("#connection.down").wait_for()
    with start_sandbox(port=port, data_dir=tmp_path, room=True):  # a new token, the same room
        page.get_by_text("the sandbox has a new presenter token").wait_for()
    assert row(page, learner).count() == 1  # what it showed stays on the wall meanwhile


def test_the_room_view_screenshot(room_sandbox: SandboxHandle, page: Any, request) -> None:
    room_sandbox.room.waiting_after = 1.0
    cast = [("Ada", "Lovelace"), ("Alan", "Turing"), ("Grace", "Hopper"), ("Linus", "Ekström"),
            ("Margaret", "Hamilton"), ("Tim", "Berners-Lee")]  # fmt: skip
    healthy = Receiver()
    failing = Receiver(respond=lambda n, _: 500)
    asleep = socket.create_server(("127.0.0.1", 0))  # a laptop gone to sleep: never answers
    worlds: list[World] = []
    feed = None
    try:
        for first, last in cast[:-1]:
            worlds.append(learner_world(room_sandbox.url, first, last))
        sign_up_agent(Api(room_sandbox.url), *cast[-1])  # the latecomer: no project yet
        targets = [healthy.url, healthy.url, failing.url, None,
                   f"http://127.0.0.1:{asleep.getsockname()[1]}/hook"]  # fmt: skip
        for n, (world, target) in enumerate(zip(worlds, targets, strict=True)):
            if target:
                world.subscribe(target)
            for k in range(n % 3 + 1):
                rid = world.request_id()
                world.send(rid, f"question {k}")
                world.send(rid, f"answer {k}", as_agent=True)
        feed = Socket(room_sandbox.url, worlds[3].agent_token)  # Linus receives over realtime
        page.goto(room_sandbox.room.view_url(room_sandbox.url))
        for world in worlds:
            row(page, world).wait_for()
        row(page, worlds[2]).locator('li[data-state="failing"]').wait_for()
        row(page, worlds[4]).locator('li[data-state="waiting"]').wait_for()
        row(page, worlds[3]).get_by_text("connected").wait_for()
        save_screenshot(page.locator("body"), output_dir(request.node), "room-view.png")
    finally:
        if feed is not None:
            feed.close()
        for world in worlds:
            world.api.close()
        healthy.stop()
        failing.stop()
        asleep.close()
