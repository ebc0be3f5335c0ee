"""Paths read from files (metadata, indexes, pointers) stay inside their folder.

A ``dataset.json``, a label index or a checkpoint pointer is data someone may
hand you. A path in it must never lead depthcli to read (or write) outside the
folder it describes: :func:`resolve_inside` is the one check every reader uses.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from depthcli.errors import DepthcliError


def resolve_inside(root: Path | str, relpath: Any, what: str) -> Path:
    """Return ``root/relpath`` resolved, or raise if it would leave ``root``.

    ``relpath`` comes from a file (e.g. a frame's ``depth`` in ``dataset.json``);
    ``what`` names it in the error (e.g. ``"frame 'a' depth"``). Refused:
    a non-string or empty path, an absolute path (POSIX or Windows style), and
    any path that, after ``..`` and symbolic links are resolved, lies outside
    ``root`` (itself resolved). The file need not exist.
    """
    if not isinstance(relpath, (str, os.PathLike)):
        raise DepthcliError(f"{what}: path must be a string, got {type(relpath).__name__}")
    text = os.fspath(relpath)
    if not isinstance(text, str) or text.strip() == "" or "\x00" in text:
        raise DepthcliError(f"{what}: path {text!r} is empty or malformed")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise DepthcliError(
            f"{what}: absolute path '{text}' is not allowed",
            "paths in depthcli metadata are relative to their folder",
        )
    base = Path(root).resolve()
    try:
        full = (base / text).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise DepthcliError(f"{what}: cannot resolve '{text}': {exc}") from None
    if full != base and base not in full.parents:
        raise DepthcliError(
            f"{what}: path '{text}' leads outside '{base}'",
            "paths in depthcli metadata must stay inside their folder (no '..', no links pointing out)",
        )
    return full

