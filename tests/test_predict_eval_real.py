"""predict on real NYU images, then eval against their ground truth (the path the README shows)."""

import json

import numpy as np
import pytest

from conftest import shared_data


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from depthcli.estimators.models import build_model, save_model

    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(build_model("tiny", input_size=56, seed=0), path)
    return path


def test_predict_nyu_then_eval_with_nyu_preset(tmp_path, tiny_model, run_cli):
    import cv2

    nyu = shared_data("depth_gt", "nyu")
    code, _, err = run_cli("convert", nyu, tmp_path / "gt", "--from", "nyu")
    assert code == 0, err
    code, _, err = run_cli("predict", tiny_model, tmp_path / "gt" / "images", tmp_path / "pred", "--threads", "1")
    assert code == 0, err
    code, out, err = run_cli("eval", tmp_path / "pred", tmp_path / "gt", "--preset", "nyu", "--align", "lstsq-disparity", "--json")
    assert code == 0, err
    res = json.loads(out)
    row = res["rows"][0]
    assert row["images"] == 3 and np.isfinite(row["metrics"]["abs_rel"])
    # The preset's pixels: GT in (1e-3, 10) m inside the Eigen crop rows 45:471, cols 41:601,
    # counted here straight from the raw PNGs.
    expected = 0
    for png in sorted((nyu / "depth").glob("*.png")):
        d = cv2.imread(str(png), cv2.IMREAD_UNCHANGED) / 1000.0
        crop = np.zeros_like(d, bool)
        crop[45:471, 41:601] = True
        expected += int(((d > 1e-3) & (d < 10) & crop).sum())
    assert row["valid_pixels"] == expected
