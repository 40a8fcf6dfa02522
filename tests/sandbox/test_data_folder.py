"""The data folder's faults, made the way they happen: two sandboxes started on one folder, a
``kill -9`` then a restart, a read-only folder, a database with garbage written into it, a
write-ahead log damaged after a crash. Each is refused at start with one line naming the folder."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest
import requests
from support.faults import SandboxProcess, open_db
from support.mounts import private_mounts_available, read_only, seen_by, small_disk
from support.sandbox import Api, make_world

from tiledesk_tutorial.sandbox import wal

pytestmark = pytest.mark.faults

needs_mounts = pytest.mark.skipif(
    not private_mounts_available(), reason="needs `unshare -rm` (user and mount namespaces)"
)


def one_line_error(stderr: str) -> str:
    """The one error line the CLI printed; fails on a traceback or on several lines."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_second_sandbox_on_the_same_folder_stops_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = SandboxProcess(data)
    second = SandboxProcess(data)
    try:
        url = first.start()
        code, stderr = second.start_refused()
        assert code != 0
        line = one_line_error(stderr)
        assert str(data) in line
        assert url in line
        assert f"process {first.pid}" in line
        # The first one is untouched and still serving.
        assert requests.get(url + "/", timeout=5).status_code == 200
    finally:
        first.kill()
        second.kill()


def test_a_lock_left_by_a_killed_sandbox_does_not_block_a_restart(tmp_path: Path) -> None:
    sandbox = SandboxProcess(tmp_path / "data")
    try:
        url = sandbox.start()
        world = make_world(url)
        sent = world.send(world.request_id(), "before the kill")
        sandbox.kill()
        assert (tmp_path / "data" / "sandbox.lock").exists()  # left behind, as by any crash
        url = sandbox.start()
        api = Api(url)
        found = api.get(world.messages_path(sent["recipient"]), token=world.agent_token)
        assert [m["_id"] for m in found.json()] == [sent["_id"]]
        api.close()
    finally:
        sandbox.kill()


@needs_mounts
def test_a_read_only_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sandbox = SandboxProcess(data, wrapper=read_only(data))
    code, stderr = sandbox.start_refused()
    assert code != 0
    line = one_line_error(stderr)
    assert str(data) in line and "cannot be written" in line


@needs_mounts
def test_a_read_only_folder_with_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sandbox = SandboxProcess(data)
    sandbox.start()
    assert sandbox.stop() == 0
    refused = SandboxProcess(data, wrapper=read_only(data))
    code, stderr = refused.start_refused()
    assert code != 0
    line = one_line_error(stderr)
    assert str(data) in line and "cannot be written" in line


