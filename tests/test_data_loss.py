"""No user data is ever lost or overwritten, whatever the flags and however runs overlap.

* ``--overwrite`` / ``--resume`` act only on folders holding depthcli's marker
  (a ``dataset.json`` or ``job.json`` proves nothing);
* inputs and outputs never contain each other;
* one run per output at a time (a lock the kernel drops when a run dies);
* a refused or failed run leaves nothing behind, and a killed run's hidden
  work folders are removed by the next run.

Each refusal is checked with :func:`hostile.assert_refused`: non-zero exit,
one line, no output left, inputs byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hostile import assert_refused, file_hashes, leftovers, tiny_dataset

REPO = Path(__file__).resolve().parents[1]
FOLDER_ARGS = ["--input-depth-scale", "1000", "--intrinsics", "10", "10", "4", "3"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small valid inputs of every command: dataset, PLY, model, images, RGB-D capture."""
    import cv2

    from depthcli.estimators.models import build_model, save_model
    from depthcli.io.images import write_image_rgb
    from depthcli.io.ply import SplatArrays, write_splats_ply

    base = tmp_path_factory.mktemp("inputs")
    ds = tiny_dataset(base / "ds")
    n = 10
    write_splats_ply(base / "s.ply", SplatArrays(
        means=np.tile(np.float32([0, 0, 2.5]), (n, 1)), log_scales=np.full((n, 3), -2.0, np.float32),
        quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)), opacity_logits=np.full(n, 2.0, np.float32),
        f_dc=np.zeros((n, 3), np.float32), has_colors=False))
    save_model(build_model("tiny", input_size=14, seed=0), base / "model")
    (base / "imgs").mkdir()
    for i in range(3):
        write_image_rgb(base / "imgs" / f"{i}.png", np.full((14, 18, 3), 50 * i, np.uint8))
    cap = base / "cap"
    (cap / "color").mkdir(parents=True)
    (cap / "depth").mkdir()
    cv2.imwrite(str(cap / "color" / "0001.png"), np.full((6, 8, 3), 80, np.uint8))
    cv2.imwrite(str(cap / "depth" / "0001.png"), np.full((6, 8), 1500, np.uint16))
    return {"ds": ds, "ply": base / "s.ply", "model": base / "model", "imgs": base / "imgs", "cap": cap}


def _commands(i, out):
    """Each command writing ``out`` (small, valid otherwise)."""
    return {
        "synth": ["synth", out, "--frames", "2", "--width", "16", "--height", "12"],
        "convert": ["convert", i["cap"], out, "--from", "folder", *FOLDER_ARGS],
        "render": ["render", i["ply"], i["ds"], out],
        "predict": ["predict", i["model"], i["imgs"], out, "--threads", "1", "--device", "cpu"],
        "train": ["train", i["ds"], out, "--max-steps", "1", "--size", "14", "--batch-size", "2", "--threads", "1",
                  "--device", "cpu"],
        "splat-train": ["splat-train", i["ds"], out, "--steps", "2", "--max-init-points", "100", "--eval-every", "0"],
        "distill": ["distill", out, "--teacher", i["model"], "--images", i["imgs"], "--stage", "label",
                    "--threads", "1", "--device", "cpu"],
        "eval": ["eval", i["ds"], i["ds"], "--report", out],
    }


def _user_folder(path: Path) -> Path:
    """A user's folder that merely looks like a depthcli output (no marker)."""
    (path / "model").mkdir(parents=True)
    (path / "checkpoints").mkdir()
    (path / "student").mkdir()
    for name in ("dataset.json", "job.json", "history.json", "train_config.json", "notes.txt"):
        (path / name).write_text('{"mine": true}')
    (path / "model" / "weights.bin").write_bytes(b"precious")
    (path / "student" / "thesis.tex").write_text("precious")
    return path


# ----------------------------------------------------------------------------- marker-only trust


@pytest.mark.parametrize("cmd", ["synth", "convert", "render", "predict", "train", "splat-train", "distill", "eval"])
def test_overwrite_never_replaces_a_folder_depthcli_did_not_create(inputs, tmp_path, run_cli, cmd):
    user = _user_folder(tmp_path / "user")
    args = _commands(inputs, user)[cmd] + ["--overwrite"]
    assert_refused(run_cli, args, inputs=inputs.values(), unchanged=[user], match="not a folder depthcli created")
    assert not leftovers(user)


