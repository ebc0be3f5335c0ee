"""The demo runs every stage end to end, its estimators learn, and it never leaves a half-made folder."""

import pytest

from depthcli.demo import DemoConfig, run_demo
from depthcli.io.dataset import load_dataset


@pytest.mark.slow
def test_demo_end_to_end_estimators_learn(tmp_path, capsys):
    """The demo's estimator settings, a small splat scene: the quality bars of the demo hold."""
    import cv2

    out = tmp_path / "demo"
    summary = run_demo(DemoConfig(out=out, width=64, height=48, frames=8, splat_steps=60))
    # Every stage left a complete dataset behind.
    for name in ("scene", "from_colmap", "from_rgbd", "renders", "estimators/pred_teacher", "estimators/pred_student",
                 "estimators/pred_ramp"):
        assert (out / name / "dataset.json").is_file(), name
    assert load_dataset(out / "from_colmap").depth_units == "sfm"
    assert load_dataset(out / "from_rgbd").depth_units == "m"
    pred = load_dataset(out / "estimators" / "pred_student")
    assert pred.depth_kind == "disparity" and pred.depth_units == "affine"
    assert (out / "splats" / "splats.ply").is_file()
    assert 0 <= summary["splat_heldout"]["abs_rel"] < 1
    # The quality bars: the teacher (fine-tuned from the shipped tiny-synth) is at most 0.7 x a vertical
    # ramp on rooms it never saw (measured 0.63 x with these settings), fine-tuning does not undo the
    # checkpoint it started from (measured 0.996 x the checkpoint at lr 5e-5; 1.020 x at lr 3e-4, which
    # this bound refuses), and the student, trained on pseudo-labels only, stays within 15 % of its
    # teacher (measured 1.05 x).
    ramp, teacher, student = summary["ramp_abs_rel"], summary["teacher_abs_rel"], summary["student_abs_rel"]
    assert summary["estimator_init"] == "tiny-synth"
    assert teacher <= 0.7 * ramp, (teacher, ramp)
    assert teacher <= 1.01 * summary["pretrained_abs_rel"] and summary["pretrained_abs_rel"] < ramp, summary
    assert student <= 1.15 * teacher, (student, teacher)
    # Readable pictures.
    for name in ("overview.png", "errors.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[1] >= 1280, name
    out_text, err_text = capsys.readouterr()
    printed = out_text + err_text  # tables on stdout, messages on stderr
    assert "splat renders vs exact depth" in printed and "pred_teacher" in printed and "pred_student" in printed
    assert "x the vertical-ramp baseline" in printed and "s wall" in printed
    # Nothing was left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_demo_refuses_existing_output(tmp_path, run_cli):
    (tmp_path / "d").mkdir()
    code, _, err = run_cli("demo", tmp_path / "d")
    assert code == 1 and "already exists" in err
    assert list((tmp_path / "d").iterdir()) == []


@pytest.mark.parametrize("args", [
    ["--estimator-steps", "0"], ["--estimator-steps", "-3"], ["--splat-steps", "0"], ["--scenes", "0"],
    ["--seed", "-1"], ["--estimator-steps", "99999999999999"],
])
def test_demo_refuses_nonsense_numbers_before_running(tmp_path, run_cli, args):
    code, out, err = run_cli("demo", tmp_path / "d", *args)
    assert code == 1
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:") and args[0] in lines[0], err
    assert "Traceback" not in err and "synth" not in out
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_teacher_that_is_not_a_model(tmp_path, run_cli):
    (tmp_path / "notamodel").mkdir()
    code, _, err = run_cli("demo", tmp_path / "d", "--teacher", tmp_path / "notamodel")
    assert code == 1 and "--teacher" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_demo_refuses_an_init_that_is_not_a_model(tmp_path, run_cli):
    code, _, err = run_cli("demo", tmp_path / "d", "--init", tmp_path / "nope")
    assert code == 1 and "--init" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_interrupted_demo_leaves_no_output(tmp_path, monkeypatch):
    """A demo stopped mid-way (Ctrl-C during splat training) leaves neither OUT nor a partial folder."""
    import depthcli.splat.trainer as trainer

    def interrupted(_cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_splats", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoConfig(out=tmp_path / "d", width=48, height=36, frames=4, estimators=False))
    assert list(tmp_path.iterdir()) == []