def test_garbage_in_the_database_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sandbox = SandboxProcess(data)
    url = sandbox.start()
    world = make_world(url)
    for i in range(300):  # enough pages that 8 KB in the middle hits tables, not free space
        world.send(world.request_id(), f"message {i} " + "x" * 200)
    assert sandbox.stop() == 0
    size = sandbox.db_path.stat().st_size
    assert size > 64 * 1024
    with sandbox.db_path.open("r+b") as db:
        db.seek(size // 2 // 4096 * 4096)
        db.write(bytes(range(256)) * 32)  # 8 KB of garbage, mid-file
    code, stderr = sandbox.start_refused()
    assert code != 0
    line = one_line_error(stderr)
    assert str(data) in line and "damaged" in line


def _crash_with_a_wal(tmp_path: Path, messages: int) -> tuple[SandboxProcess, list[str]]:
    sandbox = SandboxProcess(tmp_path / "data")
    url = sandbox.start()
    world = make_world(url)
    request_id = world.request_id()
    sent = [world.send(request_id, f"message {i}")["_id"] for i in range(messages)]
    sandbox.kill()
    return sandbox, sent


def _wal_frame_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    frame = 24 + page_size
    return list(range(32, len(data) - frame + 1, frame))


def test_a_damaged_wal_after_kill_9_is_refused_then_repaired(tmp_path: Path) -> None:
    sandbox, _sent = _crash_with_a_wal(tmp_path, 50)
    wal_path = sandbox.data_dir / "sandbox.sqlite3-wal"
    healthy = wal.check(wal_path)
    assert healthy is not None and not healthy.damaged and healthy.frames > 2
    offsets = _wal_frame_offsets(wal_path)[: healthy.frames]
    with wal_path.open("r+b") as log:  # one damaged page in the last committed frames
        log.seek(offsets[-2] + 24 + 100)
        log.write(b"\xde\xad\xbe\xef" * 16)
    assert wal.check(wal_path).damaged

    code, stderr = sandbox.start_refused()
    assert code != 0
    line = one_line_error(stderr)
    assert str(sandbox.data_dir) in line and "--repair" in line

    repaired = SandboxProcess(sandbox.data_dir, "--repair")
    try:
        url = repaired.start()
        assert requests.get(url + "/", timeout=5).status_code == 200
        aside = list(sandbox.data_dir.glob("sandbox.sqlite3-wal.damaged-*"))
        assert len(aside) == 1
        assert "moved the damaged write-ahead log aside" in repaired.stderr_text()
    finally:
        repaired.kill()
    with open_db(repaired.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_healthy_wal_after_kill_9_keeps_every_message(tmp_path: Path) -> None:
    sandbox, sent = _crash_with_a_wal(tmp_path, 50)
    found = wal.check(sandbox.data_dir / "sandbox.sqlite3-wal")
    assert found is not None and not found.damaged
    with sqlite3.connect(sandbox.db_path) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM messages")}
    assert set(sent) <= stored


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@needs_mounts
def test_a_full_disk_is_507_and_writes_resume_once_space_is_freed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sandbox = SandboxProcess(data, wrapper=small_disk(data, "8m"))
    try:
        url = sandbox.start()
        world = make_world(url)
        conversation = world.request_id()
        acked = [world.send(conversation, "before the disk filled")["_id"]]
        filler = seen_by(sandbox.pid, data) / "filler"
        _fill(filler)
        full = None
        for i in range(200):  # the WAL's own free space takes a few before the disk says no
            answer = world.api.post(
                world.messages_path(conversation),
                json={"text": f"{i}:" + "y" * 40_000},
                token=world.visitor_token,
            )
            if answer.status_code != 200:
                full = answer
                break
            acked.append(answer.json()["_id"])
        assert full is not None and full.status_code == 507, full and full.text
        assert int(full.headers["Retry-After"]) > 0
        assert "disk is full" in full.json()["msg"]
        filler.unlink()
        resumed = world.send(conversation, "after the space was freed")
        acked.append(resumed["_id"])
        stored = world.api.get(world.messages_path(conversation), token=world.agent_token).json()
        assert [m["_id"] for m in stored] == acked  # nothing acknowledged lost, nothing half-saved
        world.api.close()
    finally:
        sandbox.kill()
    stderr = sandbox.stderr_text()
    assert "Traceback" not in stderr
    assert f"the disk of the data folder {data} is full" in stderr


def test_a_last_frame_cut_off_by_kill_9_is_not_damage(tmp_path: Path) -> None:
    # SQLite writes a frame's header, then its page: a kill between the two leaves a new header
    # on the old bytes of a reused log, as the last frame, in a transaction never acknowledged.
    sandbox, _sent = _crash_with_a_wal(tmp_path, 20)
    wal_path = sandbox.data_dir / "sandbox.sqlite3-wal"
    healthy = wal.check(wal_path)
    assert healthy is not None and not healthy.damaged
    last = _wal_frame_offsets(wal_path)[healthy.frames - 1]
    with wal_path.open("r+b") as log:
        log.seek(last + 24)
        log.write(b"\x00" * 64)
    found = wal.check(wal_path)
    assert found is not None and not found.damaged and found.frames == healthy.frames - 1
    try:
        url = sandbox.start()
        assert requests.get(url + "/", timeout=5).status_code == 200
    finally:
        sandbox.kill()
