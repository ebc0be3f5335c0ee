"""Benchmark of depthcli.splat.render (torch backend, mode ED) against a dense baseline.

    python benchmarks/bench_splat_render.py            # full table (a few minutes on 2 cores)
    python benchmarks/bench_splat_render.py --quick    # 5k and 20k at 128x96 only
    python benchmarks/bench_splat_render.py --threads 1

Scene: N random Gaussians, centres uniform in the camera frustum at z uniform in 1-5 m,
scales log-uniform in 0.005-0.05 m per axis, random rotations, opacities uniform in
0.1-0.9; pinhole with fx = fy = 0.9 W (about 58 deg horizontal field of view).
A step is one render(mode="ED") (+ backward of mean(ED) + mean(alpha) for "fwd+bwd").

Each configuration runs in a fresh subprocess so that its peak memory can be measured:
"peak MiB" is the growth of the process's peak resident set (getrusage ru_maxrss) over
its resident set after building the scene (before the first render; the renderer keeps
freed memory in the heap, see depthcli.splat.backend_torch.tune_cpu_allocator). The dense baseline (every
Gaussian against every pixel, vectorised over pixel blocks of bounded memory, autograd,
float32) runs in the same subprocess afterwards, only where N * H * W <= 2.5e8, and is
checked against the torch backend before it is timed.
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

CONFIGS = [(5_000, 128, 96), (20_000, 128, 96), (100_000, 128, 96),
           (5_000, 256, 192), (20_000, 256, 192), (100_000, 256, 192)]
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


def run_one(n, width, height, threads):
    """One configuration (called in a subprocess); prints a JSON line."""
    import torch

    from depthcli.splat.render import render

    if threads:
        torch.set_num_threads(threads)
    scene = make_scene(n, width, height)
    args = lambda p: (p[0], p[1], p[2], p[3], None, scene["viewmats"], scene["Ks"], width, height)  # noqa: E731
    params = _params(scene)

    def fwd():
        with torch.no_grad():
            return render(*args(params), mode="ED", backend="torch")

    def fwd_bwd():
        out, alphas, _ = render(*args(params), mode="ED", backend="torch")
        (out.mean() + alphas.mean()).backward()

    base = _rss_mib()  # after building the scene, before the first render
    fwd()
    fwd_bwd()  # warm-up
    res = {"N": n, "W": width, "H": height, "threads": torch.get_num_threads()}
    res["fwd"] = _time(fwd, 3, 30, 2.0)
    res["fwd_bwd"] = _time(fwd_bwd, 3, 30, 3.0)
    res["peak_mib"] = max(0.0, _maxrss_mib() - base)
    meta = fwd()[2]
    res["n_candidates"], res["n_pairs"] = meta["n_candidates"], meta["n_pairs"]
    if n * width * height <= DENSE_MAX_ELEMENTS:
        with torch.no_grad():
            ed, acc = dense_render_ed(*(scene[k] for k in ("means", "quats", "scales", "opacities", "viewmats",
                                                           "Ks")), width, height)
            out, alphas, _ = render(*args(_params(scene)), mode="ED", backend="torch")
        res["dense_max_abs_diff_ed"] = float((ed - out[0, ..., 0]).abs().max())
        base_dense = _maxrss_mib()
        dp = _params(scene)
        res["dense_fwd_bwd"] = _time(lambda: dense_render_ed(dp[0], dp[1], dp[2], dp[3], scene["viewmats"],
                                                             scene["Ks"], width, height, backward=True), 1, 1, 0.0)
        res["dense_peak_mib"] = max(0.0, _maxrss_mib() - base)
        res["dense_peak_growth_mib"] = max(0.0, _maxrss_mib() - base_dense)
    print(json.dumps(res))


def _load():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?"] * 3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 5k and 20k Gaussians at 128x96")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--omp-active", action="store_true",
                    help="do not set OMP_WAIT_POLICY=PASSIVE in the benchmark processes")
    ap.add_argument("--one", nargs=3, type=int, metavar=("N", "W", "H"), help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON lines")
    a = ap.parse_args()
    if a.one:
        run_one(*a.one, a.threads)
        return
    configs = CONFIGS[:2] if a.quick else CONFIGS
    env = dict(os.environ)
    if not a.omp_active:
        # OpenMP threads that spin while waiting stall every op when the cores are shared
        # with other processes (measured 5-10x slower); sleeping waiters do not.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"depthcli render benchmark: torch backend, mode ED, CPU cores {os.cpu_count()}, "
          f"load average before {' '.join(_load())}, OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"scene: z uniform 1-5 m in the frustum, scales log-uniform {SCALE_RANGE_M[0]}-{SCALE_RANGE_M[1]} m, "
          "opacity uniform 0.1-0.9, fx = 0.9 W")
    head = (f"{'N':>7} {'size':>8} {'thr':>3} {'fwd ms':>8} {'f+b ms':>8} {'f+b cpu':>8} {'steps/s':>7} "
            f"{'cand/pairs':>15} {'Mcand/s':>7} {'peak MiB':>8} {'dense f+b ms':>12} {'speed-up':>8}")
    print(head)
    print("-" * len(head))
    rows = []
    for n, w, h in configs:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), str(w), str(h), "--threads", str(a.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{n:>7} {w}x{h}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        fb = r["fwd_bwd"]["median_s"]
        dense = r.get("dense_fwd_bwd")
        dense_s = f"{dense['median_s'] * 1e3:12.0f}" if dense else f"{'(skipped)':>12}"
        ratio = f"{dense['median_s'] / fb:7.0f}x" if dense else f"{'-':>8}"
        print(f"{n:>7} {w:>4}x{h:<3} {r['threads']:>3} {r['fwd']['median_s'] * 1e3:8.1f} {fb * 1e3:8.1f} "
              f"{r['fwd_bwd']['cpu_s'] * 1e3:8.1f} {1 / fb:7.1f} "
              f"{r['n_candidates'] / 1e6:6.2f}M/{r['n_pairs'] / 1e6:5.2f}M "
              f"{r['n_candidates'] / r['fwd']['median_s'] / 1e6:7.1f} {r['peak_mib']:8.0f} {dense_s} {ratio}",
              flush=True)
    print(f"load average after {' '.join(_load())}")
    print("times: median wall-clock per step; 'f+b cpu' = mean process CPU time per step; cand = (Gaussian, "
          "pixel) pairs evaluated, pairs = pairs composited; peak MiB = ru_maxrss growth from before the first render")
    for r in rows:
        if "dense_max_abs_diff_ed" in r:
            print(f"dense baseline check N={r['N']} {r['W']}x{r['H']}: max |ED_dense - ED_render| = "
                  f"{r['dense_max_abs_diff_ed']:.2e} m; dense peak MiB {r['dense_peak_mib']:.0f}")
    if a.json:
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
