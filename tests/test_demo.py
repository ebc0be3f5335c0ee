"""The demo runs every stage end to end (small sizes) and refuses to clobber output."""

import json

import pytest

from depthcli.demo import DemoConfig, run_demo
from depthcli.io.dataset import load_dataset


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(DemoConfig(out=out, width=64, height=48, frames=8, splat_steps=40, scenes=2, estimator_steps=6))
    # Every stage left a complete dataset behind.
    for name in ("scene", "from_colmap", "from_rgbd", "renders", "estimators/pred_teacher", "estimators/pred_student", "estimators/pred_ramp"):
        assert (out / name / "dataset.json").is_file(), name
    assert load_dataset(out / "from_colmap").depth_units == "sfm"
    assert load_dataset(out / "from_rgbd").depth_units == "m"
    pred = load_dataset(out / "estimators" / "pred_student")
    assert pred.depth_kind == "disparity" and pred.depth_units == "affine"
    assert (out / "splats" / "splats.ply").is_file() and (out / "overview.png").is_file()
    assert 0 <= summary["splat_heldout"]["abs_rel"] < 1
    printed = capsys.readouterr().out
    assert "splat renders vs exact depth" in printed and "pred_teacher" in printed and "pred_student" in printed


def test_demo_refuses_existing_output(tmp_path, run_cli):
    (tmp_path / "d").mkdir()
    code, _, err = run_cli("demo", tmp_path / "d")
    assert code == 1 and "already exists" in err
    assert list((tmp_path / "d").iterdir()) == []
