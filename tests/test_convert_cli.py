"""``depthcli convert`` through the CLI: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from depthcli.cli import main

cv2 = pytest.importorskip("cv2")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_capture(root: Path, depth_hw=(6, 8), color_hw=(6, 8)) -> Path:
    (root / "color").mkdir(parents=True)
    (root / "depth").mkdir()
    assert cv2.imwrite(str(root / "color" / "0001.png"), np.full((*color_hw, 3), 80, np.uint8))
    assert cv2.imwrite(str(root / "depth" / "0001.png"), np.full(depth_hw, 1500, np.uint16))
    return root


FOLDER_ARGS = ["--input-depth-scale", "1000", "--intrinsics", "10", "10", "4", "3"]


def expect_one_line_error(capsys, code: int, *words: str, after_detection: bool = False) -> str:
    captured = capsys.readouterr()
    assert code == 1
    lines = [ln for ln in captured.err.strip().splitlines() if ln.strip()]
    # inputs are checked before any progress bar or warning: the error is the only line
    # (an auto-detected source is named in the summary of a successful run, not before)
    assert len(lines) == 1, captured.err
    err = lines[-1]
    assert err.startswith("error:"), captured.err
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    for w in words:
        assert w in captured.err, captured.err
    return err


def no_output_left(parent: Path, name: str = "out") -> None:
    left = [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]
    assert left == [], left


def test_missing_source(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "nope"), str(tmp_path / "out")])
    expect_one_line_error(capsys, code, "does not exist")
    no_output_left(tmp_path)


def test_missing_source_explicit_kind(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "nope"), str(tmp_path / "out"), "--from", "tum"])
    expect_one_line_error(capsys, code, "does not exist")
    no_output_left(tmp_path)


def test_empty_source(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["convert", str(tmp_path / "empty"), str(tmp_path / "out")])
    expect_one_line_error(capsys, code, "empty")
    no_output_left(tmp_path)


def test_empty_source_explicit_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["convert", str(tmp_path / "empty"), str(tmp_path / "out"), "--from", "folder", *FOLDER_ARGS])
    expect_one_line_error(capsys, code, "depth/")
    no_output_left(tmp_path)


def test_unknown_layout(tmp_path, capsys):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "notes.txt").write_text("hello")
    code = main(["convert", str(src), str(tmp_path / "out")])
    expect_one_line_error(capsys, code, "cannot tell", "--from")
    no_output_left(tmp_path)


def test_wrong_depth_size(tmp_path, capsys):
    src = make_capture(tmp_path / "cap", depth_hw=(3, 4))
    code = main(["convert", str(src), str(tmp_path / "out"), "--from", "folder", *FOLDER_ARGS])
    expect_one_line_error(capsys, code, "4x3", "8x6", "--resize-depth")
    no_output_left(tmp_path)


def test_tum_list_names_a_missing_file(tmp_path, capsys):
    src = tmp_path / "tum"
    src.mkdir()
    assert cv2.imwrite(str(src / "c.png"), np.zeros((4, 4, 3), np.uint8))
    (src / "rgb.txt").write_text("1.000 c.png\n")
    (src / "depth.txt").write_text("1.001 missing.png\n")
    code = main(["convert", str(src), str(tmp_path / "out"), "--from", "tum"])
    expect_one_line_error(capsys, code, "missing.png", "does not exist")
    no_output_left(tmp_path)


def test_success_json_then_exists_then_overwrite(tmp_path, capsys):
    src = make_capture(tmp_path / "cap")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    code = main(["convert", str(src), str(out), *FOLDER_ARGS, "--json"])  # auto-detects color/ + depth/
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["detected"] == "folder" and summary["frames"] == 1
    assert "color/ + depth/" in summary["detected_by"]  # how it was recognised, in the summary
    assert np.allclose(np.load(out / "depth" / "0001.npy"), 1.5)
    marker = out / "dataset.json"
    first = marker.read_text()

    code = main(["convert", str(src), str(out), *FOLDER_ARGS])
    expect_one_line_error(capsys, code, "already exists", "--overwrite")
    assert marker.read_text() == first

    code = main(["convert", str(src), str(out), *FOLDER_ARGS, "--overwrite", "--depth-format", "png16", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "depth" / "0001.png").is_file() and not (out / "depth" / "0001.npy").exists()
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # inputs untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_unwritable_output(tmp_path, capsys):
    src = make_capture(tmp_path / "cap")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        code = main(["convert", str(src), str(parent / "out"), *FOLDER_ARGS])
        expect_one_line_error(capsys, code, "write")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_output_under_a_file(tmp_path, capsys):
    src = make_capture(tmp_path / "cap")
    (tmp_path / "afile").write_text("x")
    code = main(["convert", str(src), str(tmp_path / "afile" / "out"), *FOLDER_ARGS])
    expect_one_line_error(capsys, code, "cannot")
    assert (tmp_path / "afile").read_text() == "x"


def test_bad_option_is_usage_error(tmp_path, capsys):
    src = make_capture(tmp_path / "cap")
    assert main(["convert", str(src), str(tmp_path / "out"), "--no-such-flag"]) == 2
    assert main(["convert", str(src), str(tmp_path / "out"), "--downscale", "two"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    no_output_left(tmp_path)


def test_bad_values_are_user_errors(tmp_path, capsys):
    src = make_capture(tmp_path / "cap")
    out = str(tmp_path / "out")
    expect_one_line_error(capsys, main(["convert", str(src), out, *FOLDER_ARGS, "--from", "bogus"]), "unknown source kind")
    expect_one_line_error(capsys, main(["convert", str(src), out, *FOLDER_ARGS, "--depth-encoding", "zz"]), "depth encoding")
    expect_one_line_error(capsys, main(["convert", str(src), out, *FOLDER_ARGS, "--depth-format", "exr"]), "depth format")
    expect_one_line_error(capsys, main(["convert", str(src), out, "--intrinsics", "10", "10", "4", "3"]), "--input-depth-scale", after_detection=True)
    expect_one_line_error(capsys, main(["convert", str(src), out, *FOLDER_ARGS, "--input-depth-scale", "-1"]), "positive")
    expect_one_line_error(capsys, main(["convert", str(src), out, *FOLDER_ARGS, "--downscale", "0"]), "downscale")
    no_output_left(tmp_path)


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from depthcli.cli import main; main(['--help']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch','cv2','pycolmap','transformers','gsplat'}))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert "convert" in res.stdout


def test_convert_help_lists_flags():
    res = subprocess.run(
        [sys.executable, "-c", "from depthcli.cli import main; main(['convert', '--help'])"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )
    for flag in ("--from", "--input-depth-scale", "--depth-encoding", "--intrinsics", "--resize-depth", "--json"):
        assert flag in res.stdout, flag


def test_7scenes_cli_png16_previews(tmp_path, capsys):
    src = DATA / "rgbd" / "7scenes_redkitchen"
    if not src.exists():
        pytest.skip("../shared/data absent")
    out = tmp_path / "out"
    code = main(["convert", str(src), str(out), "--max-frames", "3", "--downscale", "2", "--depth-format", "png16", "--previews", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = json.loads((out / "dataset.json").read_text())
    assert len(meta["frames"]) == 3 and meta["depth_units"] == "m"
    f = meta["frames"][0]
    assert (f["width"], f["height"]) == (320, 240) and f["depth_scale"] == 1000.0
    assert np.allclose(f["K"], [[292.5, 0, 160.25], [0, 292.5, 120.25], [0, 0, 1]])  # (320 + 0.5) / 2
    raw = cv2.imread(str(src / "frame-000000.depth.png"), cv2.IMREAD_UNCHANGED)
    stored = cv2.imread(str(out / f["depth"]), cv2.IMREAD_UNCHANGED)
    # every stored value is one of the 4 raw millimetre values of its 2x2 block (no averaging)
    blocks = raw.reshape(240, 2, 320, 2).transpose(0, 2, 1, 3).reshape(240, 320, 4)
    blocks = np.where(blocks == 65535, 0, blocks)
    assert ((blocks == stored[..., None]).any(axis=2)).all()
    assert (out / "previews").is_dir()
