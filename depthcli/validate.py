"""Checks of numbers at the boundary: CLI flags, config fields and numbers read from files.

Every config dataclass validates itself with these helpers before its command
creates anything, so the CLI and Python callers get the same refusals. Each
check raises :class:`~depthcli.errors.DepthcliError` with one line naming the
setting, the value and the accepted range, and returns the value (as ``int`` or
``float``) when it is fine. ``name`` is what the user wrote: a flag such as
``--max-frames`` or a place in a file such as ``dataset.json frame 3: K``.

Only the standard library is imported here (the CLI imports this module before
torch is loaded).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional

from depthcli.errors import DepthcliError

#: Largest step / epoch / count any loop accepts: far beyond any real run, small
#: enough that schedules, progress bars and int64 tensors never overflow.
MAX_COUNT = 10**9
#: Seeds go to numpy and torch (``torch.manual_seed`` takes 64-bit values, and the
#: trainers derive per-step seeds from them): keep them in 32 bits.
MAX_SEED = 2**31 - 1
#: Side of an image or model input in pixels.
MAX_SIDE = 16384
#: Devices the estimator commands accept (splat commands also take ``cuda:N``).
DEVICES = ("auto", "cpu", "cuda")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if not math.isfinite(value) else f"{value:g}"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"from {_num(lo)} to {_num(hi)}"
    if lo is not None and hi is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)} and {'<' if hi_open else '<='} {_num(hi)}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return "finite"


def check_int(
    value: Any,
    name: str,
    *,
    min: Optional[int] = None,
    max: Optional[int] = MAX_COUNT,
    optional: bool = False,
    hint: Optional[str] = None,
) -> Optional[int]:
    """An integer in ``[min, max]`` (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        else:
            raise DepthcliError(f"{name} must be an integer, got {_show(value)}", hint)
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise DepthcliError(
            f"{name} must be an integer {_range_text(min, max, False, False)}, got {_show(value)}",
            hint,
        )
    return value


def check_float(
    value: Any,
    name: str,
    *,
    min: Optional[float] = None,
    max: Optional[float] = None,
    min_open: bool = False,
    max_open: bool = False,
    optional: bool = False,
    hint: Optional[str] = None,
) -> Optional[float]:
    """A finite number in the given range (``min_open``: strictly above ``min``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DepthcliError(f"{name} must be a number, got {_show(value)}", hint)
    value = float(value)
    rng = _range_text(min, max, min_open, max_open)
    if min == 0 and min_open and max is None:
        want = "a positive number"
    else:
        want = "a finite number" if rng == "finite" else f"a number {rng}"
    low = min is not None and (value <= min if min_open else value < min)
    high = max is not None and (value >= max if max_open else value > max)
    if not math.isfinite(value) or low or high:
        raise DepthcliError(f"{name} must be {want}, got {_show(value)}", hint)
    return value


def check_positive(value: Any, name: str, *, optional: bool = False, hint: Optional[str] = None) -> Optional[float]:
    """A finite number > 0 (focal lengths, depth caps, scales, learning rates)."""
    return check_float(value, name, min=0.0, min_open=True, optional=optional, hint=hint)


def check_fraction(value: Any, name: str, *, include_one: bool = False, hint: Optional[str] = None) -> float:
    """A finite number in ``[0, 1)`` (or ``[0, 1]``)."""
    return check_float(value, name, min=0.0, max=1.0, max_open=not include_one, hint=hint)  # type: ignore[return-value]


def check_multiple(value: Any, name: str, of: int, *, optional: bool = False, max: int = MAX_SIDE) -> Optional[int]:
    """A positive integer multiple of ``of`` (model input sizes: the ViT patch)."""
    if value is None and optional:
        return None
    v = check_int(value, name, min=of, max=max, hint=f"use a multiple of {of}, e.g. {of * 37}")
    assert v is not None
    if v % of:
        lower = v // of * of
        suggestion = f"e.g. {lower} or {lower + of}" if lower >= of else f"e.g. {of}"
        raise DepthcliError(f"{name} must be a multiple of {of}, got {v}", suggestion)
    return v


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (exact match)."""
    choices = tuple(choices)
    if value not in choices:
        raise DepthcliError(f"unknown {name} {_show(value)}", f"use one of {', '.join(choices)}")
    return value


def check_seed(value: Any, name: str = "--seed") -> int:
    """A seed in ``[0, 2^31 - 1]``."""
    return check_int(value, name, min=0, max=MAX_SEED)  # type: ignore[return-value]


def check_device(value: Any, name: str = "--device", *, allowed: Iterable[str] = DEVICES, indexed: bool = False) -> str:
    """A device name from ``allowed``; with ``indexed`` also ``cuda:N``."""
    allowed = tuple(allowed)
    if isinstance(value, str) and indexed and value.startswith("cuda:") and value[5:].isdigit():
        return value
    if value not in allowed:
        extra = " or cuda:N" if indexed else ""
        raise DepthcliError(f"unknown device {_show(value)} for {name}", f"use {', '.join(allowed)}{extra}")
    return value


def check_depth_range(min_depth: Any, max_depth: Any, *, min_name: str = "--min-depth", max_name: str = "--max-depth") -> None:
    """Optional depth caps: each finite and > 0, and ``min < max`` when both are set."""
    lo = check_positive(min_depth, min_name, optional=True)
    hi = check_positive(max_depth, max_name, optional=True)
    if lo is not None and hi is not None and not lo < hi:
        raise DepthcliError(f"{max_name} ({hi:g}) must be larger than {min_name} ({lo:g})")


def check_intrinsics_matrix(K: Any, where: str) -> None:
    """A pinhole K read from a file: finite, focal lengths > 0, last row 0 0 1."""
    fx, fy = float(K[0][0]), float(K[1][1])
    if not (fx > 0 and fy > 0):
        raise DepthcliError(
            f"{where}: K has focal lengths fx={_show(fx)}, fy={_show(fy)}; both must be > 0",
            "fix the intrinsics, or re-create the dataset with depthcli convert",
        )
    if [float(x) for x in K[2]] != [0.0, 0.0, 1.0]:
        raise DepthcliError(f"{where}: the last row of K must be 0 0 1", "fix the intrinsics")


def check_rigid(T: Any, where: str, what: str = "cam_from_world", tol: float = 1e-2) -> None:
    """A 4x4 rigid transform read from a file: rotation block orthonormal with det +1, last row 0 0 0 1."""
    import numpy as np

    T = np.asarray(T, dtype=np.float64)
    R = T[:3, :3]
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise DepthcliError(f"{where}: the last row of {what} must be 0 0 0 1", "fix the pose")
    if not (np.abs(R @ R.T - np.eye(3)).max() < tol and abs(np.linalg.det(R) - 1.0) < tol):
        raise DepthcliError(
            f"{where}: the rotation of {what} is not a rotation (not orthonormal with determinant 1)",
            "fix the pose, or re-create the dataset with depthcli convert",
        )

