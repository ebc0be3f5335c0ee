"""``torchrun --nproc_per_node 2`` (gloo on CPU): training and labelling with sharded data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from depthcli.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """The single-process comparison runs in this process: restore torch's thread count afterwards."""
    import torch

    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def torchrun(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "depthcli", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def make_dataset(folder: Path, n: int, h: int = 42, w: int = 56) -> None:
    from depthcli.geometry import make_K
    from depthcli.io.dataset import DatasetWriter

    writer = DatasetWriter(folder, depth_units="m", source={"kind": "test"})
    v, u = np.mgrid[0:h, 0:w] + 0.5
    for i in range(n):
        depth = (2.0 + (v / h) * (i + 1) + 0.1 * u / w).astype(np.float32)
        img = (np.stack([u / w, v / h, np.full_like(u, i / n)], -1) * 255).astype(np.uint8)
        writer.add_frame(f"f{i}", depth, make_K(50, 50, w / 2, h / 2), np.eye(4), image=img)
    writer.close()


def test_torchrun_train_two_processes(tmp_path):
    make_dataset(tmp_path / "ds", n=9)
    out = tmp_path / "run"
    proc = torchrun(["train", str(tmp_path / "ds"), str(out), "--epochs", "2", "--batch-size", "2", "--size", "42",
                     "--threads", "1", "--json"])
    summary = json.loads(proc.stdout)  # only rank 0 reports
    assert summary["processes"] == 2 and summary["train_frames"] == 8 and summary["val_frames"] == 1
    assert summary["steps"] == 4  # 8 frames / 2 ranks = 4 per rank -> 2 steps of 2 per epoch, 2 epochs
    assert np.isfinite(summary["val_abs_rel"])
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["world_size"] == 2


def test_torchrun_labels_match_single_process(tmp_path, capsys):
    from depthcli.estimators.models import build_model, save_model
    from depthcli.io.images import write_image_rgb

    save_model(build_model("tiny", input_size=42, seed=0), tmp_path / "t1")
    save_model(build_model("tiny", input_size=42, seed=1), tmp_path / "t2")
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(7):  # odd count: the shards differ in size
        rel = f"sub/im{i}.png" if i % 3 == 0 else f"im{i}.png"
        write_image_rgb(images / rel, rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8))
        names.append(rel)
    common = ["--teacher", str(tmp_path / "t1"), "--teacher", str(tmp_path / "t2"), "--images", str(images),
              "--stage", "label", "--threads", "1", "--json"]
    torchrun(["distill", str(tmp_path / "ddp"), *common])
    assert main(["distill", str(tmp_path / "single"), *common]) == 0
    capsys.readouterr()

    # every image labelled exactly once, by one rank
    seen = []
    ranks = set()
    for log in sorted((tmp_path / "ddp" / "labels" / "ranks").glob("rank_*.jsonl")):
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            seen.append(rec["image"])
            ranks.add(rec["rank"])
    assert sorted(seen) == sorted(names) and ranks == {0, 1}

    idx_ddp = json.loads((tmp_path / "ddp" / "labels" / "index.json").read_text())
    idx_one = json.loads((tmp_path / "single" / "labels" / "index.json").read_text())
    assert [it["name"] for it in idx_ddp["items"]] == [it["name"] for it in idx_one["items"]]
    assert idx_ddp["agreement"] is True
    for a, b in zip(idx_ddp["items"], idx_one["items"]):
        with np.load(tmp_path / "ddp" / "labels" / a["label"]) as za, np.load(tmp_path / "single" / "labels" / b["label"]) as zb:
            np.testing.assert_array_equal(za["disparity"], zb["disparity"])
            np.testing.assert_array_equal(za["mask"], zb["mask"])
