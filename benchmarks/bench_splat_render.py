"""Benchmark of depthcli.splat.render: compiled cpu backend vs torch backend vs a dense baseline.

    python benchmarks/bench_splat_render.py              # full table + splat-train step split (~10 min on 2 cores)
    python benchmarks/bench_splat_render.py --quick      # 20k Gaussians at 128x96 only
    python benchmarks/bench_splat_render.py --no-train-step
    python benchmarks/bench_splat_render.py --size 640x480  # one size (+ the train step split)
    python benchmarks/bench_splat_render.py --size none     # only the train step split

Scene: N random Gaussians, centres uniform in the camera frustum at z uniform in 1-5 m,
scales log-uniform in 0.005-0.05 m per axis, random rotations, opacities uniform in
0.1-0.9; pinhole with fx = fy = 0.9 W (about 58 deg horizontal field of view).
A step is one render(mode="ED") (+ backward of mean(ED) + mean(alpha) for "fwd+bwd").

Every configuration (size x thread setting) runs in a fresh subprocess, and within it the
cpu backend, then the torch backend, then the dense baseline, so their ratio comes from
one process on one machine state. "1" thread = numba and torch on one thread; "all" =
every core (the cpu backend's kernels on every core and its few torch ops on one torch
thread, as splat-train and render run it; the torch backend on every core). "peak MiB" is
the growth of the process's peak resident set
(getrusage ru_maxrss) over its resident set after building the scene; the cpu backend's
is taken before the torch backend runs (the torch backend's includes the cpu run's, it
is higher anyway). The torch backend is timed on fewer steps where it is slow, and is not
run at 1280x720/500k (minutes per step). The dense baseline (every Gaussian against every
pixel, autograd, float32) runs only where N * H * W <= 2.5e8.

The splat-train step split trains the real trainer (depthcli.splat.trainer.train_splats)
on 7-Scenes redkitchen converted at --downscale 2 (320x240), mode ED, densification from
step 100 every 100 steps, with timers wrapped around its render, loss, backward,
optimiser and densification calls; "backward" is the whole loss.backward() (rasteriser
and projection backward). Peak RSS is the whole process's (Python, torch and all). Needs
../shared/data/rgbd/7scenes_redkitchen (skipped when absent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

CONFIGS = [(20_000, 128, 96), (100_000, 640, 480), (500_000, 1280, 720)]
TORCH_MAX_ELEMENTS = 1e11  # N * H * W above which the torch backend is not run
DENSE_MAX_ELEMENTS = 2.5e8  # N * H * W
SCALE_RANGE_M = (0.005, 0.05)


def make_scene(n, width, height, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    f = 0.9 * width
    z = 1 + 4 * torch.rand(n, generator=gen)
    x = (torch.rand(n, generator=gen) * width - width / 2) / f * z
    y = (torch.rand(n, generator=gen) * height - height / 2) / f * z
    lo, hi = (math.log(s) for s in SCALE_RANGE_M)
    return dict(
        means=torch.stack([x, y, z], 1),
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.exp(lo + (hi - lo) * torch.rand(n, 3, generator=gen)),
        opacities=0.1 + 0.8 * torch.rand(n, generator=gen),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]]),
    )


def dense_render_ed(means, quats, scales, opacities, viewmats, Ks, width, height, block=512, backward=False):
    """Dense baseline: all Gaussians x all pixels, front to back along a dense axis.

    Same rules as render() (the projection is shared: it is O(N) and not what is being
    compared). Evaluated over blocks of pixels so that memory stays bounded; with
    ``backward`` each block's share of the loss is back-propagated right away.
    Returns (ED [H, W], alpha [H, W]) of camera 0.
    """
    import torch

    from depthcli.splat.backend_torch import project_gaussians

    proj = project_gaussians(means, quats, scales, viewmats, Ks, width, height, 0.01, 1e10, 0.3, 0.0)
    vis = torch.nonzero(proj["visible"][0]).squeeze(1)
    order = vis[torch.sort(proj["depths"][0].detach()[vis], stable=True).indices]
    m2 = proj["means2d"][0][order]
    con = proj["conics"][0][order]
    z = proj["depths"][0][order]
    o = opacities[order]
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    px, py = xs.reshape(-1), ys.reshape(-1)
    eds, alphas = [], []
    for lo in range(0, px.numel(), block):
        dx = px[None, lo:lo + block] - m2[:, 0:1]  # [N, B]
        dy = py[None, lo:lo + block] - m2[:, 1:2]
        sigma = 0.5 * (con[:, 0:1] * dx * dx + con[:, 2:3] * dy * dy) + con[:, 1:2] * dx * dy
        alpha = torch.clamp(o[:, None] * torch.exp(-sigma), max=0.999)
        alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
        t_incl = torch.cumprod(1 - alpha, 0)
        t_excl = torch.cat([torch.ones_like(t_incl[:1]), t_incl[:-1]], 0)
        w = torch.where(t_incl > 1e-4, alpha * t_excl, torch.zeros_like(alpha))
        acc = w.sum(0)
        ed = (w * z[:, None]).sum(0) / acc.clamp(min=1e-10)
        if backward:
            (ed.sum() / px.numel() + acc.sum() / px.numel()).backward(retain_graph=True)
            ed, acc = ed.detach(), acc.detach()
        eds.append(ed)
        alphas.append(acc)
    return torch.cat(eds).reshape(height, width), torch.cat(alphas).reshape(height, width)


def _params(scene):
    return [scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities")]


def _time(fn, min_steps, max_steps, min_seconds):
    wall, cpu = [], []
    t_start = time.perf_counter()
    while len(wall) < max_steps and (len(wall) < min_steps or time.perf_counter() - t_start < min_seconds):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    wall.sort()
    return {"median_s": wall[len(wall) // 2], "min_s": wall[0], "cpu_s": sum(cpu) / len(cpu), "steps": len(wall)}


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def run_one(n, width, height, threads):
    """One configuration (called in a subprocess); prints a JSON line."""
    import numba
    import torch

    from depthcli.splat.render import render

    n_thr = 1 if threads == "1" else os.cpu_count()
    torch.set_num_threads(n_thr)
    numba.set_num_threads(min(n_thr, numba.config.NUMBA_NUM_THREADS))
    scene = make_scene(n, width, height)
    args = lambda p: (p[0], p[1], p[2], p[3], None, scene["viewmats"], scene["Ks"], width, height)  # noqa: E731
    params = _params(scene)
    res = {"N": n, "W": width, "H": height, "threads": threads, "numba_threads": numba.get_num_threads(),
           "torch_threads": torch.get_num_threads(), "load_before": _load()}
    base = _rss_mib()  # after building the scene, before the first render
    big = n * width * height

    for backend in ("cpu", "torch"):
        if backend == "torch" and big > TORCH_MAX_ELEMENTS:
            continue
        # as depthcli runs them: the cpu backend's few torch ops on one torch thread (splat-train's and
        # render's default; torch's OpenMP workers spinning between ops would take cores from numba's),
        # its compiled kernels on n_thr threads; the torch backend on n_thr torch threads
        torch.set_num_threads(1 if backend == "cpu" else n_thr)

        def fwd():
            with torch.no_grad():
                return render(*args(params), mode="ED", backend=backend)

        def fwd_bwd():
            out, alphas, _ = render(*args(params), mode="ED", backend=backend)
            (out.mean() + alphas.mean()).backward()

        slow = backend == "torch" and big > 1e9
        c0, w0 = time.process_time(), time.perf_counter()
        meta = fwd()[2]  # warm-up (cpu: loads the compiled kernels from the on-disk cache)
        res[f"{backend}_first_call_s"] = time.perf_counter() - w0
        if not slow:
            fwd_bwd()
        r = {"fwd": _time(fwd, 1 if slow else 3, 2 if slow else 20, 0.0 if slow else 2.0),
             "fwd_bwd": _time(fwd_bwd, 1 if slow else 3, 2 if slow else 20, 0.0 if slow else 3.0),
             "peak_mib": max(0.0, _maxrss_mib() - base), "n_pairs": meta["n_pairs"]}
        r["peak_total_mib"] = _maxrss_mib()
        res[backend] = r
    if "torch" in res:
        with torch.no_grad():
            a = render(*args(params), mode="ED", backend="cpu")
            b = render(*args(params), mode="ED", backend="torch")
        res["max_abs_diff_ed_cpu_torch"] = float((a[0] - b[0]).abs().max())
    if big <= DENSE_MAX_ELEMENTS:
        with torch.no_grad():
            ed, acc = dense_render_ed(*(scene[k] for k in ("means", "quats", "scales", "opacities", "viewmats",
                                                           "Ks")), width, height)
            out, alphas, _ = render(*args(params), mode="ED", backend="cpu")
        res["max_abs_diff_ed_cpu_dense"] = float((ed - out[0, ..., 0]).abs().max())
        dp = _params(scene)
        res["dense"] = {"fwd_bwd": _time(lambda: dense_render_ed(dp[0], dp[1], dp[2], dp[3], scene["viewmats"],
                                                                   scene["Ks"], width, height, backward=True),
                                           1, 1, 0.0)}
    res["load_after"] = _load()
    print(json.dumps(res))


# ----------------------------------------------------------------------------- splat-train step split


def run_train_step(dataset, steps):
    """Train on ``dataset`` with timers around each part of a step; prints a JSON line."""
    import tempfile

    import torch

    from depthcli.splat import densify as D
    from depthcli.splat import losses as L
    from depthcli.splat import trainer as T

    timers = {k: 0.0 for k in ("render_fwd", "losses", "backward", "optimiser", "densify", "pose_opt")}
    calls = {"densify_refines": 0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timers[name] += time.perf_counter() - t
        return wrapper

    T.render_depth = timed("render_fwd", T.render_depth)
    L.DepthSupervision.forward = timed("losses", L.DepthSupervision.forward)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    from depthcli.splat import optim as O

    O.Adam.step = timed("optimiser", O.Adam.step)  # the CPU trainer's Adam (torch.optim.Adam on CUDA)
    from depthcli.splat import pose_align as P

    P.moved_splats = timed("pose_opt", P.moved_splats)  # moving the splats for the view's pose correction (forward)
    D.TorchDensifyStrategy.step_pre_backward = timed("densify", D.TorchDensifyStrategy.step_pre_backward)
    post = D.TorchDensifyStrategy.step_post_backward

    def counted_post(self, *a, **kw):
        out = post(self, *a, **kw)
        if out:
            calls["densify_refines"] += 1
        return out

    D.TorchDensifyStrategy.step_post_backward = timed("densify", counted_post)
    with tempfile.TemporaryDirectory() as tmp:
        # densification from step 100 every 100 steps (the default starts at 300), so that the
        # split includes refinement rounds
        cfg = T.SplatTrainConfig(dataset=dataset, out=os.path.join(tmp, "job"), mode="ED", steps=steps,
                                 test_every=0, eval_every=0, checkpoint_every=10**9, progress=False,
                                 refine_start=100, refine_every=100)
        c0, w0 = time.process_time(), time.perf_counter()
        summary = T.train_splats(cfg)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    train_s = summary["train_seconds"]
    res = {"steps": steps, "train_s": train_s, "s_per_step": train_s / steps, "cpu_s_per_step_incl_setup": cpu / steps,
           "wall_incl_setup_s": wall, "gaussians_end": summary["gaussians"],
           "gaussians_init": summary["init"], "backend": summary["backend"],
           "parts_s_per_step": {k: v / steps for k, v in timers.items()}, "densify_refines": calls["densify_refines"],
           "peak_rss_mib": _maxrss_mib(), "load_after": _load()}
    res["parts_s_per_step"]["other"] = res["s_per_step"] - sum(res["parts_s_per_step"].values())
    print(json.dumps(res))


def _train_step_split(env, steps, data):
    import tempfile

    src = os.path.join(data, "rgbd", "7scenes_redkitchen")
    if not os.path.isdir(src):
        print(f"splat-train step split: skipped ({os.path.normpath(src)} is absent)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        ds = os.path.join(tmp, "k2")
        conv = subprocess.run([sys.executable, "-m", "depthcli", "convert", src, ds, "--downscale", "2"],
                              capture_output=True, text=True, env=env)
        if conv.returncode != 0:
            print(f"splat-train step split: convert failed\n{conv.stderr[-2000:]}")
            return None
        print(f"splat-train step split: 7-Scenes redkitchen at 320x240, mode ED, {steps} steps, "
              f"load before {_load()} ...", flush=True)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--train-one", ds, "--steps", str(steps)],
                              capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"failed\n{proc.stderr[-3000:]}")
        return None
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    parts = "  ".join(f"{k} {v * 1e3:.1f}" for k, v in r["parts_s_per_step"].items())
    print(f"  {r['s_per_step']:.3f} s/step ({r['backend']} backend; {r['gaussians_init']} -> {r['gaussians_end']} "
          f"Gaussians; {r['densify_refines']} densification rounds); peak RSS {r['peak_rss_mib']:.0f} MiB "
          f"(whole process); load after {r['load_after']}")
    print(f"  ms/step: {parts}")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 20k Gaussians at 128x96, no train step")
    ap.add_argument("--no-train-step", action="store_true", help="skip the splat-train step split")
    ap.add_argument("--size", action="append", metavar="WxH",
                    help="only the configurations of this image size (repeatable), e.g. --size 640x480")
    ap.add_argument("--train-steps", type=int, default=400, help="steps of the splat-train split (default 400)")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                                   "data"),
                    help="the shared real-data folder (default: ../shared/data next to the repository)")
    ap.add_argument("--one", nargs=4, metavar=("N", "W", "H", "THREADS"), help=argparse.SUPPRESS)
    ap.add_argument("--train-one", metavar="DATASET", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=400, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON lines")
    a = ap.parse_args()
    if a.one:
        run_one(int(a.one[0]), int(a.one[1]), int(a.one[2]), a.one[3])
        return
    if a.train_one:
        run_train_step(a.train_one, a.steps)
        return
    configs = CONFIGS[:1] if a.quick else CONFIGS
    if a.size:
        configs = [c for c in configs if f"{c[1]}x{c[2]}" in a.size]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # OpenMP threads that spin stall a shared machine
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    print(f"depthcli render benchmark: mode ED, CPU cores {os.cpu_count()}, load average before {_load()}")
    print(f"scene: z uniform 1-5 m in the frustum, scales log-uniform {SCALE_RANGE_M[0]}-{SCALE_RANGE_M[1]} m, "
          "opacity uniform 0.1-0.9, fx = 0.9 W")
    head = (f"{'N':>7} {'size':>9} {'thr':>3} {'backend':>7} {'fwd ms':>9} {'f+b ms':>9} {'f+b cpu ms':>10} "
            f"{'Mpairs/s f+b':>12} {'pairs':>7} {'peak MiB':>8} {'load':>15}")
    print(head)
    print("-" * len(head))
    rows = []
    for n, w, h in configs:
        for thr in ("1", "all"):
            cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), str(w), str(h), thr]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{n:>7} {w}x{h} threads {thr}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            for backend in ("cpu", "torch", "dense"):
                if backend not in r:
                    continue
                b = r[backend]
                fb = b["fwd_bwd"]["median_s"]
                fwd = f"{b['fwd']['median_s'] * 1e3:9.1f}" if "fwd" in b else f"{'-':>9}"
                pairs = r["cpu"]["n_pairs"]
                peak = f"{b['peak_mib']:8.0f}" if "peak_mib" in b else f"{'-':>8}"
                print(f"{n:>7} {w:>4}x{h:<4} {r['numba_threads'] if backend == 'cpu' else r['torch_threads']:>3} "
                      f"{backend:>7} {fwd} {fb * 1e3:9.1f} {b['fwd_bwd']['cpu_s'] * 1e3:10.1f} "
                      f"{pairs / fb / 1e6:12.1f} {pairs / 1e6:6.2f}M {peak} {r['load_after']:>15}", flush=True)
    print(f"load average after {_load()}")
    print("times: median wall-clock per step ('f+b cpu': mean process CPU time per step); pairs = (Gaussian, "
          "pixel) pairs composited; peak MiB = ru_maxrss growth from before the first render")
    print("ratios (fwd+bwd, median wall):")
    by = {(r["N"], r["W"], r["H"], r["threads"]): r for r in rows}
    for n, w, h in configs:
        r1, ra = by.get((n, w, h, "1")), by.get((n, w, h, "all"))
        for r in (r1, ra):
            if r is None:
                continue
            cpu = r["cpu"]["fwd_bwd"]["median_s"]
            line = f"  {n} at {w}x{h}, threads {r['threads']}:"
            if "torch" in r:
                line += f" torch/cpu {r['torch']['fwd_bwd']['median_s'] / cpu:.1f}x"
                line += f" (CPU time {r['torch']['fwd_bwd']['cpu_s'] / r['cpu']['fwd_bwd']['cpu_s']:.1f}x)"
            if "dense" in r:
                line += f", dense/cpu {r['dense']['fwd_bwd']['median_s'] / cpu:.0f}x"
            for k in ("max_abs_diff_ed_cpu_torch", "max_abs_diff_ed_cpu_dense"):
                if k in r:
                    line += f", {k} {r[k]:.1e} m"
            print(line)
        if r1 and ra:
            print(f"  {n} at {w}x{h}: cpu 1 -> {ra['numba_threads']} threads "
                  f"{r1['cpu']['fwd_bwd']['median_s'] / ra['cpu']['fwd_bwd']['median_s']:.2f}x "
                  f"(cpu peak MiB {r1['cpu']['peak_mib']:.0f} / {ra['cpu']['peak_mib']:.0f})")
    train = None
    if not (a.quick or a.no_train_step):
        train = _train_step_split(env, a.train_steps, a.data)
    if a.json:
        for r in rows:
            print(json.dumps(r))
        if train:
            print(json.dumps(train))


if __name__ == "__main__":
    main()