@pytest.mark.parametrize("cmd", ["train", "splat-train", "distill"])
def test_resume_never_writes_into_a_folder_depthcli_did_not_create(inputs, tmp_path, run_cli, cmd):
    user = _user_folder(tmp_path / "user")
    args = _commands(inputs, user)[cmd] + ["--resume"]
    assert_refused(run_cli, args, inputs=inputs.values(), unchanged=[user], match="not a folder depthcli created")


@pytest.mark.parametrize("cmd", ["synth", "convert", "render", "predict", "train", "splat-train", "distill", "eval"])
def test_existing_folder_without_a_flag_is_left_alone(inputs, tmp_path, run_cli, cmd):
    user = _user_folder(tmp_path / "user")
    assert_refused(run_cli, _commands(inputs, user)[cmd], inputs=inputs.values(), unchanged=[user],
                   match="already exists")


def test_resume_into_a_folder_with_nothing_to_resume_is_refused(inputs, tmp_path, run_cli):
    from depthcli.io.atomic import mark_output

    for cmd, what in (("train", "train"), ("splat-train", "splat-train")):
        out = tmp_path / cmd
        out.mkdir()
        mark_output(out, what)
        (out / "model").mkdir()
        (out / "model" / "config.json").write_text("{}")
        assert_refused(run_cli, _commands(inputs, out)[cmd] + ["--resume"], inputs=inputs.values(), unchanged=[out],
                       match="nothing to resume|no checkpoint")
    # the marker of another command is not enough either
    out = tmp_path / "other"
    out.mkdir()
    mark_output(out, "synth")
    assert_refused(run_cli, _commands(inputs, out)["train"] + ["--resume"], inputs=inputs.values(),
                   unchanged=[out], match="created by depthcli synth")


def _fake_distill_out(out: Path, images: Path) -> Path:
    """A distill folder (marker + complete pseudo-labels) as the label stage leaves it."""
    from depthcli.io.atomic import mark_output

    (out / "labels" / "items").mkdir(parents=True)
    mark_output(out, "distill")
    items = []
    for p in sorted(images.iterdir()):
        with open(out / "labels" / "items" / f"{p.stem}.npz", "wb") as fh:
            np.savez(fh, disparity=np.ones((14, 18), np.float32), mask=np.ones((14, 18), bool))
        items.append({"name": p.name, "image": str(p), "label": f"items/{p.stem}.npz"})
    (out / "labels" / "index.json").write_text(json.dumps({"images": str(images), "items": items}))
    return out


def test_distill_student_never_deletes_user_files_in_student(inputs, tmp_path, run_cli):
    out = _fake_distill_out(tmp_path / "distill", inputs["imgs"])
    (out / "student").mkdir()
    (out / "student" / "thesis.tex").write_text("precious")
    base = ["distill", out, "--stage", "student", "--size", "14", "--batch-size", "2", "--threads", "1",
            "--device", "cpu", "--max-steps", "1"]
    assert_refused(run_cli, base, inputs=inputs.values(), unchanged=[out], match="already exists")
    for flag in ("--overwrite", "--resume"):
        assert_refused(run_cli, base + [flag], inputs=inputs.values(), unchanged=[out],
                       match="not a folder depthcli created")


# ----------------------------------------------------------------------------- inputs and outputs never overlap


