"""Real file-system faults for a child process, without root: a private mount namespace.

``unshare -rm`` gives the child its own user and mount namespaces, where it may mount a small
``tmpfs`` (a disk that fills up) or remount a folder read-only, seen by that child alone. The test
reaches the child's view of its mounts through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path


@cache
def private_mounts_available() -> bool:
    """True when ``unshare -rm`` can mount a tmpfs here (Linux with user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


def small_disk(folder: Path, size: str) -> tuple[str, ...]:
    """A wrapper command: run the rest of the command line with ``folder`` on a tmpfs of
    ``size`` (such as ``"2m"``)."""
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    return ("unshare", "-rm", "sh", "-c", script, str(folder), size)


def read_only(folder: Path) -> tuple[str, ...]:
    """A wrapper command: run the rest of the command line with ``folder`` read-only."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ("unshare", "-rm", "sh", "-c", script, str(folder))


def seen_by(pid: int, path: Path) -> Path:
    """``path`` as the process ``pid`` sees it in its own mount namespace."""
    return Path(f"/proc/{pid}/root") / Path(path).resolve().relative_to("/")
