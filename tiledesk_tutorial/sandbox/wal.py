"""Check a SQLite write-ahead log (``<db>-wal``) for a damaged tail before the database opens it.

SQLite replays a WAL up to its last frame whose checksum holds and silently ignores the rest, so a
WAL damaged after a ``kill -9`` (a disk error, a bad copy) opens without a word while acknowledged
transactions are gone. This module walks the frames as SQLite does
(https://sqlite.org/fileformat2.html section 4) and tells a damaged frame of the current log (its
salts match the header, its checksum does not, and the log goes on after it) from the harmless
leftovers of an earlier log (other salts) and from the last frame of a write that a ``kill -9``
interrupted, so the sandbox can refuse to serve, and :func:`repair` can keep the good prefix. (A
damaged last frame looks like an interrupted write and is not reported: SQLite ignores it either
way.)
"""

from __future__ import annotations

import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

_HEADER = 32
_FRAME_HEADER = 24
_MAGIC_LE, _MAGIC_BE = 0x377F0682, 0x377F0683
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class WalCheck:
    """What :func:`check` found: the bytes of the log that replay (``good_bytes``, up to the last
    whole transaction), and whether frames of the current log after them are damaged."""

    good_bytes: int
    damaged: bool
    frames: int


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & _MASK
        s1 = (s1 + words[i + 1] + s0) & _MASK
    return s0, s1


def check(path: Path) -> WalCheck | None:
    """Walk the WAL at ``path``; None when there is none (or it is empty)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _HEADER:
        return None if not data else WalCheck(0, True, 0)
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:_HEADER])
    if magic not in (_MAGIC_LE, _MAGIC_BE) or page_size < 512 or page_size & (page_size - 1):
        return WalCheck(0, True, 0)
    big_endian = magic == _MAGIC_BE
    s0, s1 = _checksum(data[:24], 0, 0, big_endian)
    if (s0, s1) != (c0, c1):
        return WalCheck(0, True, 0)
    offset, good, frames = _HEADER, _HEADER, 0
    frame_size = _FRAME_HEADER + page_size
    while offset + frame_size <= len(data):
        header = data[offset : offset + _FRAME_HEADER]
        _page, commit, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", header)
        if (f_salt1, f_salt2) != (salt1, salt2):
            # A frame of an earlier log: the current one ends here, unless a later frame still
            # carries its salts (then this one's header was damaged).
            later = range(offset + frame_size, len(data) - frame_size + 1, frame_size)
            if any(data[at + 8 : at + 16] == data[16:24] for at in later):
                return WalCheck(good, True, frames)
            break
        s0, s1 = _checksum(header[:8], s0, s1, big_endian)
        s0, s1 = _checksum(data[offset + _FRAME_HEADER : offset + frame_size], s0, s1, big_endian)
        if (s0, s1) != (f0, f1):
            # SQLite writes a frame's header and its page in two calls: a process killed between
            # them leaves a new header on an old page, at the very end of the log, in a
            # transaction never acknowledged. Damage is a bad frame the log goes on after.
            later = range(offset + frame_size, len(data) - frame_size + 1, frame_size)
            damaged = any(data[at + 8 : at + 16] == data[16:24] for at in later)
            return WalCheck(good, damaged, frames)
        offset += frame_size
        frames += 1
        if commit:
            good = offset
    # A partial frame of the current log at the very end, or frames after the last commit, are
    # what an interrupted (never acknowledged) transaction leaves: not damage.
    return WalCheck(good, False, frames)


def repair(path: Path) -> Path:
    """Move the damaged WAL aside (kept, for a post-mortem) and put back only its good prefix.

    Returns where the damaged file went.
    """
    path = Path(path)
    found = check(path)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(path, aside)
    if found is not None and found.good_bytes > _HEADER:
        with aside.open("rb") as src, path.open("wb") as dst:
            dst.write(src.read(found.good_bytes))
    return aside
