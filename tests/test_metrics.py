"""Metrics and alignments against hand-computed values on tiny arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from depthcli.align import align_depth, fit_alignment, fit_scale_shift
from depthcli.metrics import (
    MetricSums,
    boundary_f1,
    depth_metrics,
    disputed_pairs,
    ordinal_pair_correct,
    sample_pairs,
)

# 2x2 example; the pixel with gt = 0 is invalid (its pred 100 must not count).
PRED = np.array([[2.0, 1.0], [3.0, 100.0]])
GT = np.array([[1.0, 1.0], [4.0, 0.0]])
# Valid pixels: (pred, gt) = (2, 1), (1, 1), (3, 4).


def test_each_metric_by_hand():
    m = depth_metrics(PRED, GT)
    assert m["valid_pixels"] == 3
    # AbsRel: (|2-1|/1 + 0 + |3-4|/4) / 3 = 1.25 / 3
    assert m["abs_rel"] == pytest.approx(1.25 / 3, rel=1e-12)
    # SqRel: (1/1 + 0 + 1/4) / 3 = 1.25 / 3
    assert m["sq_rel"] == pytest.approx(1.25 / 3, rel=1e-12)
    # RMSE: sqrt((1 + 0 + 1) / 3) = 0.8164966
    assert m["rmse"] == pytest.approx(0.816496580927726, rel=1e-12)
    # e = ln(pred/gt) = ln 2, 0, ln 0.75
    e = [math.log(2.0), 0.0, math.log(0.75)]
    me, me2 = sum(e) / 3, sum(x * x for x in e) / 3
    assert m["rmse_log"] == pytest.approx(math.sqrt(me2), rel=1e-12)  # sqrt((0.480453 + 0 + 0.082761)/3) = 0.433288
    assert m["rmse_log"] == pytest.approx(0.433288, abs=1e-6)
    # log10: (0.30103 + 0 + 0.12494) / 3 = 0.14199
    assert m["log10"] == pytest.approx((math.log10(2) - math.log10(0.75)) / 3, rel=1e-12)
    # ratios max(p/g, g/p) = 2, 1, 4/3: < 1.25 -> 1 of 3; < 1.5625 -> 2; < 1.953125 -> 2
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(2 / 3)
    assert m["delta3"] == pytest.approx(2 / 3)
    # SILog (KITTI): 100 sqrt(mean e^2 - mean(e)^2); mean e = ln(1.5)/3 = 0.135155
    assert m["silog"] == pytest.approx(100 * math.sqrt(me2 - me * me), rel=1e-12)
    # = 100 sqrt(0.187738 - 0.018267) = 41.167
    assert m["silog"] == pytest.approx(41.167, abs=1e-3)
    # SILog (Depth-Anything-V2): sqrt(mean e^2 - 0.5 mean(e)^2), no x100
    assert m["silog_dav2"] == pytest.approx(math.sqrt(me2 - 0.5 * me * me), rel=1e-12)
    # = sqrt(0.187738 - 0.5 * 0.018267) = 0.422617
    assert m["silog_dav2"] == pytest.approx(0.422617, abs=1e-6)
    # iRMSE: 1/p - 1/g = -0.5, 0, 1/12 -> sqrt((0.25 + 1/144) / 3)
    assert m["irmse"] == pytest.approx(math.sqrt((0.25 + 1 / 144) / 3), rel=1e-12)


def test_explicit_mask_restricts_pixels():
    valid = np.array([[False, True], [True, False]])
    m = depth_metrics(PRED, GT, valid)
    # pixels (1, 1) and (3, 4): AbsRel = (0 + 0.25) / 2, RMSE = sqrt(1/2)
    assert m["valid_pixels"] == 2
    assert m["abs_rel"] == pytest.approx(0.125)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["delta1"] == pytest.approx(0.5)


def test_perfect_prediction_and_float32_path():
    gt = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    m = depth_metrics(gt.copy(), gt)
    assert m["abs_rel"] == 0 and m["rmse"] == 0 and m["delta1"] == 1 and m["silog"] == 0


def test_pooled_vs_image_mean():
    # image A: 1 pixel (2 vs 1): AbsRel 1; image B: 3 perfect pixels: AbsRel 0
    a = MetricSums.of(np.array([2.0]), np.array([1.0]))
    b = MetricSums.of(np.ones(3), np.ones(3))
    assert (a.metrics()["abs_rel"] + b.metrics()["abs_rel"]) / 2 == pytest.approx(0.5)  # image mean
    assert (a + b).metrics()["abs_rel"] == pytest.approx(0.25)  # pooled: 1 / 4 pixels
    assert (a + b).count == 4
    assert math.isnan(MetricSums().metrics()["abs_rel"])


def test_silog_of_an_exact_rescale_is_zero():
    # pred = 1.1 x GT exactly: e = ln 1.1 at every pixel, so its variance is 0 and
    # SILog (KITTI) = 0; SILog (DAv2) = sqrt(0 + 0.5 (ln 1.1)^2) = ln(1.1) / sqrt(2).
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 80.0, (240, 320))
    m = depth_metrics(1.1 * gt, gt)
    assert m["silog"] < 1e-6
    assert m["silog_dav2"] == pytest.approx(math.log(1.1) / math.sqrt(2), rel=1e-9)
    assert m["rmse_log"] == pytest.approx(math.log(1.1), rel=1e-9)


def test_silog_of_float32_rescale_matches_float64_reference():
    # Stored as float32, 1.1 x GT is rounded per pixel (relative error <= 2^-24), so the
    # exact SILog of these values is tiny but not 0; float32 sums used to report ~0.008.
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 10.0, (480, 640)).astype(np.float32)
    pred = (gt * np.float32(1.1)).astype(np.float32)
    e = np.log(pred.astype(np.float64)) - np.log(gt.astype(np.float64))
    ref = 100 * math.sqrt(np.mean((e - e.mean()) ** 2))  # two-pass float64 reference
    assert ref < 1e-5  # 100 x (std of float32 rounding, ~3e-8)
    m = depth_metrics(pred, gt)
    assert m["silog"] == pytest.approx(ref, abs=1e-7)
    assert m["silog_dav2"] == pytest.approx(math.sqrt(np.mean(e**2) - 0.5 * e.mean() ** 2), rel=1e-9)


def test_silog_of_exact_float32_rescale_through_eval_files(tmp_path):
    # The case end to end: GT and a prediction that is exactly 1.1 x GT, both stored as
    # float32 .npy and scored by the eval pipeline. GT = 10 k / 16 and pred = 11 k / 16 (exact in
    # float32), so pred / GT is the same double at every pixel and SILog must vanish.
    from depthcli.evaluation import EvalConfig, evaluate

    rng = np.random.default_rng(2)
    for sub in ("gt", "pred"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        k = rng.integers(1, 129, (120, 160)).astype(np.float32)
        np.save(tmp_path / "gt" / f"f{i}.npy", 10 * k / 16)  # 0.625 .. 80 m; / 16 is exact
        np.save(tmp_path / "pred" / f"f{i}.npy", 11 * k / 16)
    gt = np.load(tmp_path / "gt" / "f0.npy")
    pred = np.load(tmp_path / "pred" / "f0.npy")
    assert np.all(pred.astype(np.float64) / gt == np.float64(pred[0, 0]) / gt[0, 0])  # an exact rescale
    res = evaluate(EvalConfig(preds=[tmp_path / "pred"], gt=tmp_path / "gt", align="none", max_depth=100.0))
    (row,) = res.rows
    assert row["images"] == 3
    for metrics in (row["metrics"], row["metrics_pooled"]):
        assert 0 <= metrics["silog"] < 1e-6, metrics
        assert metrics["rmse_log"] == pytest.approx(math.log(1.1), rel=1e-6)


def test_pooled_silog_of_rescaled_images_is_stable():
    # Two images, each an exact rescale by its own factor: each SILog is 0; pooled,
    # e takes ln 1.1 on n1 pixels and ln 2 on n2, so var = p (1 - p) (ln 2 - ln 1.1)^2.
    rng = np.random.default_rng(2)
    g1, g2 = rng.uniform(1, 5, 3000), rng.uniform(1, 5, 1000)
    a, b = MetricSums.of(1.1 * g1, g1), MetricSums.of(2.0 * g2, g2)
    assert a.metrics()["silog"] < 1e-6 and b.metrics()["silog"] < 1e-6
    frac = 3000 / 4000
    var = frac * (1 - frac) * (math.log(2.0) - math.log(1.1)) ** 2
    pooled = (a + b).metrics()
    assert pooled["silog"] == pytest.approx(100 * math.sqrt(var), rel=1e-9)
    mean_e = frac * math.log(1.1) + (1 - frac) * math.log(2.0)
    assert pooled["silog_dav2"] == pytest.approx(math.sqrt(var + 0.5 * mean_e**2), rel=1e-9)
    c = MetricSums()
    c.add(a)
    c.add(b)  # in-place pooling, starting from empty sums
    assert c.metrics()["silog"] == pytest.approx(pooled["silog"], rel=1e-12)
    # Pooling 1000 identical exact-rescale images keeps SILog at 0.
    many = MetricSums()
    for _ in range(1000):
        many.add(a)
    assert many.metrics()["silog"] < 1e-6


def test_metric_rejects_nonpositive_prediction():
    with pytest.raises(ValueError):
        depth_metrics(np.array([0.0, 1.0]), np.array([1.0, 1.0]))


# --------------------------------------------------------------------------- alignment


def test_lstsq_recovers_known_scale_and_shift_exactly():
    x = np.array([1.0, 2.0, 3.0, 7.0])
    s, t = fit_scale_shift(x, 2.5 * x - 0.75)
    assert s == pytest.approx(2.5, abs=1e-12) and t == pytest.approx(-0.75, abs=1e-12)


def test_lstsq_by_hand_not_exact_fit():
    # x = 0,1,2; y = 0,0,3: mean x = 1, mean y = 1; Sxy = (-1)(-1) + 0 + (1)(2) = 3; Sxx = 2
    # s = 3/2, t = 1 - 1.5 * 1 = -0.5
    s, t = fit_scale_shift(np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.0, 3.0]))
    assert (s, t) == pytest.approx((1.5, -0.5))


def test_median_alignment_by_hand():
    pred = np.array([[1.0, 2.0, 10.0]])
    gt = np.array([[3.0, 4.0, 5.0]])
    # s = median(gt) / median(pred) = 4 / 2 = 2 -> [2, 4, 20]
    out, al = align_depth(pred, gt, np.ones_like(gt, bool), "median", max_depth=100)
    assert al.scale == pytest.approx(2.0) and al.shift == 0
    np.testing.assert_allclose(out, [[2.0, 4.0, 20.0]])


def test_lstsq_alignment_uses_only_valid_pixels_and_clips():
    pred = np.array([1.0, 2.0, 3.0, 50.0])
    gt = np.array([3.0, 5.0, 7.0, 1.0])  # last pixel is an outlier, masked out
    valid = np.array([True, True, True, False])
    out, al = align_depth(pred, gt, valid, "lstsq", min_depth=1e-3, max_depth=6.0)
    assert (al.scale, al.shift) == pytest.approx((2.0, 1.0))
    # 2x+1 = 3, 5, 7, 101; clipped to [1e-3, 6]
    np.testing.assert_allclose(out, [3.0, 5.0, 6.0, 6.0])


def test_none_alignment_clips_to_range():
    out, al = align_depth(np.array([0.0, 5.0, 20.0]), np.array([1.0, 1.0, 1.0]), np.ones(3, bool), "none", "depth", 1e-3, 10.0)
    np.testing.assert_allclose(out, [1e-3, 5.0, 10.0])


def test_lstsq_disparity_recovers_depth_and_states_clamp():
    disp = np.array([1.0, 2.0, 4.0])
    gt = 1.0 / (0.5 * disp + 0.25)  # depth 1/0.75, 1/1.25, 1/2.25
    al = fit_alignment(disp, gt, "lstsq-disparity", "disparity", 1e-3, 10.0)
    assert (al.scale, al.shift) == pytest.approx((0.5, 0.25))
    np.testing.assert_allclose(al.apply(disp), gt, rtol=1e-12)
    assert al.disparity_floor == pytest.approx(0.1)  # 1 / max_depth


def test_disparity_clamp_before_inversion():
    # fit on pixels 1, 2 only: gt disparity = d - 0.5 -> s = 1, t = -0.5
    disp = np.array([0.0, 1.0, 2.0])
    gt = np.array([1.0, 2.0, 1 / 1.5])
    out, al = align_depth(disp, gt, np.array([False, True, True]), "lstsq-disparity", "disparity", 1e-3, 10.0)
    assert (al.scale, al.shift) == pytest.approx((1.0, -0.5))
    # pixel 0: aligned disparity -0.5 -> clamped to 1/10 -> depth 10
    np.testing.assert_allclose(out, [10.0, 2.0, 1 / 1.5])
    # no cap: the floor is 1 / (largest valid GT depth) = 1/2
    al2 = fit_alignment(disp[1:], gt[1:], "lstsq-disparity", "disparity", 1e-3, None)
    assert al2.disparity_floor == pytest.approx(0.5)


def test_depth_alignment_of_disparity_prediction():
    # disparity 1/z * 3 (unknown scale): converted to depth (z/3), median scaling recovers z
    z = np.array([1.0, 2.0, 4.0])
    out, al = align_depth(3.0 / z, z, np.ones(3, bool), "median", "disparity", 1e-3, 10.0)
    np.testing.assert_allclose(out, z)


# --------------------------------------------------------------------------- edges, pairs, agreement


def _block(cols=(1, 3)):
    d = np.full((4, 4), 2.0)
    d[1:3, cols[0]:cols[1]] = 1.0
    return d


def test_boundary_f1_by_hand():
    gt = _block()  # near 2x2 block (depth 1) on far background (depth 2)
    assert boundary_f1(gt * 3.0, gt)["boundary_f1"] == pytest.approx(1.0)  # scale invariant
    assert boundary_f1(np.full((4, 4), 5.0), gt)["boundary_f1"] == 0.0  # no predicted edge
    # pred block spans cols 1..3 (touches the border): no 'left' relation, 3 top/bottom edges.
    # recall = (0/2 + 2/2 + 2/2 + 2/2)/4 = 0.75; precision = (0 + 2/3 + 2/2 + 2/3)/4 = 7/12
    # F1 = 2 * 0.75 * 7/12 / (0.75 + 7/12) = 0.65625 at every threshold (ratio 2 > 1.25)
    r = boundary_f1(_block((1, 4)), gt)
    assert r["boundary_recall"] == pytest.approx(0.75)
    assert r["boundary_precision"] == pytest.approx(7 / 12)
    assert r["boundary_f1"] == pytest.approx(0.65625)


def test_boundary_f1_threshold_weights():
    # depth ratio 1.1: an edge for t = 1.05 only (thresholds 1.05, 1.0722, ..., 1.25 -> 1.05, 1.0722, 1.0944 < 1.1)
    gt = np.full((4, 4), 1.1)
    gt[1:3, 1:3] = 1.0
    t = np.linspace(1.05, 1.25, 10)
    w = t / t.sum()
    # pred constant: F1 = 0 everywhere; pred = gt: F1 = 1 where t < 1.1, and 0 (no edges at all) elsewhere
    assert boundary_f1(gt, gt)["boundary_f1"] == pytest.approx(w[t < 1.1].sum())


def test_ordinal_pairs_and_da2k_layout(tmp_path):
    from depthcli.evaluation import load_pairs

    depth = np.array([[1.0, 2.0], [3.0, 3.0]])
    f = tmp_path / "annotations.json"
    f.write_text(json.dumps({"indoor/img.jpg": [
        {"point1": [0, 0], "point2": [1, 1], "closer_point": "point1"},  # 1 < 3: right
        {"point1": [0, 0], "point2": [0, 1], "closer_point": "point2"},  # says (0,1) closer: 2 > 1 wrong
        {"point1": [1, 0], "point2": [1, 1], "closer_point": "point1"},  # tie: wrong
    ]}))
    pairs = load_pairs(f)
    assert list(pairs) == ["indoor/img"]
    assert ordinal_pair_correct(depth, pairs["indoor/img"]) == (1, 3)


def test_disputed_pairs():
    a_model = np.array([1.0, 2.0, 3.0, 4.0])
    b_model = np.array([2.0, 4.0, 6.0, 1.0])  # same order except the last point
    a, b = np.array([0, 0, 1, 3]), np.array([1, 2, 2, 0])
    # pairs (0,1), (0,2), (1,2) agree; (3,0): model A says farther, B says nearer
    np.testing.assert_array_equal(disputed_pairs([a_model, b_model], a, b), [False, False, False, True])


def test_sample_pairs_seeded_and_valid_only():
    valid = np.zeros((5, 5), bool)
    valid[1:3, 1:3] = True
    a1, b1 = sample_pairs(valid, 100, np.random.default_rng(3))
    a2, b2 = sample_pairs(valid, 100, np.random.default_rng(3))
    np.testing.assert_array_equal(a1, a2)
    assert valid.ravel()[a1].all() and valid.ravel()[b1].all() and (a1 != b1).all()
