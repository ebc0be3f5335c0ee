"""Numbers at the boundary, and a full disk: every refusal is one line, exit 1, nothing left.

Each bad flag value, each bad number in a file depthcli reads (dataset.json,
a model's depthcli.json) and a disk that fills up mid-write must end with a
non-zero exit, exactly one line of output without a traceback or "internal
error", no output folder (nor a hidden ``.OUT.partial-*``) and every input
byte-identical. The checks run before any heavy work, so these tests are fast.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from depthcli.errors import DepthcliError

# --------------------------------------------------------------------------- helpers


def _hashes(*roots: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                out[os.path.join(dirpath, name)] = "dir"
            for name in filenames:
                p = os.path.join(dirpath, name)
                out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def refused(run_cli, args, *, inputs=(), absent=(), match=None, notes_before=False) -> str:
    """Run ``depthcli ARGS``: exit != 0, one line, no traceback, ``absent`` not created, inputs unchanged.

    ``notes_before``: a run that failed midway (a full disk) may have printed
    ``warning:``/``detected`` notes before its one error line.
    """
    before = _hashes(*inputs)
    code, out, err = run_cli(*[str(a) for a in args])
    text = out + err
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code != 0, text
    assert "Traceback" not in text and "internal error" not in text, text
    if notes_before:
        assert all(ln.startswith(("warning:", "detected")) for ln in lines[:-1]), lines
        lines = lines[-1:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:"), lines
    if match is not None:
        assert match in lines[0], lines[0]
    assert _hashes(*inputs) == before, "an input changed"
    for p in absent:
        p = Path(p)
        assert not p.exists(), f"'{p}' was left behind"
        hidden = [q.name for q in p.parent.iterdir() if q.name.startswith(f".{p.name}.")]
        assert not hidden, hidden
    return lines[0]


def make_dataset(root: Path, frames: int = 4, w: int = 16, h: int = 12) -> Path:
    """A tiny depth dataset (a tilted plane, images) written by depthcli's own writer."""
    from depthcli.io.dataset import DatasetWriter

    writer = DatasetWriter(root, depth_units="m", source={"kind": "test"})
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(frames):
        depth = (2.0 + 0.05 * xx + 0.02 * yy + 0.1 * i).astype(np.float32)
        image = np.stack([xx * 10 % 255, yy * 20 % 255, np.full_like(xx, 40 * i)], -1).astype(np.uint8)
        K = np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]])
        T = np.eye(4)
        T[0, 3] = 0.05 * i
        writer.add_frame(f"f{i}", depth, K, T, image=image)
    writer.close()
    return root


def write_ply(path: Path, n: int = 50) -> Path:
    """Depth-only splats in front of the dataset's cameras."""
    from depthcli.io.ply import SplatArrays, write_splats_ply

    rng = np.random.default_rng(0)
    write_splats_ply(path, SplatArrays(
        means=rng.normal(0, 0.3, (n, 3)).astype(np.float32) + np.array([0.3, 0.2, 2.5], np.float32),
        log_scales=np.full((n, 3), -3.0, np.float32), quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        opacity_logits=np.full(n, 2.0, np.float32), f_dc=np.zeros((n, 3), np.float32), has_colors=False))
    return path


def edit_dataset(src: Path, dst: Path, change) -> Path:
    """Copy ``src`` to ``dst`` and apply ``change(meta)`` to the first frame's dataset.json entry."""
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / "dataset.json").read_text())
    change(meta["frames"][0])
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    ds = make_dataset(root / "ds")
    images = root / "images"
    images.mkdir()
    import cv2

    for i in range(2):
        cv2.imwrite(str(images / f"im{i}.png"), np.full((28, 28, 3), 60 * i, np.uint8))
    model = root / "model"  # flags are checked before a model is opened: a stand-in folder
    model.mkdir()
    (model / "config.json").write_text("{}")
    ply = write_ply(root / "splats.ply")
    return {"root": root, "ds": ds, "images": images, "model": model, "ply": ply}


