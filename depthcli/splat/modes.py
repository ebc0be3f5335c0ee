"""Render modes: what each mode of :func:`depthcli.splat.render.render` outputs.

In their own module so the backends can ask without importing ``render`` (which imports them).
"""

from __future__ import annotations

from typing import Literal

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED", "d", "Ed", "RGB-d", "RGB-Ed"]

MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED", "d", "Ed", "RGB-d", "RGB-Ed")


def mode_has_rgb(mode: str) -> bool:
    """True when ``mode`` renders colour channels (RGB first)."""
    return mode.startswith("RGB")


def mode_depth_kind(mode: str) -> str | None:
    """The depth channel of ``mode``: ``"z"`` (camera z of the centres: D, ED, RGB+D,
    RGB+ED), ``"dist"`` (distance from the camera centre to the centres: d, Ed, RGB-d,
    RGB-Ed) or None (RGB)."""
    if mode in ("D", "ED", "RGB+D", "RGB+ED"):
        return "z"
    if mode in ("d", "Ed", "RGB-d", "RGB-Ed"):
        return "dist"
    return None


def mode_is_expected(mode: str) -> bool:
    """True when the depth channel is normalised by the accumulated alpha (ED, Ed, ...)."""
    return mode in ("ED", "Ed", "RGB+ED", "RGB-Ed")