def test_outputs_never_overlap_inputs(inputs, tmp_path, run_cli, monkeypatch):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(inputs["ds"], ds)  # a depthcli dataset: its marker would allow --overwrite
    imgs_ds = tmp_path / "pred_in"
    shutil.copytree(inputs["ds"], imgs_ds)
    cap = tmp_path / "cap"
    shutil.copytree(inputs["cap"], cap)
    i = dict(inputs, ds=ds)
    cases = [
        (["render", i["ply"], ds, ds, "--overwrite"], None),
        (["render", i["ply"], ds, ds / "rendered"], ds / "rendered"),
        (["predict", i["model"], imgs_ds / "images", imgs_ds, "--overwrite"], None),
        (["convert", cap, cap / "converted", *FOLDER_ARGS], cap / "converted"),
        (["convert", cap / "color", cap, *FOLDER_ARGS, "--overwrite"], None),
        (["eval", ds, ds, "--report", ds, "--overwrite"], None),
        (["eval", ds, ds, "--csv", ds / "dataset.json", "--overwrite"], None),
        (["eval", ds, ds, "--report", ds / "report"], ds / "report"),
        (["train", ds, ds / "run", "--max-steps", "1", "--size", "14"], ds / "run"),
        (["train", ds, ds, "--overwrite", "--max-steps", "1", "--size", "14"], None),
        (["splat-train", ds, ds / "job", "--steps", "2"], ds / "job"),
        (["splat-train", ds, tmp_path, "--steps", "2", "--overwrite"], None),
        (["distill", i["imgs"] / "out", "--teacher", i["model"], "--images", i["imgs"], "--stage", "label"],
         i["imgs"] / "out"),
    ]
    for args, out in cases:
        assert_refused(run_cli, args, inputs=[*inputs.values(), ds, imgs_ds, cap],
                       absent=[out] if out is not None else [], match="input|current folder")
    monkeypatch.chdir(ds)  # `synth . --overwrite` inside a dataset would delete the folder one stands in
    assert_refused(run_cli, ["synth", ".", "--overwrite", "--frames", "2", "--width", "16", "--height", "12"],
                   inputs=[ds], match="current folder")


# ----------------------------------------------------------------------------- one run per output