# --------------------------------------------------------------------------- flags

FLAG_CASES = {
    "synth": [
        (["--frames", "0"], "--frames"), (["--frames", "-1"], "--frames"), (["--scenes", "0"], "--scenes"),
        (["--width", "4"], "--width"), (["--height", "100000"], "--height"), (["--seed", "-1"], "--seed"),
        (["--colmap-points", "0"], "--colmap-points"), (["--style", "moon"], "style"),
    ],
    "convert": [
        (["--max-frames", "0"], "--max-frames"), (["--max-frames", "-1"], "--max-frames"),
        (["--max-depth", "nan"], "--max-depth"), (["--max-depth", "-5"], "--max-depth"),
        (["--max-depth", "inf"], "--max-depth"), (["--downscale", "0"], "--downscale"),
        (["--depth-scale", "0"], "--depth-scale"), (["--input-depth-scale", "nan"], "--input-depth-scale"),
        (["--intrinsics", "0", "10", "8", "6"], "FX"), (["--intrinsics", "10", "10", "nan", "6"], "CX"),
        (["--max-reproj-error", "-1"], "--max-reproj-error"), (["--min-track-length", "-1"], "--min-track-length"),
    ],
    "splat-train": [
        (["--steps", "0"], "--steps"), (["--steps", "99999999999999999999999"], "--steps"),
        (["--max-init-points", "0"], "--max-init-points"), (["--seed", "-1"], "--seed"),
        (["--checkpoint-every", "0"], "--checkpoint-every"), (["--max-depth", "nan"], "--max-depth"),
        (["--max-depth", "-5"], "--max-depth"), (["--min-depth", "5", "--max-depth", "1"], "--max-depth"),
        (["--device", "tpu"], "tpu"), (["--device", "cuda:x"], "cuda:x"), (["--test-every", "-1"], "--test-every"),
        (["--eval-every", "-1"], "--eval-every"), (["--mode", "XYZ"], "mode"), (["--densify", "maybe"], "densify"),
        (["--threads", "0"], "--threads"), (["--backend", "opengl"], "backend"),
        (["--depth-loss", "l7"], "--depth-loss"), (["--prior", "PRIOR", "--prior-weight", "nan"], "--prior-weight"),
        (["--prior", "PRIOR", "--prior-weight-final", "-1"], "--prior-weight-final"),
        (["--lr-pose", "nan"], "--lr-pose"), (["--lr-pose", "-1e-3"], "--lr-pose"),
    ],
    "render": [
        (["--min-alpha", "nan"], "--min-alpha"), (["--min-alpha", "1.5"], "--min-alpha"),
        (["--device", "tpu"], "tpu"), (["--mode", "RGB"], "mode"), (["--backend", "opengl"], "backend"),
        (["--threads", "-2"], "--threads"),
    ],
    "train": [
        (["--lr", "nan"], "--lr"), (["--lr", "0"], "--lr"), (["--encoder-lr-factor", "nan"], "--encoder-lr-factor"),
        (["--workers", "-1"], "--workers"), (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--seed", "-1"], "--seed"), (["--max-steps", "-1"], "--max-steps"), (["--max-steps", "0"], "--max-steps"),
        (["--trim", "2"], "--trim"), (["--size", "-14"], "--size"), (["--size", "13"], "multiple of 14"),
        (["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
        (["--val-fraction", "1"], "--val-fraction"), (["--max-depth", "-5"], "--max-depth"),
        (["--max-minutes", "nan"], "--max-minutes"), (["--threads", "0"], "--threads"), (["--device", "tpu"], "tpu"),
        (["--preset", "huge"], "preset"), (["--align", "mean"], "alignment"), (["--weight", "nan"], "weights"),
        (["--weight", "-1"], "weights"),
    ],
    "predict": [
        (["--size", "-14"], "--size"), (["--size", "13"], "multiple of 14"), (["--threads", "0"], "--threads"),
        (["--device", "tpu"], "tpu"),
    ],
    "distill": [
        (["--label-size", "13"], "multiple of 14"), (["--label-size", "0"], "--label-size"),
        (["--epochs", "0"], "--epochs"), (["--lr", "nan"], "--lr"), (["--size", "20"], "multiple of 14"),
        (["--stage", "both"], "stage"), (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--seed", "-1"], "--seed"), (["--max-steps", "-1"], "--max-steps"), (["--device", "tpu"], "tpu"),
        (["--augment", "heavy"], "--augment"), (["--encoder-lr-factor", "-1"], "--encoder-lr-factor"),
    ],
    "export": [
        (["--to", "ply", "--voxel-size", "nan"], "--voxel-size"), (["--to", "ply", "--voxel-size", "inf"], "--voxel-size"),
        (["--to", "ply", "--stride", "0"], "--stride"), (["--to", "colmap", "--points-per-frame", "0"], "--points-per-frame"),
        (["--to", "nerfstudio", "--depth-scale", "nan"], "--depth-scale"), (["--to", "colmap", "--seed", "-1"], "--seed"),
        (["--to", "obj"], "export format"),
    ],
    "align": [
        (["--min-points", "1"], "--min-points"), (["--min-points", "-5"], "--min-points"),
        (["--max-depth", "nan"], "--max-depth"), (["--max-depth", "-5"], "--max-depth"),
        (["--far-factor", "0.5"], "--far-factor"), (["--far-factor", "inf"], "--far-factor"),
        (["--space", "log"], "--space"), (["--fit", "ransac"], "--fit"),
    ],
    "eval": [
        (["--min-depth", "nan"], "--min-depth"), (["--max-depth", "-5"], "--max-depth"),
        (["--min-depth", "5", "--max-depth", "1"], "--max-depth"), (["--gt-scale", "0"], "--gt-scale"),
        (["--pred-scale", "inf"], "--pred-scale"), (["--agreement-pairs", "-1"], "--agreement-pairs"),
        (["--seed", "-1"], "--seed"), (["--report-limit", "-1"], "--report-limit"), (["--align", "mean"], "alignment"),
        (["--crop", "square"], "crop"), (["--preset", "mars"], "preset"),
    ],
}


def _command_args(cmd: str, inp: dict, out: Path) -> tuple[list, list]:
    """(arguments before the flags, inputs that must stay byte-identical)."""
    ds, images, model, ply = inp["ds"], inp["images"], inp["model"], inp["ply"]
    return {
        "synth": ([out], []),
        "convert": ([ds, out], [ds]),
        "splat-train": ([ds, out], [ds]),
        "render": ([ply, ds, out], [ply, ds]),
        "train": ([ds, out], [ds]),
        "predict": ([model, images, out], [model, images]),
        "distill": ([out, "--teacher", model, "--images", images], [model, images]),
        "eval": ([ds, ds, "--report", out], [ds]),
        "export": ([ds, out], [ds]),
        "align": ([ds, ds, out], [ds]),
    }[cmd]


@pytest.mark.parametrize(
    "cmd,flags,match", [(c, f, m) for c, cases in FLAG_CASES.items() for f, m in cases],
    ids=[f"{c}:{' '.join(f)}" for c, cases in FLAG_CASES.items() for f, _ in cases],
)
def test_bad_flag_is_one_line_and_leaves_nothing(run_cli, inputs, tmp_path, cmd, flags, match):
    out = tmp_path / "out"
    before, keep = _command_args(cmd, inputs, out)
    flags = [inputs["ds"] if f == "PRIOR" else f for f in flags]
    refused(run_cli, [cmd, *before, *flags], inputs=keep, absent=[out], match=match)


def test_unparsable_number_is_one_line(run_cli, tmp_path):
    line = refused(run_cli, ["synth", tmp_path / "out", "--frames", "ten"], absent=[tmp_path / "out"], match="--frames")
    assert "--help" in line


# --------------------------------------------------------------------------- numbers in files

BAD_FRAMES = {
    "zero focal": (lambda f: f["K"][0].__setitem__(0, 0.0), "focal"),
    "negative focal": (lambda f: f["K"][1].__setitem__(1, -20.0), "focal"),
    "NaN in K": (lambda f: f["K"][0].__setitem__(2, "NaN"), "K"),
    "K last row": (lambda f: f.__setitem__("K", [[20, 0, 8], [0, 20, 6], [0, 0, 2]]), "last row of K"),
    "non-rigid pose": (lambda f: f["cam_from_world"][0].__setitem__(0, 3.0), "rotation"),
    "pose last row": (lambda f: f["cam_from_world"][3].__setitem__(3, 0.0), "last row"),
    "zero width": (lambda f: f.__setitem__("width", 0), "width"),
    "text height": (lambda f: f.__setitem__("height", "twelve"), "height"),
    "zero depth_scale": (lambda f: f.__setitem__("depth_scale", 0), "depth_scale"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES), ids=list(BAD_FRAMES))
@pytest.mark.parametrize("cmd", ["splat-train", "train", "render", "eval"])
def test_bad_number_in_dataset_json_is_one_line(run_cli, inputs, tmp_path, case, cmd):
    change, match = BAD_FRAMES[case]
    bad = edit_dataset(inputs["ds"], tmp_path / "bad", change)
    out = tmp_path / "out"
    args = {
        "splat-train": ["splat-train", bad, out, "--steps", "2"],
        "train": ["train", bad, out, "--max-steps", "1"],
        "render": ["render", inputs["ply"], bad, out],
        "eval": ["eval", inputs["ds"], bad, "--report", out],
    }[cmd]
    refused(run_cli, args, inputs=[bad, inputs["ds"]], absent=[out], match=match)


def test_dataset_numbers_python_api(inputs, tmp_path):
    from depthcli.io.dataset import load_dataset

    bad = edit_dataset(inputs["ds"], tmp_path / "bad", BAD_FRAMES["zero focal"][0])
    with pytest.raises(DepthcliError, match="focal"):
        load_dataset(bad)
    assert len(load_dataset(inputs["ds"]).frames) == 4  # the good one still loads


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from depthcli.estimators.models import build_model, save_model

    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(build_model("tiny", 28, seed=0), folder)
    return folder


@pytest.mark.parametrize(
    "meta,match",
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"input_size": 13}', "multiple of 14"),
     ('{"input_size": -14}', "input_size"), ('{"input_size": "big"}', "input_size")],
    ids=["malformed", "not an object", "size 13", "size -14", "size text"],
)
def test_bad_model_meta_file_is_one_line(run_cli, inputs, tiny_model, tmp_path, meta, match):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "depthcli.json").write_text(meta)
    out = tmp_path / "pred"
    refused(run_cli, ["predict", model, inputs["images"], out], inputs=[model, inputs["images"]], absent=[out], match=match)


def test_good_model_meta_still_loads(tiny_model):
    from depthcli.estimators.models import load_model, model_input_size

    assert model_input_size(load_model(tiny_model)) == 28


# --------------------------------------------------------------------------- the Python API gets the same checks


def test_configs_validate_for_python_callers(tmp_path):
    from depthcli.convert import ConvertConfig
    from depthcli.estimators.distill import DistillConfig
    from depthcli.estimators.predict import PredictConfig
    from depthcli.estimators.training import TrainConfig
    from depthcli.evaluation import EvalConfig
    from depthcli.splat.trainer import SplatTrainConfig
    from depthcli.synth.generate import SynthConfig

    out = tmp_path / "out"
    bad = [
        (SynthConfig(out, frames=0), "--frames"),
        (ConvertConfig(tmp_path, out, max_frames=0), "--max-frames"),
        (SplatTrainConfig(tmp_path, out, lr_means=float("nan")), "lr_means"),
        (SplatTrainConfig(tmp_path, out, init_opacity=1.0), "init_opacity"),
        (TrainConfig([tmp_path], out, lr=float("nan")), "--lr"),
        (TrainConfig([tmp_path], out, weight_decay=-1), "weight_decay"),
        (DistillConfig([tmp_path], tmp_path, out, agreement_tol=float("inf")), "agreement_tol"),
        (PredictConfig(tmp_path, tmp_path, out, size=15), "multiple of 14"),
        (EvalConfig([tmp_path], tmp_path, workers=-1), "workers"),
    ]
    for cfg, match in bad:
        with pytest.raises(DepthcliError, match=match):
            cfg.validate()
    for cfg in (SynthConfig(out), ConvertConfig(tmp_path, out), SplatTrainConfig(tmp_path, out),
                TrainConfig([tmp_path], out), DistillConfig([tmp_path], tmp_path, out),
                PredictConfig(tmp_path, tmp_path, out), EvalConfig([tmp_path], tmp_path)):
        cfg.validate()  # the defaults are valid
    assert not out.exists()


def test_validate_helpers():
    from depthcli.validate import check_float, check_int, check_multiple

    assert check_int(3.0, "n", min=1) == 3 and isinstance(check_int(3.0, "n", min=1), int)
    assert check_int(None, "n", optional=True) is None
    assert check_float(0.5, "x", min=0, max=1) == 0.5
    for bad in (True, "3", 2.5, 10**30):
        with pytest.raises(DepthcliError):
            check_int(bad, "n", min=0)
    for bad in (math.nan, math.inf, -math.inf, "1", None):
        with pytest.raises(DepthcliError):
            check_float(bad, "x")
    with pytest.raises(DepthcliError, match="must be a positive number, got 0"):
        check_float(0.0, "x", min=0.0, min_open=True)
    with pytest.raises(DepthcliError, match="e.g. 14 or 28"):
        check_multiple(15, "--size", 14)


# --------------------------------------------------------------------------- a full disk


def _enospc_after(n_ok: int, real):
    """A stand-in for a writer: the first ``n_ok`` calls write, then the disk is full
    (a few bytes land in the file first, as on a real full disk)."""
    calls = {"n": 0}

    def write(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= n_ok:
            return real(path, *args, **kwargs)
        Path(path).write_bytes(b"\x93NUMPY")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return write


@pytest.mark.parametrize("cmd", ["synth", "convert", "render", "predict"])
def test_disk_full_says_so_and_leaves_nothing(run_cli, inputs, tiny_model, tmp_path, monkeypatch, cmd):
    import depthcli.io.depth_files as depth_files

    out = tmp_path / "out"
    monkeypatch.setattr(depth_files, "write_depth_npy", _enospc_after(1, depth_files.write_depth_npy))
    if cmd == "synth":
        args, keep = ["synth", out, "--frames", "3", "--width", "16", "--height", "12"], []
    elif cmd == "convert":
        cap = tmp_path / "cap"  # an RGB-D folder (color/ + depth/ in millimetres)
        (cap / "color").mkdir(parents=True)
        (cap / "depth").mkdir()
        import cv2

        for i in range(3):
            cv2.imwrite(str(cap / "color" / f"{i}.png"), np.full((12, 16, 3), 50, np.uint8))
            cv2.imwrite(str(cap / "depth" / f"{i}.png"), np.full((12, 16), 1500, np.uint16))
        args = ["convert", cap, out, "--from", "folder", "--intrinsics", "20", "20", "8", "6", "--input-depth-scale", "1000"]
        keep = [cap]
    elif cmd == "render":
        args, keep = ["render", inputs["ply"], inputs["ds"], out], [inputs["ply"], inputs["ds"]]
    else:
        model = tiny_model
        args, keep = ["predict", model, inputs["images"], out, "--no-previews", "--device", "cpu"], [model, inputs["images"]]
    line = refused(run_cli, args, inputs=keep, absent=[out], match="disk full while writing", notes_before=True)
    assert str(out) in line and ".partial-" not in line  # names the output as the user knows it


def test_disk_full_in_splat_train_removes_the_new_job(run_cli, inputs, tmp_path, monkeypatch):
    """torch.save reports a full disk without an errno: atomic_write still tells it apart."""
    import shutil

    import depthcli.io.atomic as atomic

    out = tmp_path / "job"
    real = atomic.atomic_write

    def atomic_write(path, write):
        if str(path).endswith(".pt"):  # the first checkpoint: pretend the disk is nearly full
            monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))

            def failing(p):
                Path(p).write_bytes(b"PK")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 43200 vs 43092")

            return real(path, failing)
        return real(path, write)

    monkeypatch.setattr(atomic, "atomic_write", atomic_write)
    line = refused(run_cli, ["splat-train", inputs["ds"], out, "--steps", "2", "--test-every", "0"],
                   inputs=[inputs["ds"]], absent=[out], match="disk full while writing")
    assert "step_000002.pt" in line


