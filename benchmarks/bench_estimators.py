"""CPU throughput of the estimators: predict images/s and training steps/s, tiny and small presets.

Baseline and ours run in the same process on the same random inputs:

* baseline: eager fp32 with torch's default thread count, forward with autograd
  tracking (what a naive ``model(x)`` loop does);
* ours: what depthcli uses: ``torch.inference_mode()`` for prediction and
  ``--threads`` (default 1: on a shared machine OpenMP threads spin-wait).

Prints a table and the 1-minute load average (other jobs on the machine skew
every number). Run:  python benchmarks/bench_estimators.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]  # median


def bench(preset: str, size: int, batch: int, repeats: int, threads: int) -> list[dict]:
    import torch

    from depthcli.estimators.models import build_model, forward_disparity, predict_disparity
    from depthcli.losses import depth_anything_loss

    default_threads = torch.get_num_threads()
    model = build_model(preset, input_size=size, seed=0)
    img = (torch.rand(480, 640, 3) * 255).to(torch.uint8).numpy()
    x = torch.rand(batch, 3, size, size)
    target = torch.rand(batch, size, size)
    mask = torch.ones(batch, size, size, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def predict_baseline():
        import cv2

        from depthcli.estimators.models import inference_shape, normalize_images

        h, w = inference_shape(480, 640, size)
        t = torch.from_numpy(cv2.resize(img, (w, h))).permute(2, 0, 1)[None].float() / 255
        model(pixel_values=normalize_images(t)).predicted_depth.detach()

    def predict_ours():
        predict_disparity(model, img, size)

    def train_step():
        loss = depth_anything_loss(forward_disparity(model, x), target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = []
    model.eval()
    torch.set_num_threads(default_threads)
    t_base = _time(predict_baseline, repeats)
    torch.set_num_threads(threads)
    t_ours = _time(predict_ours, repeats)
    rows.append({"preset": preset, "task": "predict 640x480", "input": size, "batch": 1,
                 "baseline": f"{1 / t_base:.2f} img/s ({default_threads} thr, autograd)",
                 "ours": f"{1 / t_ours:.2f} img/s ({threads} thr, inference_mode)", "speedup": t_base / t_ours})
    model.train()
    torch.set_num_threads(default_threads)
    s_base = _time(train_step, max(2, repeats // 2))
    torch.set_num_threads(threads)
    s_ours = _time(train_step, max(2, repeats // 2))
    rows.append({"preset": preset, "task": "train step", "input": size, "batch": batch,
                 "baseline": f"{1 / s_base:.3f} steps/s ({default_threads} thr)",
                 "ours": f"{1 / s_ours:.3f} steps/s ({threads} thr)", "speedup": s_base / s_ours})
    torch.set_num_threads(default_threads)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="threads for 'ours'")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--small-size", type=int, default=266, help="input side of the small preset (518 = published)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = bench("tiny", 126, 8, args.repeats, args.threads)
    rows += bench("small", args.small_size, 2, max(2, args.repeats // 2), args.threads)
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"rows": rows, "load_avg_1min": load, "cpus": os.cpu_count()}, indent=1))
        return
    print(f"CPU: {os.cpu_count()} cores, load average (1 min) {load:.2f}")
    for r in rows:
        print(f"{r['preset']:6s} {r['task']:16s} in {r['input']:3d} b{r['batch']}: baseline {r['baseline']:38s} "
              f"ours {r['ours']:38s} x{r['speedup']:.2f}")


if __name__ == "__main__":
    main()
