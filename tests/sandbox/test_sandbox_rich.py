"""Rich conversations: image and file messages, chat uploads, reopen and rating.

Each test replays a recording of the real server (tests/transcripts/rich/) against the sandbox
over real HTTP and compares status, headers and the body's shape; the webhooks of the whole flow
are compared with the recorded deliveries.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from support.faults import SandboxProcess
from support.mounts import private_mounts_available, seen_by, small_disk
from support.replay_server import TRANSCRIPTS, load_transcript
from support.sandbox import Receiver, Socket, World, make_world, shape

from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.wire import UPLOAD_LIMIT, topic_messages, topic_request


def tiny_png() -> bytes:
    """A valid 1x1 PNG (the recordings upload one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def recorded(name: str) -> Any:
    """The recorded body of ``rich/<name>``."""
    return load_transcript(f"rich/{name}").response_json


def recorded_deliveries() -> list[dict[str, Any]]:
    """The webhook bodies recorded in rich/52, in order."""
    text = (TRANSCRIPTS / "rich" / "52-webhook-deliveries-rich.txt").read_text()
    parts = re.split(r"^=== .*$", text, flags=re.M)[1:]
    return [json.loads(part.split("\n\n", 1)[1]) for part in parts]


@pytest.fixture
def world(sandbox: SandboxHandle) -> Iterator[World]:
    """The recorded cast on a fresh sandbox."""
    w = make_world(sandbox.url)
    yield w
    w.api.close()


def upload(world: World, name: str, data: bytes, content_type: str = "image/png") -> Any:
    """``POST /:pid/files/chat`` as the visitor, multipart field ``file``."""
    return world.api.post(
        f"/{world.project_id}/files/chat",
        files={"file": (name, data, content_type)},
        token=world.visitor_token,
    )


def test_image_and_file_messages_answer_the_recorded_shape(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello, here is a photo of the damaged box")
    for name in ("41-visitor-image-message", "43-visitor-file-message"):
        sent = json.loads(load_transcript(f"rich/{name}").request_body)
        answer = world.api.post(world.messages_path(rid), json=sent, token=world.visitor_token)
        assert answer.status_code == 200
        body = answer.json()
        assert body["type"] == sent["type"]
        assert body["metadata"] == sent["metadata"] == recorded(name)["metadata"]
        assert list(body)[:12] == list(recorded(name))[:12]
    listed = world.api.get(world.messages_path(rid), token=world.visitor_token).json()
    history = recorded("45-get-messages-rich")
    visitor_types = [m["type"] for m in history if m["sender"] == history[0]["sender"]]
    assert [m["type"] for m in listed] == visitor_types[:3] == ["text", "image", "file"]
    assert shape(listed[1]["metadata"]) == shape(history[1]["metadata"])


def test_unknown_message_type_is_refused_where_the_real_server_stores_it(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello")
    answer = world.api.post(
        world.messages_path(rid), json={"text": "x", "type": "hologram"}, token=world.visitor_token
    )
    assert load_transcript("rich/44").reply.status == 200  # the real server is loose
    assert answer.status_code == 422
    assert "text, image, file" in answer.text


def test_upload_then_download_byte_for_byte_with_the_recorded_headers(world: World) -> None:
    data = tiny_png()
    answer = upload(world, "tiny.png", data)
    assert answer.status_code == load_transcript("rich/46").reply.status == 201
    body = answer.json()
    assert shape(body) == shape(recorded("46-visitor-upload-chat-file"))
    assert body["message"] == "File uploaded successfully"
    assert re.fullmatch(
        rf"uploads/users/{re.escape(world.visitor_id)}/files/[0-9a-f-]{{36}}/tiny\.png",
        body["filename"],
    )
    download = world.api.get(
        f"/{world.project_id}/files", params={"path": body["filename"]}, token=world.agent_token
    )
    recorded_download = load_transcript("rich/47")
    assert download.status_code == recorded_download.reply.status == 200
    assert download.headers["Content-Type"] == dict(recorded_download.reply.headers)["Content-Type"]
    assert download.content == data
    assert download.headers["X-Content-Type-Options"] == "nosniff"


def test_upload_refusals_disallowed_too_large_mismatched_and_missing(world: World) -> None:
    refused = upload(world, "evil.exe", b"MZ\x90\x00", "application/octet-stream")
    assert refused.status_code == load_transcript("rich/48").reply.status == 403
    assert refused.json() == recorded("48-err-upload-disallowed-extension")
    too_big = upload(world, "big.txt", b"a" * (UPLOAD_LIMIT + 1), "text/plain")
    assert too_big.status_code == 413
    fake = upload(world, "photo.png", b"<script>alert(1)</script>", "image/png")
    assert fake.status_code == 400 and "not image/png" in fake.json()["error"]
    no_file = world.api.post(
        f"/{world.project_id}/files/chat", data={"x": "1"}, token=world.visitor_token
    )
    assert no_file.status_code == 400
    unknown = world.api.get(
        f"/{world.project_id}/files", params={"path": "uploads/nope"}, token=world.agent_token
    )
    assert unknown.status_code == 404
    anonymous = world.api.post(
        f"/{world.project_id}/files/chat", files={"file": ("a.txt", b"hi", "text/plain")}
    )
    assert anonymous.status_code == 401


def test_a_hostile_file_name_is_stored_under_a_safe_name(world: World) -> None:
    answer = upload(world, '../../<img src=x onerror=alert(1)>".txt', b"hello", "text/plain")
    assert answer.status_code == 201
    last = answer.json()["filename"].rsplit("/", 1)[-1]
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.txt", last)


def test_uploads_survive_a_restart(tmp_path) -> None:
    from support.fast_retries import FAST_RETRIES

    from tiledesk_tutorial.sandbox import start_sandbox

    data = tiny_png()
    with start_sandbox(port=0, data_dir=tmp_path, retry_policy=FAST_RETRIES) as first:
        w = make_world(first.url)
        filename = upload(w, "tiny.png", data).json()["filename"]
        agent_token, project_id = w.agent_token, w.project_id
        w.api.close()
    with start_sandbox(port=0, data_dir=tmp_path, retry_policy=FAST_RETRIES) as second:
        from support.sandbox import Api

        api = Api(second.url)
        again = api.get(f"/{project_id}/files", params={"path": filename}, token=agent_token)
        api.close()
    assert again.status_code == 200 and again.content == data


def test_close_reopen_and_rate_as_recorded_with_their_webhooks(world: World) -> None:
    receiver = Receiver()
    try:
        for event in ("message.create", "request.update"):
            world.subscribe(receiver.url, event)
        rid = world.request_id()
        world.send(rid, "Hello, here is a photo of the damaged box")
        world.send(rid, "Thanks, I see it.", as_agent=True)
        base = f"/{world.project_id}/requests/{rid}"
        closed = world.api.put(f"{base}/close", json={}, token=world.agent_token)
        assert closed.status_code == 200 and closed.json()["status"] == 1000
        receiver.wait(4)  # 2 messages, the close update, "Chat closed"
        reopened = world.api.put(f"{base}/reopen", json={}, token=world.agent_token)
        assert reopened.status_code == 200
        assert reopened.json()["status"] == recorded("50-reopen-request")["status"] == 200
        assert reopened.json()["closed_at"] == closed.json()["closed_at"]  # kept, as recorded
        rating = json.loads(load_transcript("rich/51a").request_body)
        rated = world.api.call("PATCH", f"{base}/rating", json=rating, token=world.visitor_token)
        assert rated.status_code == 200
        rated_body = rated.json()
        assert (
            rated_body["rating"] == 5 and rated_body["rating_message"] == rating["rating_message"]
        )
        keys = list(rated_body)
        assert keys.index("closed_at") + 1 == keys.index("rating")  # the recorded order
        # Deliveries may arrive in any order (four in flight per target): matched by content.
        deliveries = [d.body for d in receiver.wait(4 + 3)]
        recorded_tail = recorded_deliveries()[-3:]
        events = sorted(d["hook"]["event"] for d in deliveries)
        assert events == sorted(
            ["message.create"] * 3
            + ["request.update"]
            + [d["hook"]["event"] for d in recorded_tail]
        )
        (reopen_info,) = [
            d["payload"] for d in deliveries if d["payload"].get("text") == "Chat reopened"
        ]
        assert reopen_info["attributes"] == recorded_tail[1]["payload"]["attributes"]
        updates = [d["payload"] for d in deliveries if d["hook"]["event"] == "request.update"]
        assert [u.get("rating") for u in updates].count(5) == 1
        fetched = world.api.get(base, token=world.agent_token).json()
        assert fetched["rating"] == recorded("51c-get-request-after-rating")["rating"]
    finally:
        receiver.stop()


def test_rating_refusals(world: World) -> None:
    unknown = world.api.call(
        "PATCH",
        f"/{world.project_id}/requests/support-group-nope/rating",
        json={"rating": 1},
        token=world.visitor_token,
    )
    assert unknown.status_code == load_transcript("rich/51b").reply.status == 404
    assert unknown.json() == recorded("51b-err-rating-unknown-request")
    rid = world.request_id()
    world.send(rid, "Hello")
    for bad in ({"rating": 6}, {"rating": 0}, {"rating": "5"}, {"rating": 2.5}, {}):
        answer = world.api.call(
            "PATCH",
            f"/{world.project_id}/requests/{rid}/rating",
            json=bad,
            token=world.visitor_token,
        )
        assert answer.status_code == 422, bad
    other_token, _ = world.new_visitor("Eve")
    stranger = world.api.call(
        "PATCH",
        f"/{world.project_id}/requests/{rid}/rating",
        json={"rating": 1},
        token=other_token,
    )
    assert stranger.status_code == 403


def test_a_projects_files_are_bounded_with_507(sandbox: SandboxHandle, world: World) -> None:
    photo = tiny_png()
    sandbox.files.project_limit = 2 * len(photo)
    assert upload(world, "one.png", photo).status_code == 201
    assert upload(world, "two.png", photo).status_code == 201
    full = upload(world, "three.png", photo)
    assert full.status_code == 507
    assert full.json()["success"] is False and "nothing was saved" in full.json()["error"]
    assert "Retry-After" not in full.headers  # waiting frees nothing: a new project does
    assert sandbox.files.stored_bytes(world.project_id) == 2 * len(photo)
    other = make_world(sandbox.url)  # another project has its own room
    assert upload(other, "one.png", photo).status_code == 201
    other.api.close()


def test_uploads_at_once_cannot_overrun_the_bound(sandbox: SandboxHandle, world: World) -> None:
    photo = tiny_png()
    sandbox.files.project_limit = 2 * len(photo)
    url = f"{sandbox.url}/{world.project_id}/files/chat"

    def one(n: int) -> int:
        with requests.Session() as session:
            files = {"file": (f"p{n}.png", photo, "image/png")}
            headers = {"Authorization": world.visitor_token}
            return session.post(url, files=files, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(one, range(8)))
    assert statuses == [201, 201] + [507] * 6
    assert sandbox.files.stored_bytes(world.project_id) == 2 * len(photo)
    assert len(list((sandbox.data_dir / "files").iterdir())) == 2  # the refused left no file


@pytest.mark.skipif(
    not private_mounts_available(), reason="needs `unshare -rm` (user and mount namespaces)"
)
def test_an_upload_on_a_full_disk_is_507_leaves_nothing_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sandbox = SandboxProcess(data, wrapper=small_disk(data, "8m"))
    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(UPLOAD_LIMIT - 64)
    try:
        w = make_world(sandbox.start())
        first = upload(w, "first.png", tiny_png())
        assert first.status_code == 201, first.text
        stored = seen_by(sandbox.pid, data / "files")
        kept = sorted(p.name for p in stored.iterdir())
        filler = seen_by(sandbox.pid, data) / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        full = upload(w, "photo.png", photo)
        assert full.status_code == 507, full.text
        assert int(full.headers["Retry-After"]) > 0 and "disk is full" in full.json()["msg"]
        assert sorted(p.name for p in stored.iterdir()) == kept  # no part file, no orphan
        filler.unlink()
        again = upload(w, "photo.png", photo)
        assert again.status_code == 201, again.text
        download = w.api.get(
            f"/{w.project_id}/files",
            params={"path": again.json()["filename"]},
            token=w.agent_token,
        )
        assert download.content == photo
        w.api.close()
    finally:
        sandbox.kill()
    stderr = sandbox.stderr_text()
    assert "Traceback" not in stderr
    assert f"the disk of the data folder {data} is full" in stderr


def test_an_agents_attributes_and_metadata_come_back_as_recorded(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello, here is a photo of the damaged box")
    sent = json.loads(load_transcript("rich/42").request_body)
    answer = world.api.post(world.messages_path(rid), json=sent, token=world.agent_token)
    assert answer.status_code == load_transcript("rich/42").reply.status == 200
    body, reference = answer.json(), recorded("42-agent-message-attributes")
    assert (body["attributes"], body["metadata"]) == (
        reference["attributes"],
        reference["metadata"],
    )
    assert body["type"] == reference["type"] == "text"
    assert list(body)[:12] == list(reference)[:12]


def test_the_rich_messages_webhooks_carry_the_recorded_payloads(world: World) -> None:
    receiver = Receiver()
    try:
        world.subscribe(receiver.url)
        rid = world.request_id()
        world.send(rid, "Hello, here is a photo of the damaged box")
        for name, as_agent in (("41", False), ("42", True), ("43", False)):
            body = json.loads(load_transcript(f"rich/{name}").request_body)
            token = world.agent_token if as_agent else world.visitor_token
            answer = world.api.post(world.messages_path(rid), json=body, token=token)
            assert answer.status_code == 200, answer.text
        got = {d.body["payload"]["text"]: d.body for d in receiver.wait(4)}  # any order
        for reference in recorded_deliveries()[:4]:
            delivery = got[reference["payload"]["text"]]
            payload, expected = delivery["payload"], reference["payload"]
            assert delivery["hook"]["event"] == reference["hook"]["event"] == "message.create"
            assert payload["type"] == expected["type"]
            assert payload.get("metadata") == expected.get("metadata")
            assert payload.get("attributes", {}).keys() >= expected.get("attributes", {}).keys()
            assert set(payload) >= set(expected) - {"__v"}, set(expected) - set(payload)
    finally:
        receiver.stop()


def test_the_realtime_api_publishes_images_reopen_and_rating(
    world: World, sandbox: SandboxHandle
) -> None:
    pid, rid = world.project_id, world.request_id()
    world.send(rid, "Hello, here is a photo of the damaged box")
    base = f"/{pid}/requests/{rid}"
    with Socket(sandbox.url, world.agent_token) as agent:
        agent.subscribe(topic_messages(pid, rid))
        assert [m["type"] for m in agent.next_publish()["message"]] == ["text"]  # the snapshot
        agent.subscribe(topic_request(pid, rid))
        assert agent.next_publish()["method"] == "CREATE"
        image = json.loads(load_transcript("rich/41").request_body)
        sent = world.api.post(world.messages_path(rid), json=image, token=world.visitor_token)
        frame = agent.next_publish()
        assert (frame["topic"], frame["method"]) == (topic_messages(pid, rid), "CREATE")
        assert frame["message"]["type"] == "image"
        assert frame["message"]["metadata"] == recorded("41-visitor-image-message")["metadata"]
        assert frame["message"]["_id"] == sent.json()["_id"]

        assert world.api.put(f"{base}/close", json={}, token=world.agent_token).status_code == 200
        closed = [agent.next_publish() for _ in range(2)]
        assert {f["message"].get("text") for f in closed} >= {"Chat closed"}
        reopened = world.api.put(f"{base}/reopen", json={}, token=world.agent_token).json()
        frames = [agent.next_publish() for _ in range(2)]
        update = next(f for f in frames if f["topic"] == topic_request(pid, rid))
        note = next(f for f in frames if f["topic"] == topic_messages(pid, rid))
        assert update["method"] == "UPDATE" and update["message"]["status"] == 200
        assert update["message"]["status"] == reopened["status"]
        assert note["message"]["text"] == "Chat reopened"
        rating = json.loads(load_transcript("rich/51a").request_body)
        world.api.call("PATCH", f"{base}/rating", json=rating, token=world.visitor_token)
        rated = agent.next_publish()
        assert (rated["topic"], rated["method"]) == (topic_request(pid, rid), "UPDATE")
        assert rated["message"]["rating"] == rating["rating"]
        agent.assert_nothing_pending()
