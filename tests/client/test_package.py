"""The package root: everything a notebook uses is importable from it, lazily."""

from __future__ import annotations

import subprocess
import sys
import types

import tiledesk_tutorial

LEARNER_NAMES = (
    "TiledeskClient",
    "new_request_id",
    "WebhookListener",
    "ConversationView",
    "start_sandbox",
    "TiledeskError",
    "Event",
    "Config",
    "get_default",
    "verify_delivery",
    "make_delivery",
    "make_message_payload",
    "close_tunnel",
    "webhook_target",
)


def test_every_exported_name_resolves_and_the_learners_names_are_there() -> None:
    exported = set(tiledesk_tutorial.__all__)
    assert set(LEARNER_NAMES) <= exported
    for name in exported - {"__version__"}:
        value = getattr(tiledesk_tutorial, name)
        assert not isinstance(value, types.ModuleType), f"{name} is shadowed by a submodule"
    assert sorted(dir(tiledesk_tutorial)) == sorted(exported)
    from tiledesk_tutorial import tutorial  # the notebooks' first cell

    assert callable(tutorial.start)


def test_importing_the_package_imports_nothing_heavy() -> None:
    code = (
        "import sys, tiledesk_tutorial; "
        "print(sorted(m for m in ('requests', 'flask', 'ipywidgets', 'jwt') if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert shown.stdout.strip() == "[]"
