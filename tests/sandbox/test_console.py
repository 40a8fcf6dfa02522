"""The agent console route: served at /console (and under /v3), never cached, locked by CSP."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
import requests

from tiledesk_tutorial.sandbox.console import content_security_policy


def _directives(policy: str) -> dict[str, list[str]]:
    result = {}
    for part in policy.split(";"):
        name, *values = part.split()
        result[name] = values
    return result


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("path", ["/console", "/console/", "/v3/console", "/v3/console/"])
def test_console_page_is_served_with_security_headers(sandbox, path):
    response = requests.get(sandbox.url + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "no-cache" in response.headers["Cache-Control"]
    assert "no-store" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "<title>Agent console" in response.text

    policy = _directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    # Only the page's own inline blocks may run: no 'unsafe-inline', no host, no other hash.
    scripts = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", response.text, re.DOTALL)
    assert len(scripts) == 1 and len(styles) == 1
    assert policy["script-src"] == [_sha256(scripts[0])]
    assert policy["style-src"] == [_sha256(styles[0])]


def test_console_page_loads_nothing_from_elsewhere(sandbox):
    page = requests.get(sandbox.url + "/console", timeout=10).text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page
    assert "document.write" not in page
    assert "sessionStorage" in page and "localStorage" not in page


def test_other_paths_under_console_are_api_paths(sandbox):
    # Like any other first segment, "console" is then taken as a project id, as Tiledesk does.
    response = requests.get(sandbox.url + "/console/app.js", timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid project id: console"}
    assert requests.post(sandbox.url + "/console", timeout=10).status_code == 400


def test_policy_without_inline_blocks_allows_no_script():
    policy = _directives(content_security_policy("<p>plain</p>"))
    assert policy["script-src"] == ["'none'"]
    assert policy["style-src"] == ["'none'"]
