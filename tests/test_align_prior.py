"""depthcli align: robust per-image scale/shift of predictions to sparse SfM depth.

The scene is ``depthcli synth`` exported as a COLMAP model (exact poses, so SfM
units are metres) and converted back to a sparse-depth dataset; the "monocular
prediction" is the exact disparity under a random affine map per image plus
smooth noise, so the true scale and shift of each image are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def smooth_field(rng, h, w, cells=(3, 4)):
    """A smooth random field in [-1, 1] (bicubic upsampling of a coarse grid)."""
    import cv2

    coarse = rng.uniform(-1, 1, cells).astype(np.float32)
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)


def make_synth_colmap(tmp: Path, frames=12, width=96, height=72, points=3000, seed=0):
    """synth -> COLMAP text model (PINHOLE) -> convert: (exact dataset, sparse dataset)."""
    from depthcli.cli import main

    assert main(["synth", str(tmp / "s"), "--frames", str(frames), "--width", str(width), "--height", str(height),
                 "--colmap", "--colmap-camera", "PINHOLE", "--colmap-points", str(points), "--seed", str(seed)]) == 0
    assert main(["convert", str(tmp / "s" / "colmap"), str(tmp / "sparse")]) == 0
    return tmp / "s", tmp / "sparse"


def make_affine_prior(exact: Path, out: Path, noise=0.01, seed=1):
    """Disparity prediction ``a * (1/z) + b + noise`` per frame; returns {name: (true scale, true shift)}.

    The alignment maps the prediction back to disparity: ``1/z = s * pred + t`` with
    ``s = 1/a`` and ``t = -b/a``. The noise is smooth, of amplitude ``noise`` times the
    frame's mean prediction.
    """
    from depthcli.io.dataset import DatasetWriter, load_dataset

    ds = load_dataset(exact)
    rng = np.random.default_rng(seed)
    w = DatasetWriter(out, depth_units="affine", depth_kind="disparity", source={"kind": "test-prior"})
    truth = {}
    for f in ds.frames:
        z = ds.read_depth(f)
        disp = np.where(z > 0, 1.0 / np.maximum(z, 1e-9), 0.0)
        a = float(rng.uniform(0.3, 3.0))
        b = float(rng.uniform(0.0, 0.5))
        signal = a * disp
        pred = signal + b + noise * float(signal[z > 0].mean()) * smooth_field(rng, *z.shape)
        pred[z <= 0] = 0
        w.add_frame(f.name, pred.astype(np.float32), f.K, f.cam_from_world)  # names without ".png"
        truth[f.name] = (1.0 / a, -b / a, float(disp[z > 0].mean()))
    w.close()
    return truth


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    exact, sparse = make_synth_colmap(tmp)
    truth = make_affine_prior(exact, tmp / "pred")
    return tmp, exact, sparse, truth


def test_align_recovers_scale_and_shift(scene, run_cli):
    tmp, exact, sparse, truth = scene
    code, out, err = run_cli("align", tmp / "pred", sparse, tmp / "aligned", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["aligned"] == len(truth) and summary["space"] == "disparity"
    from depthcli.io.dataset import load_dataset

    al = load_dataset(tmp / "aligned")
    assert al.depth_units == "sfm" and al.depth_kind == "z" and len(al.frames) == len(truth)
    ex = load_dataset(exact)
    worst_s = worst_t = worst_rel = 0.0
    for f in al.frames:
        fit = f.extra["alignment"]
        s_true, t_true, mean_disp = truth[Path(f.name).stem]
        worst_s = max(worst_s, abs(fit["scale"] / s_true - 1))
        worst_t = max(worst_t, abs(fit["shift"] - t_true) / mean_disp)  # shift error relative to the disparity level
        assert fit["points"] >= 20 and fit["inliers"] > 0.8 * fit["points"]
        d = al.read_depth(f)
        z = ex.read_depth(ex.frame(Path(f.name).stem))
        m = (d > 0) & (z > 0)
        assert m.mean() > 0.9
        worst_rel = max(worst_rel, float(np.median(np.abs(d[m] - z[m]) / z[m])))
    print(f"worst scale error {worst_s:.4%}, worst shift error {worst_t:.4%}, worst median dense AbsRel {worst_rel:.4%}")
    assert worst_s < 0.02 and worst_t < 0.02
    assert worst_rel < 0.03
    assert (tmp / "aligned" / "align_previews").is_dir() and len(list((tmp / "aligned" / "align_previews").iterdir())) == len(truth)
    assert (tmp / "aligned" / "images").is_dir()  # the target's images travel with the prior


def test_robust_fit_resists_outliers():
    from depthcli.prior import fit_scale_shift_robust

    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 2.0, 400)
    y = 0.7 * x + 0.05
    bad = rng.random(400) < 0.3  # 30 % gross outliers
    y_obs = y.copy()
    y_obs[bad] *= rng.uniform(1.5, 4.0, bad.sum())
    fit = fit_scale_shift_robust(x, y_obs)
    assert fit.scale == pytest.approx(0.7, rel=1e-6) and fit.shift == pytest.approx(0.05, abs=1e-6)
    assert fit.inliers == int((~bad).sum())
    ls = fit_scale_shift_robust(x, y_obs, fit="lstsq")
    assert abs(ls.scale / 0.7 - 1) > 0.05  # plain least squares is pulled away
    # exact data: both fits exact
    assert fit_scale_shift_robust(x, y, fit="lstsq").scale == pytest.approx(0.7, rel=1e-9)


def test_depth_space_fit_and_apply():
    from depthcli.prior import apply_fit, fit_scale_shift_robust

    z = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = (z - 0.5) / 2.0  # depth prediction: z = 2 * pred + 0.5
    fit = fit_scale_shift_robust(pred.ravel(), z.ravel(), fit="lstsq")
    assert fit.scale == pytest.approx(2.0) and fit.shift == pytest.approx(0.5)
    out = apply_fit(pred, 2.0, 0.5, "depth", "depth", max_depth=5.0)
    assert out.tolist() == [[1.0, 2.0], [4.0, 0.0]]  # beyond max_depth -> invalid
    # disparity space: aligned disparity <= 0 or beyond the cap -> invalid; prediction 0 -> invalid
    disp = np.array([[1.0, 0.5], [0.1, 0.0]])
    out = apply_fit(disp, 1.0, -0.05, "disparity", "disparity", max_depth=10.0)
    assert out[0, 0] == pytest.approx(1 / 0.95) and out[0, 1] == pytest.approx(1 / 0.45)
    assert out[1, 0] == 0 and out[1, 1] == 0  # 0.05 < 1/10; invalid prediction


def test_too_few_points_skips_frames_and_refuses_when_none(scene, run_cli):
    tmp, exact, sparse, truth = scene
    code, out, err = run_cli("align", tmp / "pred", sparse, tmp / "none", "--min-points", "100000")
    assert code == 1 and "no frame could be aligned" in out + err and "min-points" in out + err
    assert not (tmp / "none").exists()
    # no matching names at all
    code, out, err = run_cli("align", exact, sparse, tmp / "x")  # exact is z-depth metres: fine kind, names match
    assert code == 0
    code, out, err = run_cli("align", tmp / "pred", tmp / "pred", tmp / "y")
    assert code == 1 and "align needs z-depth" in out + err
    code, out, err = run_cli("align", tmp / "pred", sparse, tmp / "aligned")
    assert code == 1 and "already exists" in out + err