_HOLD = """
import sys, time
from depthcli.io.atomic import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding ``out``'s lock (as a concurrent depthcli run does)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("cmd", ["synth", "convert", "render", "predict", "train", "splat-train", "distill", "eval"])
def test_a_second_run_into_the_same_output_fails_cleanly(inputs, tmp_path, run_cli, cmd):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        line = assert_refused(run_cli, _commands(inputs, out)[cmd], inputs=inputs.values(),
                              match="another depthcli run")
        assert f"pid {proc.pid}" in line and not out.exists()
        assert (tmp_path / ".out.lock").exists()  # the other run's lock is left to it
    finally:
        proc.kill()
        proc.wait()
    # the dead run's lock does not block the next one, which cleans it up
    code, _, err = run_cli(*_commands(inputs, out)["synth"])
    assert code == 0, err
    assert (out / "dataset.json").is_file() and not leftovers(out)


def test_an_output_appearing_during_a_run_is_never_replaced(tmp_path):
    from depthcli.errors import DepthcliError
    from depthcli.io.atomic import atomic_output_dir, mark_output

    out = tmp_path / "out"
    with pytest.raises(DepthcliError, match="appeared while this run"):
        with atomic_output_dir(out) as tmp:
            (tmp / "mine.txt").write_text("second")
            out.mkdir()  # another writer (not holding our lock) finishes first
            mark_output(out, "synth")
            (out / "theirs.txt").write_text("first")
    assert sorted(p.name for p in out.iterdir()) == [".depthcli", "theirs.txt"]
    assert not leftovers(out)


# ----------------------------------------------------------------------------- leftovers


def test_refused_runs_leave_no_folder(inputs, tmp_path, run_cli, monkeypatch):
    from depthcli.errors import DepthcliError

    out = tmp_path / "out"
    # distill: a bad student setting is refused before any labelling
    assert_refused(run_cli, ["distill", out, "--teacher", inputs["model"], "--images", inputs["imgs"], "--epochs", "0"],
                   inputs=inputs.values(), absent=[out], match="epochs")

    # train: failing after its folder was prepared (here: while building the model)
    import depthcli.estimators.models as models

    def no_model(*a, **k):
        raise DepthcliError("simulated failure building the model")

    monkeypatch.setattr(models, "build_model", no_model)
    assert_refused(run_cli, _commands(inputs, out)["train"], inputs=inputs.values(), absent=[out],
                   match="simulated failure")

    # splat-train: failing before its first checkpoint
    import depthcli.splat.trainer as trainer

    def boom(*a, **k):
        raise DepthcliError("simulated failure during training")

    monkeypatch.setattr(trainer, "render_depth", boom)
    before = file_hashes(*inputs.values())
    code, _, err = run_cli(*_commands(inputs, out)["splat-train"])
    # a failure mid-run (not a refusal): the progress bar may precede the error line
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: simulated failure") and "Traceback" not in err
    assert not out.exists() and not leftovers(out) and file_hashes(*inputs.values()) == before


def test_hidden_work_folders_of_dead_runs_are_removed(inputs, tmp_path, run_cli):
    from depthcli.io.atomic import mark_output

    out = tmp_path / "out"
    dead = tmp_path / ".out.partial-dead1234"
    dead.mkdir()
    mark_output(dead, "synth")
    (dead / "half.npy").write_bytes(b"x")
    foreign = tmp_path / ".out.partial-notours"  # no marker: not depthcli's, never touched
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    code, _, err = run_cli(*_commands(inputs, out)["synth"])
    assert code == 0, err
    assert not dead.exists() and (foreign / "keep.txt").read_text() == "x"
    marker = json.loads((out / ".depthcli").read_text())  # the command and version that made it
    assert marker["what"] == "synth" and marker["created_by"].startswith("depthcli ")


def test_kill_9_leftover_is_removed_by_the_next_run(inputs, tmp_path, run_cli):
    """A real kill -9 inside an output being written; the next run cleans its hidden folder."""
    script = ("import sys, time\nfrom depthcli.io.atomic import atomic_output_dir\n"
              "with atomic_output_dir(sys.argv[1]) as tmp:\n"
              "    (tmp / 'half.npy').write_bytes(b'x')\n    print('writing', flush=True)\n    time.sleep(120)\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p for p in leftovers(out) if ".partial-" in p.name]
    code, _, err = run_cli(*_commands(inputs, out)["synth"])
    assert code == 0, err
    assert not leftovers(out) and (out / "dataset.json").is_file()


def test_job_resumes_from_another_working_directory(inputs, tmp_path, monkeypatch, run_cli):
    import shutil

    from depthcli.splat.trainer import SplatTrainConfig, train_splats

    shutil.copytree(inputs["ds"], tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    kw = dict(steps=4, checkpoint_every=2, eval_every=0, max_init_points=100, progress=False)
    r = train_splats(SplatTrainConfig(Path("ds"), Path("job"), stop_at=2, **kw))
    assert r["interrupted_at"] == 2
    job = json.loads((tmp_path / "job" / "job.json").read_text())["config"]
    assert Path(job["dataset"]).is_absolute() and Path(job["dataset"]) == (tmp_path / "ds").resolve()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run_cli("splat-train", "../ds", "../job", "--steps", "4", "--checkpoint-every", "2",
                           "--eval-every", "0", "--max-init-points", "100", "--resume")
    assert code == 0, err
    assert (tmp_path / "job" / "splats.ply").is_file()


def test_a_file_appearing_during_a_run_is_never_replaced(tmp_path):
    from depthcli.errors import DepthcliError
    from depthcli.io.atomic import atomic_write

    target = tmp_path / "table.csv"

    def write(p):
        p.write_text("second")
        target.write_text("first")  # a concurrent run publishes first

    with pytest.raises(DepthcliError, match="already exists"):
        atomic_write(target, write, replace=False)
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_a_job_killed_before_its_first_checkpoint_can_be_replaced(inputs, tmp_path, run_cli):
    """What a kill -9 leaves (marker + job.json, no checkpoint): refused without a flag,
    nothing to resume, replaced with --overwrite."""
    from depthcli.io.atomic import mark_output

    out = tmp_path / "job"
    out.mkdir()
    mark_output(out, "splat-train")
    (out / "job.json").write_text("{}")
    args = _commands(inputs, out)["splat-train"]
    assert_refused(run_cli, args, inputs=inputs.values(), unchanged=[out], match="already exists")
    assert_refused(run_cli, args + ["--resume"], inputs=inputs.values(), unchanged=[out], match="no checkpoint")
    code, _, err = run_cli(*args, "--overwrite")
    assert code == 0, err
    assert (out / "splats.ply").is_file() and json.loads((out / ".depthcli").read_text())["what"] == "splat-train"
