"""What a room's guessing and stale tokens cannot do: an expired token is refused even after it was
cached while valid."""

from __future__ import annotations

import time

import jwt
import pytest
from support.sandbox import make_world

from tiledesk_tutorial.sandbox import SandboxHandle

pytestmark = pytest.mark.security


def test_a_token_cached_while_valid_is_refused_once_it_expires(sandbox: SandboxHandle) -> None:
    world = make_world(sandbox.url)
    secret = sandbox.store.meta("global_secret", lambda: "unused")
    claims = jwt.decode(world.agent_token[4:], options={"verify_signature": False})
    expires = int(time.time()) + 2
    token = "JWT " + jwt.encode({**claims, "exp": expires}, secret, algorithm="HS256")
    path = f"/{world.project_id}/requests"
    assert world.api.get(path, token=token).status_code == 200  # verified, then cached
    assert world.api.get(path, token=token).status_code == 200  # from the cache
    while time.time() < expires + 0.05:
        time.sleep(0.05)
    expired = world.api.get(path, token=token)
    assert expired.status_code == 401
    assert world.api.get(path, token=world.agent_token).status_code == 200  # no exp: still good
    world.api.close()
