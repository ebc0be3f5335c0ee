"""train / predict / distill: models, data, CLI behaviour, resume after kill -9, real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from depthcli.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_dataset(folder: Path, n: int = 6, h: int = 60, w: int = 80, seed: int = 0) -> Path:
    """A tiny metric depth dataset: a ground plane below a random horizon, a far wall, textured."""
    from depthcli.geometry import make_K
    from depthcli.io.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    writer = DatasetWriter(folder, depth_units="m", source={"kind": "test"})
    v, u = np.mgrid[0:h, 0:w] + 0.5
    for i in range(n):
        horizon = h * (0.3 + 0.2 * rng.random())
        depth = np.where(v > horizon, 60.0 / np.maximum(v - horizon, 1e-3), 30.0)
        depth = np.minimum(depth, 30.0).astype(np.float32)
        depth[0, 0] = 120.0  # beyond the 80 m cutoff
        img = np.stack([np.sin(u / 4 + i) * 0.5 + 0.5, np.cos(v / 3) * 0.5 + 0.5, np.clip(3 / depth, 0, 1)], -1)
        writer.add_frame(f"f{i:02d}", depth, make_K(80, 80, w / 2, h / 2), np.eye(4), image=(img * 255).astype(np.uint8))
    writer.close()
    return folder


def image_folder(folder: Path, n: int = 4, size: tuple[int, int] = (70, 100)) -> Path:
    from depthcli.io.images import write_image_rgb

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        write_image_rgb(folder / f"img_{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from depthcli.estimators.models import build_model, save_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(build_model("tiny", input_size=56, seed=0), path)
    return path


def test_presets_match_depth_anything_v2_sizes():
    from depthcli.estimators.models import PRESETS, make_config

    assert PRESETS["small"]["hidden_size"] == 384 and PRESETS["base"]["hidden_size"] == 768
    assert PRESETS["large"]["hidden_size"] == 1024 and PRESETS["large"]["out_indices"] == [5, 12, 18, 24]
    cfg = make_config("small")
    assert cfg.depth_estimation_type == "relative" and cfg.patch_size == 14
    assert list(cfg.neck_hidden_sizes) == [48, 96, 192, 384] and cfg.fusion_hidden_size == 64
    assert cfg.backbone_config.num_hidden_layers == 12 and cfg.backbone_config.num_attention_heads == 6


def test_transformers_checkpoint_loads_as_teacher(tmp_path):
    """A checkpoint written by transformers itself loads and gives transformers' outputs."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from depthcli.estimators.models import IMAGENET_MEAN, IMAGENET_STD, forward_disparity, load_model

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=42, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                              fusion_hidden_size=16, head_hidden_size=8)
    ref = DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():
        ref.head.conv3.bias.fill_(0.5)
    ref.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    x = torch.rand(2, 3, 42, 56)
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    with torch.no_grad():
        expected = ref(pixel_values=(x - mean) / std).predicted_depth
        got = forward_disparity(ours, x)
    assert got.shape == (2, 42, 56)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_incompatible_checkpoint_is_one_line(tmp_path, capsys):
    from transformers import Dinov2Config

    Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "dino")
    images = image_folder(tmp_path / "imgs", n=1)
    code = main(["predict", str(tmp_path / "dino"), str(images), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "not Depth Anything" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), str(images), str(tmp_path / "out")]) == 1
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_save_load_roundtrip(tmp_path, tiny_ckpt):
    from depthcli.estimators.models import load_model, model_input_size, predict_disparity

    m = load_model(tiny_ckpt)
    assert model_input_size(m) == 56
    assert (tiny_ckpt / "model.safetensors").is_file() and (tiny_ckpt / "config.json").is_file()
    img = np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)
    d = predict_disparity(m, img)
    assert d.shape == (50, 90) and d.dtype == np.float32 and np.isfinite(d).all()


def test_sample_dataset_targets(tmp_path):
    from depthcli.estimators.data import SampleDataset, samples_from_datasets

    make_dataset(tmp_path / "ds", n=2)
    refs = samples_from_datasets([tmp_path / "ds"])
    image, target, mask, gt = SampleDataset(refs, 56, train=False)[0]
    assert image.shape == (3, 56, 56) and target.shape == (56, 56) and mask.dtype == torch.bool
    assert float(target[mask].min()) == 0.0 and float(target[mask].max()) == 1.0
    # target is min-max normalised 1/depth of the masked pixels: check against gt depth
    disp = 1.0 / gt[mask].double()
    np.testing.assert_allclose(target[mask].double().numpy(), ((disp - disp.min()) / (disp.max() - disp.min())).numpy(),
                               atol=1e-5)
    assert float(gt.max()) <= 80.0


