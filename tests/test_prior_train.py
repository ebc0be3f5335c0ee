"""splat-train --prior: the dense prior term, its schedule, resume, bad input, and the
end-to-end gain on a synthetic COLMAP scene (sparse SfM depth + an affine-distorted prior).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from test_align_prior import make_affine_prior, make_synth_colmap  # noqa: E402


def test_prior_weight_schedule():
    from depthcli.splat.prior_term import prior_weight_at

    assert prior_weight_at(1, 101, 1.0, 0.01) == pytest.approx(1.0)
    assert prior_weight_at(51, 101, 1.0, 0.01) == pytest.approx(0.1)  # geometric midpoint
    assert prior_weight_at(101, 101, 1.0, 0.01) == pytest.approx(0.01)
    assert prior_weight_at(51, 101, 2.0, 0.0) == pytest.approx(1.0)  # final 0: linear
    assert prior_weight_at(7, 101, 0.0, 0.5) == 0.0
    assert prior_weight_at(1, 1, 1.0, 0.01) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ptrain")
    exact, sparse = make_synth_colmap(tmp, frames=6, width=48, height=36, points=300)
    make_affine_prior(exact, tmp / "pred")
    from depthcli.cli import main

    assert main(["align", str(tmp / "pred"), str(sparse), str(tmp / "al"), "--no-previews", "--min-points", "10"]) == 0
    return tmp, exact, sparse


BASE = ["--steps", "12", "--test-every", "3", "--eval-every", "0", "--checkpoint-every", "4", "--densify", "off"]


def test_prior_train_logs_prior_term_and_resumes_identically(small, run_cli):
    tmp, exact, sparse = small
    args = BASE + ["--prior", tmp / "al", "--prior-loss", "l1", "--prior-loss", "pearson:0.1", "--depth-loss", "log-l1"]
    code, out, err = run_cli("splat-train", sparse, tmp / "full", *args, "--json")
    assert code == 0, out + err
    summary = json.loads(out)
    assert summary["prior"]["frames"] == 4 and summary["prior"]["weight"] == "1 -> 0.01"
    m = json.loads((tmp / "full" / "metrics.json").read_text())
    assert m["init"]["valid_fraction"] > 0.5  # seeded from the dense prior, not only the sparse points
    rec = m["history"][0]
    assert rec["step"] == 10 and "prior" in rec and "log-l1" in rec
    assert rec["prior_weight"] == pytest.approx(0.01 ** (9 / 11))
    job = json.loads((tmp / "full" / "job.json").read_text())["config"]
    assert job["prior"] == str(tmp / "al") and job["prior_loss"] == "l1,pearson:0.1"
    # interrupted at step 4, then resumed: the same parameters as the uninterrupted run
    from depthcli.splat.trainer import SplatTrainConfig, train_splats

    def cfg(**kw):
        return SplatTrainConfig(dataset=sparse, out=tmp / "part", steps=12, test_every=3, eval_every=0,
                                checkpoint_every=4, densify="off", progress=False, depth_loss="log-l1",
                                prior=str(tmp / "al"), prior_loss="l1,pearson:0.1", **kw)

    assert train_splats(cfg(stop_at=4))["interrupted_at"] == 4
    train_splats(cfg(resume=True))
    a = torch.load(sorted((tmp / "full" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    b = torch.load(sorted((tmp / "part" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    assert b["prior"]["frames"] == 4
    code, out, err = run_cli("splat-train", sparse, tmp / "part", *BASE, "--prior", tmp / "al", "--prior-loss", "pearson",
                             "--resume")
    assert code == 1 and "prior_loss" in out + err


def test_unaligned_prior_needs_pearson(small, run_cli):
    tmp, exact, sparse = small
    code, out, err = run_cli("splat-train", sparse, tmp / "bad", *BASE, "--prior", tmp / "pred")
    assert code == 1 and "align it first" in out + err and not (tmp / "bad").exists()
    code, out, err = run_cli("splat-train", sparse, tmp / "pear", *BASE, "--prior", tmp / "pred", "--prior-loss", "pearson",
                             "--json")
    assert code == 0, out + err
    assert json.loads(out)["prior"]["kind"] == "disparity"


def test_bad_prior_flags_are_one_line(small, run_cli):
    tmp, exact, sparse = small
    for flags, msg in ((["--depth-loss", "l2"], "unknown depth loss"), (["--prior", tmp / "al", "--prior-weight", "-1"],
                       "--prior-weight"), (["--prior", tmp / "al", "--prior-loss", "l1:x"], "not a number"),
                       (["--prior", tmp / "nowhere"], "does not exist")):
        code, out, err = run_cli("splat-train", sparse, tmp / "never", *BASE, *flags)
        assert code == 1 and msg in out + err and "Traceback" not in out + err, flags
        assert not (tmp / "never").exists()
