"""Named depth losses: hand-computed values, invariances, the spec parser."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")


def _maps():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    tgt = torch.tensor([[2.0, 2.0], [0.0, 2.0]])  # one invalid pixel (0)
    return pred, tgt, tgt > 0


def test_l1_and_disparity_l1_hand_values():
    from depthcli.splat.losses import named_depth_loss

    pred, tgt, mask = _maps()
    assert named_depth_loss("l1", pred, tgt, mask).item() == pytest.approx((1 + 0 + 2) / 3)
    # |1/1 - 1/2| = 0.5, |1/2 - 1/2| = 0, |1/4 - 1/2| = 0.25
    assert named_depth_loss("disparity-l1", pred, tgt, mask).item() == pytest.approx(0.75 / 3)


def test_log_l1_hand_value():
    from depthcli.splat.losses import named_depth_loss

    pred, tgt, mask = _maps()
    want = (math.log(2) + math.log(1) + math.log(3)) / 3
    assert named_depth_loss("log-l1", pred, tgt, mask).item() == pytest.approx(want)


def test_edge_aware_log_l1_hand_value():
    from depthcli.splat.losses import edge_aware_log_l1, image_edge_weights

    pred, tgt, mask = _maps()
    # grey image: column 1 is brighter by 0.3 in every channel; rows equal
    img = torch.tensor([[[0.1] * 3, [0.4] * 3], [[0.1] * 3, [0.4] * 3]])
    w = image_edge_weights(img)
    # pixel (r, 0): forward x-difference 0.3, y-difference 0 (row 0) or none (row 1); column 1: no x neighbour
    want_w = torch.tensor([[math.exp(-0.3), 1.0], [math.exp(-0.3), 1.0]])
    assert torch.allclose(w, want_w, atol=1e-6)
    want = (math.exp(-0.3) * math.log(2) + 1.0 * math.log(1) + 1.0 * math.log(3)) / 3
    assert edge_aware_log_l1(pred, tgt, mask, img).item() == pytest.approx(want, rel=1e-6)
    # no image: plain log-L1
    assert edge_aware_log_l1(pred, tgt, mask).item() == pytest.approx((math.log(2) + math.log(3)) / 3)


def test_pearson_hand_value_and_invariance():
    from depthcli.splat.losses import pearson_loss

    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 3.0, 2.0, 4.0])
    m = torch.ones(4, dtype=torch.bool)
    # centred: x' = (-1.5, -.5, .5, 1.5), y' = (-1.5, .5, -.5, 1.5); cov = 2.25 - .25 - .25 + 2.25 = 4; var = 5 each
    assert pearson_loss(x, y, m).item() == pytest.approx(1 - 4 / 5, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(12, 16, generator=g) + 0.5
    prior = torch.rand(12, 16, generator=g) + 0.5
    mask = torch.rand(12, 16, generator=g) > 0.3
    base = pearson_loss(pred, prior, mask).item()
    for s, t in ((3.0, 0.0), (0.01, 5.0), (250.0, -40.0)):
        assert pearson_loss(pred, s * prior + t, mask).item() == pytest.approx(base, abs=1e-5)
    # the masked-out pixels do not count
    wild = torch.where(mask, prior, torch.full_like(prior, 1e6))
    assert pearson_loss(pred, wild, mask).item() == pytest.approx(base, abs=1e-5)
    assert pearson_loss(prior, prior, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert pearson_loss(prior, -prior, mask).item() == pytest.approx(2.0, abs=1e-6)


def test_pearson_has_gradient_and_degenerate_cases():
    from depthcli.splat.losses import pearson_loss

    p = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = pearson_loss(p, torch.tensor([3.0, 1.0, 2.0]), torch.ones(3, dtype=torch.bool))
    loss.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    one = torch.tensor([True, False, False])
    assert pearson_loss(p, torch.tensor([3.0, 1.0, 2.0]), one).item() == 0.0


def test_spec_parser():
    from depthcli.splat.losses import parse_depth_loss_spec

    assert parse_depth_loss_spec("l1") == [("l1", 1.0)]
    assert parse_depth_loss_spec(["l1", "pearson:0.1"]) == [("l1", 1.0), ("pearson", 0.1)]
    assert parse_depth_loss_spec("depth") == [("l1", 1.0)]
    assert parse_depth_loss_spec("disparity") == [("disparity-l1", 1.0)]
    assert parse_depth_loss_spec("log-l1:0.5, grad:0") == [("log-l1", 0.5), ("grad", 0.0)]
    for bad in ("l2", "l1:x", "l1:-1", "l1,l1", "", "pearson:inf"):
        with pytest.raises(ValueError):
            parse_depth_loss_spec(bad)


def test_depth_supervision_combines_named_terms():
    from depthcli.splat.losses import DepthSupervision

    pred, tgt, mask = _maps()
    sup = DepthSupervision("l1,log-l1:0.5", grad_weight=0.0, multiscale_weight=0.0)
    total, parts = sup(pred, tgt, mask)
    want = 1.0 + 0.5 * (math.log(2) + math.log(3)) / 3
    assert total.item() == pytest.approx(want, rel=1e-6)
    assert set(parts) == {"depth_l1", "log-l1"}
    # the spec's grad weight overrides grad_weight; the default multiscale weight stays
    sup = DepthSupervision("l1,grad:0", grad_weight=0.5, multiscale_weight=0.5)
    assert [n for n, _ in sup.terms] == ["l1", "grad", "multiscale"] and dict(sup.terms)["grad"] == 0.0
    # the historical "disparity" space is disparity L1
    total, parts = DepthSupervision("disparity", 0.0, 0.0)(pred, tgt, mask)
    assert total.item() == pytest.approx(0.25) and list(parts) == ["disparity-l1"]
