"""The client's rich calls against the sandbox over HTTP: upload, download, image and file
messages, reopen and rating; each with its curl, and each refusal a clear error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.errors import (
    InvalidInputError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from tiledesk_tutorial.models import UploadedFile
from tiledesk_tutorial.samples import DAMAGED_BOX, DAMAGED_BOX_SIZE
from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.wire import UPLOAD_LIMIT

PASSWORD = "Passw0rd!-rich"


@pytest.fixture
def agent(sandbox: SandboxHandle) -> Iterator[TiledeskClient]:
    """A signed-in agent who owns a fresh project."""
    client = TiledeskClient(sandbox.url, backoff_factor=0.01)
    client.sign_up("ada@example.com", PASSWORD, "Ada", "Agent")
    client.sign_in("ada@example.com", PASSWORD)
    client.project_id = client.create_project("Rich").id
    yield client
    client.close()


def test_a_photo_goes_up_into_a_message_and_comes_back(agent: TiledeskClient) -> None:
    visitor = agent.as_visitor(firstname="Vic")
    rid = new_request_id(agent.project_id)
    visitor.send_message(rid, "Hello, here is a photo of the damaged box")
    uploaded = visitor.upload_file(DAMAGED_BOX)
    assert isinstance(uploaded, UploadedFile)
    assert uploaded.name == "damaged-box.png" and uploaded.content_type == "image/png"
    assert uploaded.filename.endswith("/damaged-box.png")
    assert visitor.last_curl is not None
    assert "-F 'file=@damaged-box.png;type=image/png'" in visitor.last_curl
    assert "files/chat" in visitor.last_curl and "eyJ" in visitor.last_curl
    assert "Content-Type: multipart" not in visitor.last_curl
    width, height = DAMAGED_BOX_SIZE
    message = visitor.send_image(rid, uploaded, width=width, height=height)
    assert message.type == "image"
    assert message.metadata == {
        "src": uploaded.src,
        "width": 64,
        "height": 48,
        "name": "damaged-box.png",
        "type": "image/png",
    }
    assert message.text == "damaged-box.png"
    downloaded = agent.download_file(uploaded.filename)
    assert downloaded.content == DAMAGED_BOX.read_bytes()
    assert downloaded.content_type == "image/png"
    assert "files?path=uploads" in (agent.last_curl or "")
    invoice = visitor.upload_file(b"%PDF-1.4\n%%EOF\n", name="invoice.pdf")
    sent = visitor.send_file(rid, invoice)
    assert sent.type == "file"
    assert sent.metadata == {"src": invoice.src, "name": "invoice.pdf", "type": "application/pdf"}
    visitor.close()


def test_close_reopen_and_rate(agent: TiledeskClient) -> None:
    visitor = agent.as_visitor(firstname="Vic")
    rid = new_request_id(agent.project_id)
    visitor.send_message(rid, "Hello")
    agent.send_message(rid, "Thanks, I see it.")
    assert agent.close_request(rid).is_closed
    reopened = agent.reopen_request(rid)
    assert not reopened.is_closed and reopened.status == 200
    assert "/reopen" in (agent.last_curl or "") and "-X PUT" in (agent.last_curl or "")
    rated = visitor.rate_request(rid, 5, "Quick and kind, thanks!")
    assert (rated.rating, rated.rating_message) == (5, "Quick and kind, thanks!")
    assert "-X PATCH" in (visitor.last_curl or "")
    assert '"rating": 5' in (visitor.last_curl or "")
    texts = [m.text for m in agent.list_messages(rid)]
    assert texts[-2:] == ["Chat closed", "Chat reopened"]
    with pytest.raises(NotFoundError):
        visitor.rate_request(new_request_id(agent.project_id), 1)
    visitor.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.upload_file(b"MZ", name="evil.exe"), "does not accept .exe"),
        (lambda c: c.upload_file(b"a" * (UPLOAD_LIMIT + 1), name="big.txt"), "1 MB"),
        (lambda c: c.upload_file(b"x"), "give the file's name"),
        (lambda c: c.upload_file("/nonexistent/photo.png"), "cannot read"),
        (lambda c: c.rate_request(new_request_id(c.project_id), 6), "out of range"),
        (lambda c: c.rate_request(new_request_id(c.project_id), 4.5), "whole number"),
        (
            lambda c: c.send_image(
                new_request_id(c.project_id), "javascript:alert(1)", width=1, height=1
            ),
            "http(s) URL",
        ),
        (
            lambda c: c.send_image(
                new_request_id(c.project_id), "https://e.com/a.png", width=0, height=1
            ),
            "positive",
        ),
    ],
)
def test_bad_input_is_refused_before_sending(agent: TiledeskClient, call, message: str) -> None:
    agent.last_curl = None
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(agent)
    assert agent.last_curl is None  # nothing was sent


def test_the_servers_refusal_of_a_mismatched_file_is_a_clear_error(agent: TiledeskClient) -> None:
    with pytest.raises(ValidationError) as caught:
        agent.upload_file(b"not a png at all", name="photo.png")
    assert "not image/png" in str(caught.value)


def test_a_full_store_is_one_error_saying_nothing_was_saved(
    sandbox: SandboxHandle, agent: TiledeskClient
) -> None:
    photo = DAMAGED_BOX.read_bytes()
    sandbox.files.project_limit = len(photo)
    agent.upload_file(DAMAGED_BOX)
    with pytest.raises(ServerError) as caught:
        agent.upload_file(DAMAGED_BOX)
    assert caught.value.status == 507
    assert "nothing was saved" in str(caught.value)
    assert caught.value.hint is not None and "use a new project" in caught.value.hint
    assert "try again shortly" not in caught.value.hint


def test_an_uploads_runnable_curl_keeps_its_file_and_hides_the_token(
    agent: TiledeskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TILEDESK_TOKEN", raising=False)
    agent.upload_file(DAMAGED_BOX)
    runnable = agent.runnable_curl()
    assert "-F 'file=@damaged-box.png;type=image/png'" in runnable
    assert '-H "Authorization: $TILEDESK_TOKEN"' in runnable
    assert "eyJ" not in runnable and "-d " not in runnable