def test_strong_augment_keeps_labels_consistent():
    from depthcli.estimators.data import color_jitter, cutmix

    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 28, 28, generator=g)
    targets = torch.arange(3.0)[:, None, None].expand(3, 28, 28).clone()
    masks = torch.ones(3, 28, 28, dtype=torch.bool)
    jit = color_jitter(images, g)
    assert jit.shape == images.shape and not torch.equal(jit, images) and jit.min() >= 0 and jit.max() <= 1
    im2, t2, m2, box = cutmix(images, targets, masks, g, p=1.0)
    assert box.any()
    for i in range(3):
        j = (i - 1) % 3  # pasted from the previous image of the batch
        assert torch.equal(t2[i][box[i]], torch.full_like(t2[i][box[i]], float(j)))
        assert torch.equal(t2[i][~box[i]], torch.full_like(t2[i][~box[i]], float(i)))
        assert torch.equal(im2[i][:, box[i]], images[j][:, box[i]])


def test_train_cli_folder_of_datasets(tmp_path, capsys):
    make_dataset(tmp_path / "scenes" / "scene_000", n=5, seed=0)
    make_dataset(tmp_path / "scenes" / "scene_001", n=5, seed=1)
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "scenes"), str(out), "--epochs", "2", "--batch-size", "4", "--size", "42",
            "--threads", "1", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_frames"] == 9 and summary["val_frames"] == 1 and summary["steps"] == 6
    assert summary["epochs_done"] == 2 and np.isfinite(summary["val_abs_rel"]) and 0 <= summary["val_delta1"] <= 1
    assert (out / "model" / "model.safetensors").is_file() and (out / "loss_curve.png").stat().st_size > 1000
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["train"]) == 6 and len(hist["epochs"]) == 2
    # existing output: refused without --resume/--overwrite
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    # --resume of a finished run: nothing more to do, same step count
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 6


def test_train_empty_dataset_is_one_line(tmp_path, capsys):
    from depthcli.io.dataset import DatasetWriter

    DatasetWriter(tmp_path / "empty", depth_units="m", source={}).close()
    assert main(["train", str(tmp_path / "empty"), str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "no training frames" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "nope"), str(tmp_path / "run")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_predict_cli(tmp_path, tiny_ckpt, capsys):
    from depthcli.io.dataset import load_dataset

    images = image_folder(tmp_path / "imgs", n=3, size=(70, 100))
    (images / "notes.txt").write_text("not an image")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_ckpt), str(images), str(out), "--json", "--threads", "1"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["predicted"] == 3 and s["skipped_non_image"] == 1 and s["skipped_unreadable"] == 1
    ds = load_dataset(out)
    assert ds.depth_units == "affine" and ds.depth_kind == "disparity" and "camera" in ds.meta
    f = ds.frames[0]
    assert (f.width, f.height) == (100, 70) and ds.read_depth(f).shape == (70, 100)
    np.testing.assert_array_equal(f.cam_from_world, np.eye(4))
    assert (out / "previews").is_dir() and len(list((out / "previews").iterdir())) == 3
    assert main(["predict", str(tiny_ckpt), str(images), str(out)]) == 1  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "noimgs").mkdir()
    (tmp_path / "noimgs" / "a.txt").write_text("x")
    assert main(["predict", str(tiny_ckpt), str(tmp_path / "noimgs"), str(tmp_path / "p2")]) == 1
    assert "no images" in capsys.readouterr().err


def test_predict_real_nyu(tmp_path, tiny_ckpt, capsys):
    rgb = SHARED / "depth_gt" / "nyu" / "rgb"
    if not rgb.is_dir():
        pytest.skip("../shared/data absent (depth_gt/nyu/rgb)")
    out = tmp_path / "nyu_pred"
    assert main(["predict", str(tiny_ckpt), str(rgb), str(out), "--json", "--threads", "1"]) == 0
    s = json.loads(capsys.readouterr().out)
    n = len([p for p in rgb.iterdir() if p.suffix.lower() in (".jpg", ".png")])
    assert s["predicted"] == n > 0
    from depthcli.io.dataset import load_dataset

    ds = load_dataset(out)
    assert all((fr.width, fr.height) == (640, 480) for fr in ds.frames)


