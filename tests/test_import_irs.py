"""IRS import on a fixture laid out as IRS ships it (l_N.png + d_N.exr disparity, 960x540,
focal 480 px, baseline 0.1 m: depth = 48 / disparity)."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
OpenEXR = pytest.importorskip("OpenEXR")

from hostile import assert_refused  # noqa: E402


def write_exr(path, array, channel="Y"):
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {channel: np.asarray(array, np.float32)}) as fh:
        fh.write(str(path))


def make_seq(root, disp=None, size=(960, 540)):
    root.mkdir(parents=True)
    w, h = size
    d = np.full((h, w), 24.0, np.float32) if disp is None else disp
    write_exr(root / "d_1.exr", d)
    assert cv2.imwrite(str(root / "l_1.png"), np.full((h, w, 3), 60, np.uint8))
    return root


def test_disparity_becomes_depth(tmp_path, run_cli):
    d = np.full((540, 960), 24.0, np.float32)
    d[0, 0] = 0.0  # no disparity: invalid
    d[0, 1] = 48.0
    src = make_seq(tmp_path / "Home", disp=d)
    out = tmp_path / "out"
    code, stdout, err = run_cli("convert", src, out, "--json", "--downscale", "4")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["detected"] == "irs" and "disparity" in summary["depth_conversion"]
    (fr,) = json.loads((out / "dataset.json").read_text())["frames"]
    # full size: 0.1 * 480 / 24 = 2 m; 48 px -> 1 m; 0 -> invalid. downscale 4: K / 4
    np.testing.assert_allclose(fr["K"], [[120, 0, 120], [0, 120, 67.5], [0, 0, 1]])
    z = np.load(out / fr["depth"])
    assert z.shape == (135, 240)
    assert np.isin(z[0, 0], [0.0, 1.0, 2.0]) and np.allclose(z[1:], 2.0)


def test_wrong_size_and_missing_disparity_refused(tmp_path, run_cli):
    src = make_seq(tmp_path / "a", size=(64, 48))
    line = assert_refused(run_cli, ["convert", src, tmp_path / "out", "--from", "irs"], inputs=[src], absent=[tmp_path / "out"])
    assert "960x540" in line
    empty = tmp_path / "b"
    empty.mkdir()
    (empty / "l_1.png").write_bytes(b"")
    line = assert_refused(run_cli, ["convert", empty, tmp_path / "out", "--from", "irs"], inputs=[empty], absent=[tmp_path / "out"])
    assert "d_N.exr" in line


def test_corrupt_exr_refused(tmp_path, run_cli):
    src = make_seq(tmp_path / "a")
    (src / "d_1.exr").write_bytes(b"not an exr")
    line = assert_refused(run_cli, ["convert", src, tmp_path / "out", "--from", "irs"], inputs=[src], absent=[tmp_path / "out"])
    assert "EXR" in line
