"""``depthcli train`` on several datasets with per-source sampling weights; the far cut-off on every source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def make_dataset(folder: Path, n: int, far_value: float, size: int = 28, seed: int = 0) -> Path:
    """A tiny metric dataset; the top-left 4x4 block of every frame is ``far_value`` metres away."""
    from depthcli.geometry import make_K
    from depthcli.io.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    writer = DatasetWriter(folder, depth_units="m", source={"kind": "test"})
    for i in range(n):
        depth = (2.0 + 10.0 * rng.random((size, size))).astype(np.float32)
        depth[:4, :4] = far_value
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        writer.add_frame(f"f{i:02d}", depth, make_K(20, 20, size / 2, size / 2), np.eye(4), image=img)
    writer.close()
    return folder


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multi")
    return make_dataset(root / "small", 3, far_value=100.0, seed=1), make_dataset(root / "big", 9, far_value=500.0, seed=2)


def test_sources_follow_arguments(two_datasets, tmp_path):
    from depthcli.estimators.data import samples_from_datasets

    small, big = two_datasets
    refs = samples_from_datasets([small, big])
    assert [r.source for r in refs] == [0] * 3 + [1] * 9
    # A folder of datasets is one source (one weight for all of its datasets).
    parent = tmp_path / "both"
    parent.mkdir()
    (parent / "a").symlink_to(small, target_is_directory=True)
    (parent / "b").symlink_to(big, target_is_directory=True)
    refs = samples_from_datasets([big, parent])
    assert [r.source for r in refs] == [0] * 9 + [1] * 12


def test_weighted_order_matches_weights(two_datasets):
    from depthcli.estimators.data import samples_from_datasets, weighted_order

    refs = samples_from_datasets(list(two_datasets))  # 3 frames weighted 2, 9 frames weighted 1
    n = 30000
    order = np.array(weighted_order(refs, [2.0, 1.0], n, seed=5))
    src = np.array([refs[i].source for i in order])
    # Binomial standard deviation sqrt(p (1 - p) / n) = 0.0027: 0.015 is more than 5 of them.
    assert abs((src == 0).mean() - 2 / 3) < 0.015
    # Within a source, frames are equally likely (each of the 3 small frames ~ 2/9).
    counts = np.bincount(order[src == 0], minlength=3)[:3] / n
    np.testing.assert_allclose(counts, 2 / 9, atol=0.015)
    # Without the weights the big set would dominate 3:1; the same seed gives the same order.
    assert order.tolist()[:50] == weighted_order(refs, [2.0, 1.0], n, seed=5)[:50]
    # Weight 0 leaves a source out.
    only_big = weighted_order(refs, [0.0, 1.0], 500, seed=1)
    assert all(refs[i].source == 1 for i in only_big)


def test_far_cutoff_masks_both_sources(two_datasets):
    from depthcli.estimators.data import SampleDataset, samples_from_datasets

    refs = samples_from_datasets(list(two_datasets))
    ds = SampleDataset(refs, size=28, train=False, max_depth=80.0)
    for i in (0, len(refs) - 1):  # one frame of each source (100 m and 500 m far blocks)
        _, _, mask, gt = ds[i]
        assert not mask[:4, :4].any() and mask[4:, 4:].all()
        assert float(gt[:4, :4].abs().max()) == 0.0


def test_split_dataset_weight_and_checks(tmp_path):
    from depthcli.errors import DepthcliError
    from depthcli.estimators.data import check_weights, split_dataset_weight

    assert split_dataset_weight("data/hypersim:2") == (Path("data/hypersim"), 2.0)
    assert split_dataset_weight("data/vkitti") == (Path("data/vkitti"), None)
    assert split_dataset_weight("a:b") == (Path("a:b"), None)
    odd = tmp_path / "run:3"
    odd.mkdir()
    assert split_dataset_weight(str(odd)) == (odd, None)  # an existing folder with a colon is a path
    assert check_weights([2, 1], 2) == [2.0, 1.0]
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(DepthcliError):
            check_weights(bad, 2)


def test_train_cli_parses_weights(two_datasets, tmp_path, monkeypatch, capsys):
    import depthcli.estimators.training as training
    from depthcli.cli import main

    seen = []
    monkeypatch.setattr(training, "train_estimator", lambda cfg: seen.append(cfg) or {"steps": 0})
    small, big = two_datasets
    assert main(["train", f"{small}:2", str(big), str(tmp_path / "o")]) == 0
    assert seen[-1].datasets == [small, big] and seen[-1].weights == [2.0, 1.0]
    assert main(["train", str(small), str(big), str(tmp_path / "o"), "--weight", "3", "--weight", "1"]) == 0
    assert seen[-1].weights == [3.0, 1.0]
    assert main(["train", str(small), str(tmp_path / "o")]) == 0
    assert seen[-1].weights is None  # one dataset: unchanged behaviour
    capsys.readouterr()
    assert main(["train", f"{small}:2", str(big), str(tmp_path / "o"), "--weight", "1", "--weight", "1"]) == 1
    assert "not both" in capsys.readouterr().err


def test_train_runs_with_weights(two_datasets, tmp_path, capsys):
    from depthcli.cli import main

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small, big = two_datasets
        out = tmp_path / "run"
        code = main(["train", str(small), str(big), str(out), "--weight", "4", "--weight", "1", "--max-steps", "2",
                     "--batch-size", "2", "--size", "28", "--threads", "1", "--val-fraction", "0", "--json"])
        assert code == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["steps"] == 2
        assert json.loads((out / "train_config.json").read_text())["weights"] == [4.0, 1.0]
        bad = main(["train", str(small), str(big), str(tmp_path / "bad"), "--weight", "1"])
        assert bad == 1 and "1 weight(s) for 2 dataset(s)" in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    finally:
        torch.set_num_threads(old)