def test_distill_stages_and_partial_labels(tmp_path, tiny_ckpt, capsys):
    images = image_folder(tmp_path / "unlabeled", n=5, size=(56, 70))
    (images / "junk.bin").write_bytes(b"x")
    out = tmp_path / "distill"
    base = ["distill", str(out), "--teacher", str(tiny_ckpt), "--teacher", str(tiny_ckpt), "--images", str(images),
            "--threads", "1", "--json"]
    assert main(base + ["--stage", "label"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["labels"] == 5 and s["labelled_now"] == 5 and s["skipped_non_image"] == 1
    assert s["trusted_pixel_fraction"] == 1.0  # two identical teachers never disagree
    items = sorted((out / "labels" / "items").glob("*.npz"))
    assert len(items) == 5
    with np.load(items[0]) as z:
        assert z["disparity"].shape == (56, 70) and z["mask"].dtype == bool
    # Simulate a crash while labelling: one label missing, a half-written temp file beside the others.
    items[0].unlink()
    partial = out / "labels" / "items" / f".{items[0].name}.abc123.tmp.npz"  # as atomic_write names it
    partial.write_bytes(b"PK\x03\x04 half")
    (out / "labels" / "index.json").unlink()
    assert main(base + ["--stage", "student"]) == 1
    assert "no complete pseudo-labels" in capsys.readouterr().err
    assert main(base + ["--stage", "label"]) == 1  # exists: needs --resume
    capsys.readouterr()
    assert main(base + ["--stage", "label", "--resume"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["labelled_now"] == 1 and s["labels"] == 5
    assert not partial.exists() and items[0].is_file()
    assert main(base + ["--stage", "student", "--batch-size", "2", "--size", "42", "--augment", "basic",
                        "--encoder-lr-factor", "0.5"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["student_epochs_done"] == 1 and s["student_steps"] == 2  # 4 train images / batch 2, one epoch
    student_cfg = json.loads((out / "student" / "train_config.json").read_text())
    assert (student_cfg["augment"], student_cfg["encoder_lr_factor"]) == ("basic", 0.5)  # reach the student's trainer
    assert Path(s["model"]) == out / "student" / "model" and (out / "student" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_kill9_then_resume(tmp_path, capsys):
    make_dataset(tmp_path / "ds", n=12)
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "ds"), str(out), "--epochs", "30", "--batch-size", "2", "--size", "42",
            "--checkpoint-every", "2", "--threads", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "depthcli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["global_step"] >= 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["global_step"]
    total = 30 * 6  # 11 training frames (1 held out) / batch 2 -> 6 steps per epoch
    assert 4 <= killed_at < total
    assert main(args + ["--resume", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["steps"] == total and s["epochs_done"] == 30
    hist = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == list(range(1, 31))


@pytest.mark.slow
def test_teacher_student_example_short(tmp_path):
    """The shortened examples/teacher_student.py: a tiny teacher beats trivial baselines, the student follows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("teacher_student", ROOT / "examples" / "teacher_student.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.run(tmp_path / "ts", quick=True, threads=1, toy=True, teacher_steps=200, student_steps=300, quiet=True,
                  init=None)  # from random weights
    t, s = res["teacher"]["abs_rel"], res["student"]["abs_rel"]
    assert t < 0.95 * res["vertical_ramp"]["abs_rel"] and t < 0.8 * res["constant"]["abs_rel"], res
    assert s <= 1.6 * t, res  # the full example reaches <= 1.25 x (see docs)
    assert res["teacher"]["delta1"] > res["constant"]["delta1"]
    # outputs are disparity (larger = nearer), not depth-ordered: positive best-fit scale on every frame
    assert res["teacher"]["negative_scale"] == 0 and res["student"]["negative_scale"] == 0, res


def test_train_from_init_checkpoint(tmp_path, tiny_ckpt, capsys):
    from depthcli.estimators.models import load_model

    make_dataset(tmp_path / "ds", n=4)
    out = tmp_path / "ft"
    assert main(["train", str(tmp_path / "ds"), str(out), "--init", str(tiny_ckpt), "--max-steps", "2",
                 "--batch-size", "2", "--encoder-lr-factor", "0.1", "--threads", "1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["steps"] == 2 and s["size"] == 56  # the checkpoint's input size
    a, b = load_model(tiny_ckpt), load_model(out / "model")
    assert a.config.backbone_config.hidden_size == b.config.backbone_config.hidden_size
    assert not torch.equal(a.head.conv3.weight, b.head.conv3.weight)  # it trained
    assert main(["train", str(tmp_path / "ds"), str(tmp_path / "bad"), "--init", str(tmp_path / "ds")]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_command_modules_import_light():
    code = ("import sys, depthcli.commands.train, depthcli.commands.predict, depthcli.commands.distill; "
            "heavy = [m for m in ('torch', 'transformers', 'cv2', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
