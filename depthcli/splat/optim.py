"""Adam for the splat trainer on CPU, without ``torch.optim``.

Constructing any ``torch.optim`` optimizer imports ``torch._dynamo`` (and sympy) in
torch 2.x: about 75 MiB of resident memory and over a second of start-up on a small
CPU, for an update that is six tensor operations. :class:`Adam` performs exactly the
arithmetic of ``torch.optim.Adam``'s single-tensor path (the one torch takes for CPU
tensors; no weight decay, no amsgrad), in the same order, so the two give identical
parameters step for step, and it reads and writes the same ``state_dict`` layout, so
checkpoints move between the two. It has the surface the densification code and
gsplat's strategies use: ``param_groups`` (dicts with ``params``, ``lr``, ...),
``state`` (per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``), ``step``,
``zero_grad``, ``state_dict``, ``load_state_dict``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch


class Adam:
    """``torch.optim.Adam(param_groups, lr, betas, eps)`` for CPU tensors (see the module)."""

    def __init__(self, param_groups, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        defaults = {"lr": float(lr), "betas": (float(betas[0]), float(betas[1])), "eps": float(eps)}
        groups = list(param_groups)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            group = {**defaults, **g}
            group["params"] = list(group["params"])
            self.param_groups.append(group)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = defaultdict(dict)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0, dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
                st["step"] += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = st["step"].item()
                step_size = lr / (1 - beta1**step)
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """The layout of ``torch.optim.Optimizer.state_dict`` (parameters numbered in group order)."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed.update(weight_decay=0, amsgrad=False, maximize=False)
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {index[id(p)]: dict(st) for p, st in self.state.items() if id(p) in index and st}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state written by :meth:`state_dict` or by ``torch.optim.Adam`` for the same parameters.

        Raises ``ValueError`` when it does not fit (other group count, sizes or options)."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        saved = state_dict.get("state") if isinstance(state_dict, dict) else None
        if not isinstance(groups, list) or not isinstance(saved, dict) or len(groups) != len(self.param_groups):
            raise ValueError("the optimizer state has another layout")
        for mine, theirs in zip(self.param_groups, groups):
            if not isinstance(theirs, dict) or len(theirs.get("params", ())) != len(mine["params"]):
                raise ValueError("the optimizer state has another layout")
            if theirs.get("weight_decay", 0) or theirs.get("amsgrad", False) or theirs.get("maximize", False):
                raise ValueError("the optimizer state uses options this Adam does not have")
        self.state = defaultdict(dict)
        for mine, theirs in zip(self.param_groups, groups):
            mine["lr"] = float(theirs["lr"])
            mine["betas"] = (float(theirs["betas"][0]), float(theirs["betas"][1]))
            mine["eps"] = float(theirs["eps"])
            for k, v in theirs.items():
                if k not in ("params", "lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
                    mine.setdefault(k, v)
            for p, idx in zip(mine["params"], theirs["params"]):
                st = saved.get(idx)
                if not st:
                    continue
                if not isinstance(st, dict) or set(st) != {"step", "exp_avg", "exp_avg_sq"}:
                    raise ValueError("the optimizer state has another layout")
                for key in ("exp_avg", "exp_avg_sq"):
                    if not isinstance(st[key], torch.Tensor) or st[key].shape != p.shape:
                        raise ValueError(f"the optimizer state's {key} does not match its parameter's shape")
                step = torch.as_tensor(st["step"], dtype=torch.float32).reshape(())
                self.state[p] = {"step": step.clone(), "exp_avg": st["exp_avg"].to(p).clone(),
                                 "exp_avg_sq": st["exp_avg_sq"].to(p).clone()}
