"""The ngrok stand-in as tests use it: installed in a folder, its runs recorded, tunnels opened."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.tunnel import open_tunnel

STANDIN_AUTHTOKEN = "2abcDEFghiJKLmnoPQRstuVWX_1234567890abcdefGHIJK"


@dataclass
class Standin:
    """An installed stand-in: its executable, its config file and its record of runs."""

    path: Path
    config_path: Path
    record: Path

    def runs(self) -> list[dict]:
        """Every invocation of the stand-in so far (arguments and process id)."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def starts(self) -> list[dict]:
        return [run for run in self.runs() if run["argv"][:1] == ["start"]]

    def open(self, listener: WebhookListener, **kwargs) -> str:
        kwargs.setdefault("authtoken", STANDIN_AUTHTOKEN)
        return open_tunnel(
            listener, ngrok_path=str(self.path), config_path=str(self.config_path), **kwargs
        )


def process_alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
