"""``depthcli eval`` end to end: real GT (NYU, KITTI), presets, disparity, bad input, reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data


def _read_png(path: Path, scale: float) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64) / scale


def _gt_maps(name: str, scale: float) -> dict[str, np.ndarray]:
    folder = shared_data("depth_gt", name, "depth")
    return {p.stem: _read_png(p, scale) for p in sorted(folder.glob("*.png"))}


def _run_json(run_cli, *args):
    code, out, err = run_cli("eval", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _nyu_mask(gt: np.ndarray) -> np.ndarray:
    # published NYU protocol: 1e-3 < gt < 10, Eigen crop rows 45:471, cols 41:601 (480x640)
    crop = np.zeros(gt.shape, bool)
    crop[45:471, 41:601] = True
    return (gt > 1e-3) & (gt < 10) & crop


def _kitti_mask(gt: np.ndarray, garg: bool) -> np.ndarray:
    h, w = gt.shape
    crop = np.zeros(gt.shape, bool)
    if garg:  # Garg ECCV16 (BTS, monodepth2): 1e-3 < gt < 80
        crop[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
        return (gt > 1e-3) & (gt < 80) & crop
    # Eigen NIPS14 crop as Marigold: 1e-5 < gt < 80
    crop[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = True
    return (gt > 1e-5) & (gt < 80) & crop


# --------------------------------------------------------------------------- real GT


def test_nyu_gt_against_itself(run_cli):
    d = shared_data("depth_gt", "nyu", "depth")
    res = _run_json(run_cli, d, d, "--preset", "nyu", "--pred-scale", "1000")
    row = res["rows"][0]
    assert row["images"] == 3
    assert row["metrics"]["abs_rel"] == 0 and row["metrics"]["delta1"] == 1
    assert row["metrics_pooled"]["rmse"] == 0


def _write_noisy(maps, folder: Path, factor: float, sigma: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    out = {}
    for k, gt in maps.items():
        pred = (gt * factor + rng.normal(0, sigma, gt.shape)).astype(np.float32)
        pred[gt <= 0] = 0.5  # anything: those pixels are not evaluated
        np.save(folder / f"{k}.npy", pred)
        out[k] = pred.astype(np.float64)
    return out


@pytest.mark.parametrize("dataset,preset,scale", [("nyu", "nyu", 1000.0), ("kitti", "kitti", 256.0), ("kitti", "kitti-garg", 256.0)])
def test_scaled_noisy_prediction_and_preset_masks(run_cli, tmp_path, dataset, preset, scale):
    maps = _gt_maps(dataset, scale)
    preds = _write_noisy(maps, tmp_path / "pred", 1.1, 0.02)
    gt_dir = shared_data("depth_gt", dataset, "depth")
    res = _run_json(run_cli, tmp_path / "pred", gt_dir, "--preset", preset)
    cap = 10.0 if dataset == "nyu" else 80.0
    lo = 1e-5 if preset == "kitti" else 1e-3
    # independent AbsRel: published mask, prediction clipped to [min, max], per image then mean
    absrels, counts = [], {}
    for k, gt in maps.items():
        m = _nyu_mask(gt) if dataset == "nyu" else _kitti_mask(gt, garg=preset == "kitti-garg")
        p = np.clip(preds[k][m], lo, cap)
        absrels.append(np.mean(np.abs(p - gt[m]) / gt[m]))
        counts[k] = int(m.sum())
    per = {r["name"]: r for r in res["per_image"]}
    assert {k: per[k]["valid_pixels"] for k in maps} == counts
    assert res["protocol"]["valid_pixels"] == sum(counts.values())
    assert res["rows"][0]["metrics"]["abs_rel"] == pytest.approx(np.mean(absrels), rel=1e-4)
    assert res["rows"][0]["metrics"]["abs_rel"] == pytest.approx(0.1, abs=0.02)
    # least squares in depth space removes the scale: AbsRel drops to the noise level
    res2 = _run_json(run_cli, tmp_path / "pred", gt_dir, "--preset", preset, "--align", "lstsq")
    assert res2["rows"][0]["metrics"]["abs_rel"] < 0.02
    for r in res2["per_image"]:
        assert r["pred"]["scale"] == pytest.approx(1 / 1.1, rel=0.02)


def test_disparity_prediction_aligned_back(run_cli, tmp_path):
    maps = _gt_maps("nyu", 1000.0)
    (tmp_path / "disp").mkdir()
    for k, gt in maps.items():
        disp = np.zeros_like(gt)
        disp[gt > 0] = 1.0 / gt[gt > 0] * 3.7 + 0.2  # affine-invariant disparity
        np.save(tmp_path / "disp" / f"{k}.npy", disp.astype(np.float32))
    gt_dir = shared_data("depth_gt", "nyu", "depth")
    res = _run_json(run_cli, tmp_path / "disp", gt_dir, "--preset", "nyu", "--pred-kind", "disparity", "--align", "lstsq-disparity")
    assert res["rows"][0]["metrics"]["abs_rel"] < 1e-4
    assert res["rows"][0]["metrics"]["delta1"] == 1.0
    assert "1/max_depth" in res["protocol"]["disparity_clamp"]
    assert res["protocol"]["align_space"].startswith("disparity")


# --------------------------------------------------------------------------- synthetic inputs


def _synthetic(tmp_path: Path, n: int = 3, shape=(24, 32), seed: int = 1) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    maps = {}
    for i in range(n):
        gt = rng.uniform(1.0, 5.0, shape).astype(np.float32)
        gt[0, :4] = 0  # a few invalid pixels
        np.save(gt_dir / f"f{i}.npy", gt)
        maps[f"f{i}"] = gt
    return gt_dir, maps


def _preds(tmp_path: Path, maps, name: str, fn) -> Path:
    d = tmp_path / name
    d.mkdir()
    for k, gt in maps.items():
        np.save(d / f"{k}.npy", np.asarray(fn(gt), dtype=np.float32))
    return d


def test_unmatched_frames_listed_and_strict(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path)
    pred = _preds(tmp_path, maps, "pred", lambda g: g)
    (pred / "f1.npy").unlink()
    np.save(pred / "extra.npy", np.ones((24, 32), np.float32))
    res = _run_json(run_cli, pred, gt_dir)
    assert res["protocol"]["unmatched_gt"] == ["f1"]
    assert res["protocol"]["unmatched_pred"] == {"pred": ["extra"]}
    assert res["rows"][0]["images"] == 2
    code, out, err = run_cli("eval", pred, gt_dir, "--strict")
    assert code == 1 and "unmatched frames" in err and "f1" in err and "Traceback" not in err


def test_shape_mismatch_error_and_resize(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path, n=1)
    pred = _preds(tmp_path, maps, "pred", lambda g: np.full((12, 16), 2.0))
    code, out, err = run_cli("eval", pred, gt_dir)
    assert code == 1 and "16x12" in err and "32x24" in err and "--resize" in err
    res = _run_json(run_cli, pred, gt_dir, "--resize")
    assert res["protocol"]["resized_predictions"] == 1
    # constant 2 vs GT: AbsRel computed independently
    gt = maps["f0"]
    m = gt > 1e-3
    assert res["rows"][0]["metrics"]["abs_rel"] == pytest.approx(np.mean(np.abs(2.0 - gt[m]) / gt[m]), rel=1e-5)


def test_all_invalid_gt_skipped_and_nan_counted(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path)
    np.save(gt_dir / "f2.npy", np.zeros((24, 32), np.float32))  # no valid GT at all

    def with_nan(g):
        p = g.copy()
        p[5, 5] = np.nan
        p[6, 6] = np.inf
        return p

    pred = _preds(tmp_path, maps, "pred", with_nan)
    res = _run_json(run_cli, pred, gt_dir)
    proto = res["protocol"]
    assert proto["images_skipped"] == 1 and proto["skipped"][0]["name"] == "f2"
    # 2 non-finite pixels in each of the 3 predictions (f2 counted too), 4 of them on valid GT
    assert res["rows"][0]["nonfinite_pixels"] == 6
    assert res["rows"][0]["nonfinite_pixels_in_valid_gt"] == 4
    assert res["rows"][0]["metrics"]["abs_rel"] == 0.0  # the rest is perfect
    assert proto["valid_pixels"] == 2 * (24 * 32 - 4 - 2)
    code, out, err = run_cli("eval", pred, gt_dir)
    assert code == 0 and "NaN/Inf" in err and "skipped" in err


def test_no_match_at_all_is_one_clear_error(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path, n=1)
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "zzz.npy", np.ones((2, 2), np.float32))
    code, out, err = run_cli("eval", other, gt_dir)
    assert code == 1 and "matches" in err
    code, out, err = run_cli("eval", tmp_path / "missing", gt_dir)
    assert code == 1 and "does not exist" in err


def test_png_without_scale_is_an_error(run_cli, tmp_path):
    d = shared_data("depth_gt", "nyu", "depth")
    code, out, err = run_cli("eval", d, d)
    assert code == 1 and "--pred-scale" in err


def test_several_models_one_table_same_pixels_and_agreement(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path)
    a = _preds(tmp_path, maps, "a", lambda g: g * 2.0)
    b = _preds(tmp_path, maps, "b", lambda g: g + 0.5)

    def nan_corner(g):
        p = 10.0 - g  # reversed order: every pair disputed w.r.t. a and b
        p[10, 10] = np.nan
        return p

    c = _preds(tmp_path, maps, "c", nan_corner)
    res = _run_json(run_cli, gt_dir, "--pred", a, "--pred", b, "--align", "lstsq")
    assert [r["name"] for r in res["rows"]] == ["a", "b"]
    assert res["rows"][0]["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-5)
    assert res["rows"][0]["metrics"]["disputed_fraction"] == 0.0
    # c has one NaN per image: the shared mask drops that pixel for a as well
    res = _run_json(run_cli, gt_dir, "--pred", a, "--pred", c, "--align", "median", "--agreement-pairs", "2000",
                    "--report", tmp_path / "rep", "--report-limit", "2")
    assert (tmp_path / "rep" / "index.html").read_text().count("<img") == 2
    assert res["rows"][0]["valid_pixels"] == res["rows"][1]["valid_pixels"] == 3 * (24 * 32 - 4 - 1)
    assert res["rows"][0]["metrics"]["disputed_fraction"] > 0.95
    # a folder of prediction folders stands for each of them
    (tmp_path / "models").mkdir()
    for p in (a, b):
        p.rename(tmp_path / "models" / p.name)
    res = _run_json(run_cli, tmp_path / "models", gt_dir)
    assert [r["name"] for r in res["rows"]] == ["a", "b"]


def test_dataset_inputs_auto_kind_csv_and_report(run_cli, tmp_path):
    from depthcli.io.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    gts = {}
    for folder, kind in (("gt_ds", "z"), ("pred_ds", "disparity")):
        w = DatasetWriter(tmp_path / folder, depth_units="m" if kind == "z" else "affine", source={"t": 1}, depth_kind=kind)
        for i in range(2):
            if kind == "z":
                gts[i] = rng.uniform(1, 4, (24, 32)).astype(np.float32)
                w.add_frame(f"img{i}.png", gts[i], K, np.eye(4), image=rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
            else:
                w.add_frame(f"img{i}.png", 2.0 / gts[i] + 0.1, K, np.eye(4))
        w.close()
    out_csv = tmp_path / "m.csv"
    code, out, err = run_cli("eval", tmp_path / "pred_ds", tmp_path / "gt_ds", "--align", "lstsq-disparity",
                             "--csv", out_csv, "--report", tmp_path / "rep", "--boundary")
    assert code == 0, err
    assert "abs_rel" in out and "silog_dav2" in out and "boundary_f1" in out
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["averaging"] for r in rows] == ["image_mean", "pixel_pooled"]
    assert rows[0]["pred_kind"] == "disparity" and rows[0]["align"] == "lstsq-disparity"
    assert float(rows[0]["abs_rel"]) < 1e-5 and float(rows[0]["boundary_f1"]) > 0.99
    assert "1/max_depth" in rows[0]["disparity_clamp"] or "largest valid GT" in rows[0]["disparity_clamp"]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert html.count("<img") == 2 and "lstsq-disparity" in html
    assert len(list((tmp_path / "rep" / "images").glob("*.png"))) == 2
    # existing outputs are not overwritten without --overwrite
    code, out, err = run_cli("eval", tmp_path / "pred_ds", tmp_path / "gt_ds", "--csv", out_csv)
    assert code == 1 and "--overwrite" in err
    code, out, err = run_cli("eval", tmp_path / "pred_ds", tmp_path / "gt_ds", "--report", tmp_path / "rep")
    assert code == 1 and "--overwrite" in err
    assert not list(tmp_path.glob(".rep.partial-*"))


def test_pairs_ordinal_accuracy(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path, n=1)
    pred = _preds(tmp_path, maps, "pred", lambda g: g)
    g = maps["f0"]
    near, far = np.unravel_index(np.argmin(g), g.shape), np.unravel_index(np.argmax(g), g.shape)
    pairs = {"f0.jpg": [
        {"point1": [int(near[0]), int(near[1])], "point2": [int(far[0]), int(far[1])], "closer_point": "point1"},
        {"point1": [int(near[0]), int(near[1])], "point2": [int(far[0]), int(far[1])], "closer_point": "point2"},
    ]}
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    res = _run_json(run_cli, pred, gt_dir, "--pairs", tmp_path / "pairs.json")
    assert res["rows"][0]["metrics"]["pairs_accuracy"] == 0.5  # one right, one mislabeled
    assert res["rows"][0]["pairs"] == {"correct": 1, "total": 2}
    # DA-2K has no depth GT: an all-zero placeholder GT still scores the pairs
    np.save(gt_dir / "f0.npy", np.zeros_like(g))
    res = _run_json(run_cli, pred, gt_dir, "--pairs", tmp_path / "pairs.json")
    assert res["protocol"]["images_skipped"] == 1
    assert res["rows"][0]["pairs"] == {"correct": 1, "total": 2}


def test_bad_options_are_clear(run_cli, tmp_path):
    gt_dir, maps = _synthetic(tmp_path, n=1)
    pred = _preds(tmp_path, maps, "pred", lambda g: g)
    for args, text in ((["--align", "foo"], "unknown alignment"), (["--preset", "bar"], "unknown preset"),
                       (["--crop", "eigen"], "480x640"), (["--min-depth", "0"], "min-depth")):
        code, out, err = run_cli("eval", pred, gt_dir, *args)
        assert code == 1 and text in err, (args, err)


def test_evaluate_arrays_for_trainers():
    import torch

    from depthcli.evaluation import evaluate_arrays

    gt = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    pred = 0.5 * gt + 0.25  # affine in depth: lstsq recovers gt
    r = evaluate_arrays(pred, gt, align="lstsq")
    assert r["valid_pixels"] == 3 and r["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert (r["scale"], r["shift"]) == pytest.approx((2.0, -0.5), abs=1e-5)
    r = evaluate_arrays(pred.numpy(), gt.numpy(), align="none")
    # (|0.75-1|/1 + |1.25-2|/2 + |2.25-4|/4)/3 = (0.25 + 0.375 + 0.4375)/3
    assert r["abs_rel"] == pytest.approx((0.25 + 0.375 + 0.4375) / 3, rel=1e-6)


def test_pfm_predictions_and_median_alignment(run_cli, tmp_path):
    from depthcli.io.depth_files import write_pfm

    gt_dir, maps = _synthetic(tmp_path, n=2)
    pred = tmp_path / "pfm"
    pred.mkdir()
    for k, g in maps.items():
        write_pfm(pred / f"{k}.pfm", g * 0.25)  # metric up to a global scale
    res = _run_json(run_cli, pred, gt_dir, "--align", "median", "--max-depth", "4.5")
    # valid: 1e-3 < gt < 4.5; median scaling recovers gt exactly
    assert res["rows"][0]["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert res["protocol"]["valid_pixels"] == sum(int(((g > 1e-3) & (g < 4.5)).sum()) for g in maps.values())
    for r in res["per_image"]:
        assert r["pfm"]["scale"] == pytest.approx(4.0, rel=1e-6)


def test_evaluate_arrays_without_valid_pixels_is_nan_not_an_error():
    from depthcli.evaluation import evaluate_arrays

    r = evaluate_arrays(np.ones((2, 2)), np.zeros((2, 2)), align="lstsq-disparity", max_depth=10)
    assert r["valid_pixels"] == 0 and np.isnan(r["abs_rel"])
