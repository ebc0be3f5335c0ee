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


# ----------------------------------------------------------------------------- checkpoints never run code


class _Payload:
    """Unpickling this creates ``path`` (a stand-in for any code a hostile file could run)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(path: Path, sentinel: Path, legacy: bool) -> None:
    """Replace a checkpoint file by a hostile one (torch zip format, or a bare pickle)."""
    import pickle

    import torch

    obj = {"params": _Payload(sentinel), "step": 1}
    if legacy:
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)


def test_payload_would_run_if_unpickled(tmp_path):
    """The planted file is really hostile: a plain unpickle creates the sentinel."""
    import torch

    sentinel = tmp_path / "ran"
    _plant(tmp_path / "x.pt", sentinel, legacy=False)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert sentinel.exists()


@pytest.fixture(scope="module")
def splat_job(tmp_path_factory):
    """A finished 2-step splat-train job with two checkpoints."""
    from depthcli.cli import main

    base = tmp_path_factory.mktemp("splat")
    ds = tiny_dataset(base / "ds")
    job = base / "job"
    assert main(["splat-train", str(ds), str(job), "--steps", "2", "--checkpoint-every", "1", "--eval-every", "0",
                 "--max-init-points", "200"]) == 0
    return ds, job


@pytest.mark.parametrize("legacy", [False, True])
def test_splat_train_resume_refuses_a_hostile_checkpoint(splat_job, tmp_path, run_cli, legacy):
    import shutil

    ds, job0 = splat_job
    job = tmp_path / "job"
    shutil.copytree(job0, job)
    sentinel = tmp_path / "ran"
    _plant(job / "checkpoints" / "step_000002.pt", sentinel, legacy)
    assert_refused(run_cli, ["splat-train", ds, job, "--steps", "4", "--resume"], inputs=[ds, job],
                   match="plain data")
    assert not sentinel.exists()


def test_splat_train_resume_refuses_a_checkpoint_linked_from_outside(splat_job, tmp_path, run_cli):
    import shutil

    ds, job0 = splat_job
    job = tmp_path / "job"
    shutil.copytree(job0, job)
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(job / "checkpoints" / "step_000002.pt", outside)
    (job / "checkpoints" / "step_000002.pt").unlink()
    os.symlink(outside, job / "checkpoints" / "step_000002.pt")
    assert_refused(run_cli, ["splat-train", ds, job, "--steps", "4", "--resume"], inputs=[ds, job, outside],
                   match="outside")


@pytest.fixture(scope="module")
def train_job(tmp_path_factory):
    """A finished one-step train run (tiny preset, 14 px crops)."""
    import torch

    from depthcli.cli import main

    base = tmp_path_factory.mktemp("train")
    ds = tiny_dataset(base / "ds", frames=3)
    job = base / "run"
    old = torch.get_num_threads()
    try:
        assert main(["train", str(ds), str(job), "--max-steps", "1", "--epochs", "1", "--batch-size", "2",
                     "--size", "14", "--val-fraction", "0", "--threads", "1", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(old)
    return ds, job


def _train_args(ds, job):
    return ["train", ds, job, "--max-steps", "2", "--epochs", "2", "--batch-size", "2", "--size", "14",
            "--val-fraction", "0", "--threads", "1", "--device", "cpu", "--resume"]


@pytest.mark.parametrize("legacy", [False, True])
def test_train_resume_refuses_a_hostile_trainer_state(train_job, tmp_path, run_cli, legacy):
    import json
    import shutil

    ds, job0 = train_job
    job = tmp_path / "run"
    shutil.copytree(job0, job)
    name = json.loads((job / "checkpoints" / "latest.json").read_text())["checkpoint"]
    sentinel = tmp_path / "ran"
    _plant(job / "checkpoints" / name / "trainer_state.pt", sentinel, legacy)
    assert_refused(run_cli, _train_args(ds, job), inputs=[ds, job], match="plain data")
    assert not sentinel.exists()


@pytest.mark.parametrize("pointer", ["../../outside", "ABS"])
def test_train_resume_refuses_a_pointer_leaving_the_job(train_job, tmp_path, run_cli, pointer):
    import json
    import shutil

    ds, job0 = train_job
    job = tmp_path / "run"
    shutil.copytree(job0, job)
    latest = job / "checkpoints" / "latest.json"
    name = json.loads(latest.read_text())["checkpoint"]
    shutil.copytree(job / "checkpoints" / name, tmp_path / "outside")  # a complete checkpoint, elsewhere
    target = str(tmp_path / "outside") if pointer == "ABS" else pointer
    latest.write_text(json.dumps({"checkpoint": target, "global_step": 1}))
    assert_refused(run_cli, _train_args(ds, job), inputs=[ds, job, tmp_path / "outside"], match="outside|absolute")


@pytest.mark.parametrize("field", ["label", "image"])
def test_distill_student_refuses_an_index_leaving_its_folders(tmp_path, run_cli, field):
    import json

    import numpy as np

    from depthcli.io.atomic import mark_output
    from depthcli.io.images import write_image_rgb

    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "distill"
    (out / "labels" / "items").mkdir(parents=True)
    mark_output(out, "distill")
    items = []
    for i in range(3):
        write_image_rgb(images / f"{i}.png", np.full((14, 14, 3), 40 * i, np.uint8))
        with open(out / "labels" / "items" / f"{i}.npz", "wb") as fh:
            np.savez(fh, disparity=np.ones((14, 14), np.float32), mask=np.ones((14, 14), bool))
        items.append({"name": f"{i}.png", "image": str(images / f"{i}.png"), "label": f"items/{i}.npz"})
    write_image_rgb(tmp_path / "secret.png", np.zeros((14, 14, 3), np.uint8))
    with open(tmp_path / "secret.npz", "wb") as fh:
        np.savez(fh, disparity=np.ones((14, 14), np.float32), mask=np.ones((14, 14), bool))
    if field == "label":
        items[1]["label"] = "../../secret.npz"
    else:
        items[1]["name"] = "../secret.png"
    (out / "labels" / "index.json").write_text(json.dumps({"images": str(images), "items": items}))
    assert_refused(run_cli, ["distill", out, "--stage", "student", "--size", "14", "--batch-size", "2",
                             "--threads", "1", "--device", "cpu"],
                   inputs=[out, images, tmp_path / "secret.npz", tmp_path / "secret.png"], match="outside")


def test_no_unsafe_loader_left_in_the_package():
    """Every torch.load is weights_only=True; no pickle, no allow_pickle=True."""
    import re

    root = Path(__file__).resolve().parents[1] / "depthcli"
    bad = []
    for p in root.rglob("*.py"):
        text = p.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{p.name}: {m.group(0)}")
        for pat in (r"import pickle\b.*\n(?:.*\n)*?.*pickle\.loads?\(", r"allow_pickle\s*=\s*True", r"weights_only\s*=\s*False"):
            if re.search(pat, text):
                bad.append(f"{p.name}: {pat}")
    assert not bad, bad
