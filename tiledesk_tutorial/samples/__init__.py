"""Sample files the notebooks send: a photo of a damaged parcel (64x48 PNG)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent
#: The photo notebook 07 sends, and its size in pixels.
DAMAGED_BOX = SAMPLES / "damaged-box.png"
DAMAGED_BOX_SIZE = (64, 48)
