"""depthcli's CPU Adam is torch.optim.Adam without torch.optim: same numbers, same state layout."""

import subprocess
import sys
import textwrap

import pytest
import torch

from depthcli.splat.optim import Adam


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"means": (7, 3), "scales": (7, 3), "opacities": (7,)}
    return {k: torch.randn(*s, generator=g) for k, s in shapes.items()}, g


def _run(opt_cls, start, g, steps, lr_means=None, state=None):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
    opts = {k: opt_cls([{"params": [p], "lr": 1e-2, "name": k}], eps=1e-15) for k, p in params.items()}
    if state is not None:
        for k, o in opts.items():
            o.load_state_dict(state[k])
    for step in range(steps):
        if lr_means is not None:
            for group in opts["means"].param_groups:
                group["lr"] = lr_means * 0.9**step
        loss = sum(((p - torch.randn(p.shape, generator=g)) ** 2 * (1 + i)).sum() for i, p in enumerate(params.values()))
        loss.backward()
        for o in opts.values():
            o.step()
            o.zero_grad(set_to_none=True)
    return params, opts


def test_same_parameters_as_torch_adam_step_for_step():
    start, _ = _problem()
    ours, _ = _run(Adam, start, torch.Generator().manual_seed(1), 30, lr_means=0.05)
    ref, _ = _run(torch.optim.Adam, start, torch.Generator().manual_seed(1), 30, lr_means=0.05)
    for k in start:
        assert torch.equal(ours[k], ref[k]), k  # the same operations in the same order: bit for bit
        assert not torch.equal(ours[k], start[k])


@pytest.mark.parametrize("first,second", [(Adam, torch.optim.Adam), (torch.optim.Adam, Adam)])
def test_state_dicts_move_between_the_two(first, second):
    start, _ = _problem(2)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    params, opts = _run(first, start, g1, 10)
    state = {k: o.state_dict() for k, o in opts.items()}
    assert state["means"]["state"][0]["step"].item() == 10
    cont, _ = _run(second, {k: p.detach() for k, p in params.items()}, g1, 10, state=state)
    # the same 20 steps in one optimiser
    straight, _ = _run(second, start, g2, 20)
    for k in start:
        assert torch.equal(cont[k], straight[k]), k


def test_load_state_dict_refuses_a_state_that_does_not_fit():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    opt = Adam([{"params": [p], "lr": 1e-3}])
    good = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4, 3), "exp_avg_sq": torch.zeros(4, 3)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "params": [0]}]}
    opt.load_state_dict(good)
    assert opt.state[p]["step"].item() == 3.0
    bad_shape = {**good, "state": {0: {**good["state"][0], "exp_avg": torch.zeros(5, 3)}}}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad_shape)
    with pytest.raises(ValueError, match="layout"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="options"):
        opt.load_state_dict({**good, "param_groups": [{**good["param_groups"][0], "weight_decay": 0.1}]})


def test_a_cpu_splat_training_never_imports_dynamo(tmp_path):
    """The reason this class exists: torch.optim pulls in torch._dynamo and sympy (~75 MiB)."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from depthcli.io.dataset import DatasetWriter
        from depthcli.splat.trainer import SplatTrainConfig, train_splats
        n, W, H = 4, 32, 24
        K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
        w = DatasetWriter(Path({str(tmp_path / 'ds')!r}), depth_units="m", source={{"kind": "test"}})
        for i in range(n):
            T = np.eye(4); T[0, 3] = 0.05 * i
            depth = (2.0 + 0.3 * np.sin(np.arange(W) / 5.0))[None, :].repeat(H, 0).astype(np.float32)
            w.add_frame(f"f{{i}}", depth, K, T)
        w.close()
        train_splats(SplatTrainConfig(Path({str(tmp_path / 'ds')!r}), Path({str(tmp_path / 'out')!r}), steps=3,
                     progress=False, eval_every=0, max_init_points=50))
        bad = sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "sympy")))
        print("IMPORTED", bad)
        assert not bad, bad
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "IMPORTED []" in res.stdout
