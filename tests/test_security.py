"""Hostile files: paths that leave their folder, checkpoints that would run code.

Every metadata path goes through :func:`depthcli.io.paths.resolve_inside`;
checkpoints hold tensors and plain data only (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from depthcli.errors import DepthcliError
from depthcli.io.paths import resolve_inside


# ----------------------------------------------------------------------------- resolve_inside


def test_resolve_inside_accepts_paths_that_stay(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, "a/x.npy", "t") == tmp_path.resolve() / "a" / "x.npy"
    assert resolve_inside(tmp_path, "a/../b.npy", "t") == tmp_path.resolve() / "b.npy"
    os.symlink(tmp_path / "a", tmp_path / "link")  # a link that stays inside is fine
    assert resolve_inside(tmp_path, "link/x.npy", "t") == tmp_path.resolve() / "a" / "x.npy"


@pytest.mark.parametrize("rel", ["../x.npy", "a/../../x.npy", "/etc/passwd", "C:\\x.npy", "", "a\x00b", None, 3])
def test_resolve_inside_refuses_escapes(tmp_path, rel):
    root = tmp_path / "ds"
    root.mkdir()
    with pytest.raises(DepthcliError, match="what"):
        resolve_inside(root, rel, "what")


def test_resolve_inside_refuses_links_out(tmp_path):
    root = tmp_path / "ds"
    (root / "depth").mkdir(parents=True)
    secret = tmp_path / "secret.npy"
    secret.write_bytes(b"x")
    os.symlink(secret, root / "depth" / "f.npy")
    os.symlink(tmp_path, root / "up")
    for rel in ("depth/f.npy", "up/secret.npy"):
        with pytest.raises(DepthcliError, match="outside"):
            resolve_inside(root, rel, "frame")
