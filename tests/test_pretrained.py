"""The checkpoint shipped as package data: it loads, says how it was made, stays clear of the
scenes it is scored on, travels with a non-editable install, and predicts better than a ramp."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta() -> dict:
    from depthcli.estimators.models import pretrained_checkpoint

    return json.loads((pretrained_checkpoint("tiny-synth") / "depthcli.json").read_text())


def _flags(command: str) -> dict[str, str]:
    words = shlex.split(command)
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


def test_shipped_checkpoint_loads_with_its_documented_config():
    from depthcli.estimators.models import PRESETS, load_model, model_input_size, pretrained_checkpoint

    path = pretrained_checkpoint("tiny-synth")
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "depthcli.json"}
    assert sum(p.stat().st_size for p in path.iterdir()) < 20e6
    model = load_model("tiny-synth")  # a bare name that is not a folder here: the shipped checkpoint
    bb, tiny = model.config.backbone_config, PRESETS["tiny"]
    assert (bb.hidden_size, bb.num_hidden_layers, bb.num_attention_heads) == (
        tiny["hidden_size"], tiny["num_hidden_layers"], tiny["num_attention_heads"])
    assert list(model.config.neck_hidden_sizes) == tiny["neck_hidden_sizes"]
    meta = _meta()
    assert meta["preset"] == "tiny" and model_input_size(model) == meta["input_size"]
    # The last pretraining command's settings are what the checkpoint says of itself.
    last = _flags(meta["provenance"]["commands"][-1])
    assert int(last["--size"]) == meta["input_size"]
    assert meta["global_step"] == meta["provenance"]["stages"][-1]["steps"]


def test_provenance_names_rerunnable_depthcli_commands():
    from depthcli.cli import main

    prov = _meta()["provenance"]
    synth = [c for c in prov["commands"] if c.startswith("depthcli synth ")]
    train = [c for c in prov["commands"] if c.startswith("depthcli train ")]
    assert prov["commands"][0] in synth and train and len(synth) + len(train) == len(prov["commands"])
    # each synth command is recorded (seeds, scene count, style) in the same order
    assert len(synth) == len(prov["synth"])
    for c, s in zip(synth, prov["synth"]):
        flags = _flags(c)
        assert (int(flags["--seed"]), int(flags["--scenes"]), flags["--style"]) == (s["seed"], s["scenes"], s["style"])
    # each train stage reads only folders an earlier synth command wrote, and is recorded
    written, read = [], []
    for c in prov["commands"]:
        words = shlex.split(c)
        positional = words[2:next((i for i, w in enumerate(words) if w.startswith("--")), len(words))]
        if c in synth:
            written.append(positional[0])
        else:
            read.append(all(p in written for p in positional[:-1]) and len(positional) >= 2)
    assert read == [True] * len(train)
    assert len(train) == len(prov["stages"])
    for c in train:
        assert _flags(c)["--threads"] == "1"
    # Every command's flags exist in today's CLI (--help after them: an unknown flag is exit 2; nothing runs).
    for c in prov["commands"]:
        assert main(shlex.split(c)[1:] + ["--help"]) == 0, c


def test_pretraining_scenes_are_disjoint_from_the_scored_ones():
    """Scene i of a synth set is seed + i: the pretraining seeds never meet the demo's or the example's."""
    from depthcli.demo import SEED_OFFSETS, DemoConfig

    pre = {seed for s in _meta()["provenance"]["synth"] for seed in range(s["seed"], s["seed"] + s["scenes"])}
    cfg = DemoConfig()
    counts = {"labeled": cfg.scenes, "unlabeled": cfg.scenes, "heldout": cfg.heldout_rooms}
    for name, n in counts.items():
        assert not pre & set(range(cfg.seed + SEED_OFFSETS[name], cfg.seed + SEED_OFFSETS[name] + n)), name
    spec = importlib.util.spec_from_file_location("teacher_student", ROOT / "examples" / "teacher_student.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, offset in mod.SEED_OFFSETS.items():  # the example's sets hold at most a few hundred scenes
        assert not pre & set(range(offset, offset + 1000)), name


def test_shipped_files_are_package_data():
    """A non-editable install carries every file of the checkpoint (pyproject's package-data globs)."""
    from depthcli.estimators.models import PRETRAINED_DIR

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["depthcli.estimators"]
    base = PRETRAINED_DIR.parent
    files = [p for p in PRETRAINED_DIR.rglob("*") if p.is_file()]
    assert files
    for p in files:
        rel = p.relative_to(base).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel


def test_shipped_checkpoint_beats_the_ramp_on_unseen_rooms(tmp_path):
    """As shipped (no fine-tuning), on the demo's held-out rooms at the demo's size."""
    from depthcli.demo import SEED_OFFSETS, DemoConfig, _ramp
    from depthcli.estimators.data import find_datasets
    from depthcli.estimators.models import load_model, predict_disparity
    from depthcli.io.dataset import load_dataset
    from depthcli.losses import lstsq_disparity_metrics
    from depthcli.synth.generate import SynthConfig, synthesize

    cfg = DemoConfig()
    synthesize(SynthConfig(out=tmp_path / "rooms", scenes=cfg.heldout_rooms, frames=cfg.heldout_frames,
                           width=cfg.estimator_width, height=cfg.estimator_height,
                           seed=cfg.seed + SEED_OFFSETS["heldout"], style="indoor"))
    model = load_model("tiny-synth")
    scores: dict[str, list[float]] = {"model": [], "ramp": []}
    for root in find_datasets([tmp_path / "rooms"]):
        ds = load_dataset(root)
        for f in ds.frames:
            gt = torch.from_numpy(ds.read_depth(f)[None]).double()
            preds = {"model": predict_disparity(model, ds.read_image(f), cfg.estimator_size), "ramp": _ramp(*gt.shape[1:])}
            for k, p in preds.items():
                m = lstsq_disparity_metrics(torch.from_numpy(np.asarray(p)[None]).double(), gt, gt > 0)
                scores[k].append(m["abs_rel"])
    model_rel, ramp_rel = float(np.mean(scores["model"])), float(np.mean(scores["ramp"]))
    assert model_rel <= 0.85 * ramp_rel, (model_rel, ramp_rel)
