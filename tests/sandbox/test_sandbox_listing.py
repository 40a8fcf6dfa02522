"""Listing conversations pages in SQL: every page holds what reading them all and slicing gave,
newest first (or oldest first with ``direction=1``), with the total count beside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.sandbox import World, make_world

from tiledesk_tutorial.sandbox import SandboxHandle


@pytest.fixture
def world(sandbox: SandboxHandle) -> Iterator[World]:
    w = make_world(sandbox.url)
    yield w
    w.api.close()


def _page(world: World, **query: object) -> dict:
    text = "&".join(f"{k}={v}" for k, v in query.items())
    answer = world.api.get(f"/{world.project_id}/requests?{text}", token=world.agent_token)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_pages_cover_every_conversation_once_in_order(world: World) -> None:
    made = []
    for n in range(130):
        rid = world.request_id()
        world.send(rid, f"hello {n}")
        made.append(rid)
    newest_first = []
    for page in range(3):
        answer = _page(world, limit=50, page=page)
        assert answer["count"] == 130 and answer["perPage"] == 50
        newest_first += [r["request_id"] for r in answer["requests"]]
    assert newest_first == made[::-1]
    oldest = _page(world, limit=100, page=1, direction=1)
    assert [r["request_id"] for r in oldest["requests"]] == made[100:]
    assert _page(world, limit=100, page=99)["requests"] == []
    huge = _page(world, limit=100, page=10**20)  # beyond SQLite's integers: an empty page
    assert huge["requests"] == [] and huge["count"] == 130


def test_closed_conversations_stay_out_of_the_count_and_the_pages(world: World) -> None:
    kept, closed = world.request_id(), world.request_id()
    world.send(kept, "open")
    world.send(closed, "to close")
    answer = world.api.put(f"/{world.project_id}/requests/{closed}/close", token=world.agent_token)
    assert answer.status_code == 200, answer.text
    listed = _page(world, limit=10, page=0)
    assert listed["count"] == 1 and [r["request_id"] for r in listed["requests"]] == [kept]
    everything = _page(world, limit=10, page=0, status="all")
    assert everything["count"] == 2
