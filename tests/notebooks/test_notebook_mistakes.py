"""The usual mistakes, met as a learner meets them in a notebook: one short error, the way out."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from support.notebooks import execute_notebook, outputs
from support.tutorial import clean_tutorial_env

from tiledesk_tutorial.sandbox import SandboxHandle

pytestmark = pytest.mark.notebooks


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port of 127.0.0.1 held by another program (a listening socket) for the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def errors(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The error outputs of the executed notebook, in cell order."""
    return [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


def test_a_taken_listener_port_is_one_short_error_with_both_ways_out(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sandbox_session: SandboxHandle,
    taken_port: int,
) -> None:
    clean_tutorial_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", sandbox_session.url)
    monkeypatch.setenv("TILEDESK_LISTENER_PORT", str(taken_port))
    notebook = execute_notebook("04_receive_webhooks", tmp_path, allow_errors=True)
    [first, *_] = errors(notebook)
    shown = "\n".join(first.traceback)
    assert first.ename == "PortInUseError", shown
    assert f"port {taken_port}" in shown
    assert "TILEDESK_LISTENER_PORT" in shown  # the way out that keeps the notebook unchanged
    assert "port=0" in shown  # and the one in the cell
    assert len(first.traceback) <= 5, shown  # the message, the hint, the line: no traceback
    assert "File " not in shown


def test_a_wrong_api_url_in_live_mode_names_tiledesk_api_url_not_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_tutorial_env(monkeypatch, tmp_path / "home")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:  # bound, not listening
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("TILEDESK_API_URL", url)
        monkeypatch.setenv("TILEDESK_EMAIL", "learner@example.com")
        monkeypatch.setenv("TILEDESK_PASSWORD", "Passw0rd-not-shown")
        notebook = execute_notebook("01_signup_and_project", tmp_path, allow_errors=True)
    [first, *_] = errors(notebook)
    shown = "\n".join(first.traceback)
    assert first.ename == "TutorialError", shown
    assert f"TILEDESK_API_URL is {url}" in shown and "connection refused" in shown
    assert "Hint: check TILEDESK_API_URL" in shown
    assert "start_sandbox" not in shown and "make sandbox" not in shown
    assert len(first.traceback) <= 5 and "File " not in shown, shown
    assert "Live mode" not in outputs(notebook)
