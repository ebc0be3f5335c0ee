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


def _heldout_dense_absrel(job: Path, exact: Path, every: int, tmp: Path) -> tuple[float, float]:
    """Mean over held-out frames of AbsRel of the rendered splats against the exact dense depth
    (over pixels the render covers), and the mean coverage of valid exact pixels."""
    from depthcli.io.dataset import load_dataset
    from depthcli.splat.render_dataset import render_dataset

    render_dataset(job / "splats.ply", exact, tmp, rgb=False)
    r, e = load_dataset(tmp), load_dataset(exact)
    rels, covs = [], []
    for k, f in enumerate(e.frames):
        if k % every:
            continue
        z = e.read_depth(f)
        d = r.read_depth(r.frame(f.name))
        m = (z > 0) & (d > 0)
        rels.append(float(np.mean(np.abs(d[m] - z[m]) / z[m])))
        covs.append(float(m.sum() / (z > 0).sum()))
    return float(np.mean(rels)), float(np.mean(covs))


@pytest.mark.slow
def test_prior_halves_heldout_dense_absrel(tmp_path, run_cli):
    """Sparse SfM depth (400 points, 16 views of 80x60) vs the same plus the aligned prior, 600 steps each."""
    exact, sparse = make_synth_colmap(tmp_path, frames=16, width=80, height=60, points=400)
    make_affine_prior(exact, tmp_path / "pred")
    code, out, err = run_cli("align", tmp_path / "pred", sparse, tmp_path / "al", "--no-previews")
    assert code == 0, out + err
    common = ["--steps", "600", "--test-every", "4", "--eval-every", "0", "--checkpoint-every", "600"]
    assert run_cli("splat-train", sparse, tmp_path / "sparse_only", *common)[0] == 0
    assert run_cli("splat-train", sparse, tmp_path / "with_prior", *common, "--prior", tmp_path / "al",
                   "--prior-weight-final", "1")[0] == 0
    a_sparse, c_sparse = _heldout_dense_absrel(tmp_path / "sparse_only", exact, 4, tmp_path / "r1")
    a_prior, c_prior = _heldout_dense_absrel(tmp_path / "with_prior", exact, 4, tmp_path / "r2")
    print(f"held-out dense AbsRel: sparse only {a_sparse:.4f} (coverage {c_sparse:.2f}), "
          f"with prior {a_prior:.4f} (coverage {c_prior:.2f}), ratio {a_sparse / a_prior:.2f}")
    assert a_sparse >= 2 * a_prior
    assert c_prior >= c_sparse


@pytest.mark.slow
def test_real_photos_predict_align_splat_train(tmp_path, run_cli):
    """Sacre-Coeur (10 photos, COLMAP): convert -> predict (tiny untrained model) -> align -> splat-train --prior."""
    from conftest import shared_data

    src = shared_data("colmap", "sacre_coeur")
    from depthcli.estimators.models import build_model, save_model

    save_model(build_model("tiny", input_size=56, seed=0), tmp_path / "tiny")
    code, out, err = run_cli("convert", src, tmp_path / "ds", "--downscale", "4")
    assert code == 0, out + err
    code, out, err = run_cli("predict", tmp_path / "tiny", tmp_path / "ds" / "images", tmp_path / "pred", "--threads", "1")
    assert code == 0, out + err
    code, out, err = run_cli("align", tmp_path / "pred", tmp_path / "ds", tmp_path / "al", "--json")
    assert code == 0, out + err
    summary = json.loads(out)
    # predictions are matched to the COLMAP frames by file stem (x.png vs x.jpg); an untrained model's
    # map may be anti-correlated with the SfM depth: such frames are skipped and listed, never inverted
    assert summary["aligned"] >= 1 and summary["aligned"] + summary["skipped"] == 10
    for row in summary["frames"]:
        assert row["status"] == "aligned" or row["status"].startswith("skipped")
        if row["status"] == "aligned":
            assert row["scale"] > 0 and row["points"] >= 20
    code, out, err = run_cli("splat-train", tmp_path / "ds", tmp_path / "job", "--prior", tmp_path / "al", "--steps", "40",
                             "--test-every", "3", "--eval-every", "0", "--json")
    assert code == 0, out + err
    s = json.loads(out)
    assert s["prior"]["frames"] >= 1 and np.isfinite(s["heldout"]["abs_rel"])
