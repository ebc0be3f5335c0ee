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


# ----------------------------------------------------------------------------- dataset paths, through every reader

from hostile import assert_refused, tiny_dataset  # noqa: E402


def _ply(path: Path) -> Path:
    import numpy as np

    from depthcli.io.ply import SplatArrays, write_splats_ply

    rng = np.random.default_rng(0)
    n = 20
    write_splats_ply(path, SplatArrays(
        means=(rng.normal(size=(n, 3)) * 0.3 + [0, 0, 2.5]).astype(np.float32),
        log_scales=np.full((n, 3), -2.5, np.float32), quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        opacity_logits=np.full(n, 2.0, np.float32), f_dc=np.zeros((n, 3), np.float32), has_colors=False))
    return path


def _hostile_dataset(tmp_path: Path, how: str) -> Path:
    """A valid dataset whose frame 1 depth (or image) leads outside it; the target exists and is valid."""
    import json

    import numpy as np

    ds = tiny_dataset(tmp_path / "ds")
    meta = json.loads((ds / "dataset.json").read_text())
    fr = meta["frames"][1]
    secret = tmp_path / "secret.npy"
    np.save(secret, np.full((fr["height"], fr["width"]), 2.5, np.float32))
    if how == "dotdot":
        fr["depth"] = "../secret.npy"
    elif how == "absolute":
        fr["depth"] = str(secret)
    elif how == "link":
        (ds / fr["depth"]).unlink()
        os.symlink(secret, ds / fr["depth"])
    elif how == "image":
        fr["image"] = "images/../../" + Path(fr["image"]).name
        (tmp_path / Path(fr["image"]).name).write_bytes((ds / meta["frames"][1]["depth"]).read_bytes())
    (ds / "dataset.json").write_text(json.dumps(meta))
    return ds


@pytest.mark.parametrize("how", ["dotdot", "absolute", "link", "image"])
def test_every_dataset_reader_refuses_paths_leaving_the_dataset(tmp_path, run_cli, how):
    ds = _hostile_dataset(tmp_path, how)
    ply = _ply(tmp_path / "s.ply")
    good = tiny_dataset(tmp_path / "good")
    why = "outside|absolute"
    cases = [
        ["splat-train", ds, tmp_path / "job", "--steps", "2"],
        ["render", ply, ds, tmp_path / "r"],
        ["train", ds, tmp_path / "t", "--max-steps", "1", "--device", "cpu"],
        ["eval", ds, good],  # as prediction
        ["eval", good, ds],  # as ground truth
    ]
    for args in cases:
        out = args[2] if args[0] != "render" else args[3]
        absent = [out] if args[0] != "eval" else []
        assert_refused(run_cli, args, inputs=[tmp_path / "ds", good, ply, tmp_path / "secret.npy"], absent=absent,
                       match=why)