def test_disk_full_boundary_is_one_line_for_any_command(monkeypatch, capsys):
    """The boundary recognises ENOSPC raised as-is, chained inside another error, or as numpy's short write."""
    from depthcli import cli

    def boom_plain():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/.x.partial-abc/depth/f.npy")

    def boom_chained():
        try:
            boom_plain()
        except OSError as exc:
            raise RuntimeError("writer failed") from exc

    def boom_numpy():
        raise OSError("76800 requested and 74720 written")

    for fn, where in ((boom_plain, "'/data/out/x/depth/f.npy'"), (boom_chained, "'/data/out/x/depth/f.npy'"),
                      (boom_numpy, "the output")):
        monkeypatch.setattr(cli, "app", lambda *a, fn=fn, **k: fn())
        assert cli.main(["anything"]) == 1
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"disk full while writing {where}" in lines[0], err


@pytest.fixture(scope="module")
def splat_job(inputs, tmp_path_factory):
    """A finished 2-step splat-train job (its checkpoint is edited by the tests)."""
    from depthcli.cli import main

    out = tmp_path_factory.mktemp("splat") / "job"
    assert main(["splat-train", str(inputs["ds"]), str(out), "--steps", "2", "--test-every", "0"]) == 0
    return out


@pytest.mark.parametrize("key,value,match", [("step", -5, "step"), ("step", 10**20, "step"),
                                             ("norm.scale", float("nan"), "scene scale"),
                                             ("norm.scale", 0.0, "scene scale")])
def test_bad_number_in_splat_checkpoint_is_one_line(run_cli, inputs, splat_job, tmp_path, key, value, match):
    """Numbers read back from a job's own checkpoint are checked like flags."""
    import shutil

    import torch

    out = tmp_path / "job"
    shutil.copytree(splat_job, out)
    (ck,) = sorted((out / "checkpoints").glob("step_*.pt"))
    blob = torch.load(ck, weights_only=True)
    if key == "step":
        blob["step"] = value
    else:
        blob["norm"]["scale"] = value
    torch.save(blob, ck)
    refused(run_cli, ["splat-train", inputs["ds"], out, "--steps", "3", "--test-every", "0", "--resume"],
            inputs=[inputs["ds"], out], match=match)


@pytest.mark.parametrize("cmd", ["predict", "train", "splat-train"])
def test_cuda_without_a_gpu_is_one_line(run_cli, inputs, tmp_path, cmd):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    before, keep = _command_args(cmd, inputs, out)
    refused(run_cli, [cmd, *before, "--device", "cuda"], inputs=keep, absent=[out], match="cuda")
