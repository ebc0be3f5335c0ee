"""numba kernels of the CPU backend's projection (forward and hand-written backward).

The same EWA projection as :func:`depthcli.splat.backend_torch.project_gaussians`
(gsplat's classic rules), one Gaussian per task, every camera inside the task, in
float64 whatever the input precision. The backward follows the forward's operations in
reverse, with the same conventions as autograd on the torch version (the clamp of
``x/z`` passes no gradient outside its limits, culled depths are replaced by 1, the
hit distance is clamped at 1e-10). Gradients over cameras are summed inside each
Gaussian's task in camera order, so they do not depend on the thread count.

Imported only when the CPU backend runs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CHUNK = 256  # Gaussians per task (scratch arrays are allocated per task, not per Gaussian)


@njit(cache=True, inline="always")
def _rotation(qw, qx, qy, qz):
    return (1.0 - 2.0 * (qy * qy + qz * qz), 2.0 * (qx * qy - qw * qz), 2.0 * (qx * qz + qw * qy),
            2.0 * (qx * qy + qw * qz), 1.0 - 2.0 * (qx * qx + qz * qz), 2.0 * (qy * qz - qw * qx),
            2.0 * (qx * qz - qw * qy), 2.0 * (qy * qz + qw * qx), 1.0 - 2.0 * (qx * qx + qy * qy))


@njit(cache=True)
def _world_cov(quats, scales, n, S):
    """World covariance M M^T (M = R diag(s)) of Gaussian ``n`` into ``S`` [3, 3]; returns R, |q|."""
    w, x, y, z = quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3]
    qn = math.sqrt(w * w + x * x + y * y + z * z)
    R = _rotation(w / qn, x / qn, y / qn, z / qn)
    s0, s1, s2 = scales[n, 0], scales[n, 1], scales[n, 2]
    for i in range(3):
        mi0, mi1, mi2 = R[3 * i] * s0, R[3 * i + 1] * s1, R[3 * i + 2] * s2
        for j in range(3):
            S[i, j] = mi0 * R[3 * j] * s0 + mi1 * R[3 * j + 1] * s1 + mi2 * R[3 * j + 2] * s2
    return R, qn


@njit(cache=True, inline="always")
def _to_camera(V, means, n, S, p, cc):
    """Centre ``p`` [3] and covariance ``cc`` [3, 3] (V S V^T) of Gaussian ``n`` in camera ``V``."""
    for i in range(3):
        p[i] = V[i, 0] * means[n, 0] + V[i, 1] * means[n, 1] + V[i, 2] * means[n, 2] + V[i, 3]
    for i in range(3):
        a0 = V[i, 0] * S[0, 0] + V[i, 1] * S[1, 0] + V[i, 2] * S[2, 0]
        a1 = V[i, 0] * S[0, 1] + V[i, 1] * S[1, 1] + V[i, 2] * S[2, 1]
        a2 = V[i, 0] * S[0, 2] + V[i, 1] * S[1, 2] + V[i, 2] * S[2, 2]
        for j in range(3):
            cc[i, j] = a0 * V[j, 0] + a1 * V[j, 1] + a2 * V[j, 2]


@njit(cache=True, inline="always")
def _screen_limits(K, width, height):
    """Limits of the clamped x/z and y/z (gsplat's 1.3 x field of view): lox, hix, loy, hiy."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tfx, tfy = 0.5 * width / fx, 0.5 * height / fy
    return -(cx / fx + 0.3 * tfx), (width - cx) / fx + 0.3 * tfx, -(cy / fy + 0.3 * tfy), (height - cy) / fy + 0.3 * tfy


@njit(cache=True, inline="always")
def _cov2d(j00, j02, j11, j12, cc, eps2d):
    """``J cc J^T + eps2d I`` written out (J has two zeros): sxx, sxy, syy."""
    sxx = j00 * j00 * cc[0, 0] + 2.0 * j00 * j02 * cc[0, 2] + j02 * j02 * cc[2, 2] + eps2d
    syy = j11 * j11 * cc[1, 1] + 2.0 * j11 * j12 * cc[1, 2] + j12 * j12 * cc[2, 2] + eps2d
    sxy = j00 * j11 * cc[0, 1] + j00 * j12 * cc[0, 2] + j02 * j11 * cc[1, 2] + j02 * j12 * cc[2, 2]
    return sxx, sxy, syy


@njit(parallel=True, cache=True)
def project_forward(means, quats, scales, viewmats, Ks, width, height, near, far, eps2d, radius_clip,
                    means2d, depths, dists, cov2d, conics, radii, visible):
    """Outputs ``[C, N, ...]`` float64 (radii int32, visible bool); inputs float64."""
    C, N = viewmats.shape[0], means.shape[0]
    n_chunks = (N + CHUNK - 1) // CHUNK
    for ch in prange(n_chunks):
        S = np.empty((3, 3))
        p = np.empty(3)
        cc = np.empty((3, 3))
        for n in range(ch * CHUNK, min(N, (ch + 1) * CHUNK)):
            _world_cov(quats, scales, n, S)
            for c in range(C):
                V = viewmats[c]
                _to_camera(V, means, n, S, p, cc)
                x, y, z = p[0], p[1], p[2]
                valid = near <= z <= far
                zs = z if valid else 1.0
                fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
                lox, hix, loy, hiy = _screen_limits(Ks[c], width, height)
                txz, tyz = min(max(x / zs, lox), hix), min(max(y / zs, loy), hiy)
                j00, j02 = fx / zs, -fx * txz / zs
                j11, j12 = fy / zs, -fy * tyz / zs
                sxx, sxy, syy = _cov2d(j00, j02, j11, j12, cc, eps2d)
                det = sxx * syy - sxy * sxy
                ok = valid and det > 0.0
                dets = det if ok else 1.0
                mx, my = fx * x / zs + cx, fy * y / zs + cy
                means2d[c, n, 0], means2d[c, n, 1] = mx, my
                depths[c, n] = z
                dists[c, n] = math.sqrt(max(x * x + y * y + z * z, 1e-20))
                cov2d[c, n, 0], cov2d[c, n, 1], cov2d[c, n, 2] = sxx, sxy, syy
                conics[c, n, 0], conics[c, n, 1], conics[c, n, 2] = syy / dets, -sxy / dets, sxx / dets
                b = 0.5 * (sxx + syy)
                v1 = b + math.sqrt(max(b * b - det, 0.01))
                radius = math.ceil(3.0 * math.sqrt(max(v1, 0.0)))
                ok = (ok and radius > radius_clip and mx + radius > 0 and mx - radius < width and my + radius > 0
                      and my - radius < height and math.isfinite(mx) and math.isfinite(my))
                radii[c, n] = np.int32(radius) if ok else np.int32(0)
                visible[c, n] = ok


@njit(parallel=True, cache=True)
def project_backward(means, quats, scales, viewmats, Ks, width, height, near, far, eps2d,
                     g_means2d, g_depths, g_dists, g_conics, g_means, g_quats, g_scales):
    """Gradients of the inputs (float64 ``[N, ...]``) from those of means2d, depths, dists, conics."""
    C, N = viewmats.shape[0], means.shape[0]
    n_chunks = (N + CHUNK - 1) // CHUNK
    for ch in prange(n_chunks):
        S = np.empty((3, 3))
        p = np.empty(3)
        cc = np.empty((3, 3))
        G = np.empty((3, 3))
        gR = np.empty(9)
        for n in range(ch * CHUNK, min(N, (ch + 1) * CHUNK)):
            R, qn = _world_cov(quats, scales, n, S)
            G[:] = 0.0  # dL/dS, every entry as if independent
            gmx, gmy, gmz = 0.0, 0.0, 0.0
            for c in range(C):
                V = viewmats[c]
                _to_camera(V, means, n, S, p, cc)
                x, y, z = p[0], p[1], p[2]
                valid = near <= z <= far
                zs = z if valid else 1.0
                fx, fy = Ks[c, 0, 0], Ks[c, 1, 1]
                lox, hix, loy, hiy = _screen_limits(Ks[c], width, height)
                ux, uy = x / zs, y / zs
                txz, tyz = min(max(ux, lox), hix), min(max(uy, loy), hiy)
                j00, j02 = fx / zs, -fx * txz / zs
                j11, j12 = fy / zs, -fy * tyz / zs
                sxx, sxy, syy = _cov2d(j00, j02, j11, j12, cc, eps2d)
                det = sxx * syy - sxy * sxy
                ok = valid and det > 0.0
                ga, gb, gc = g_conics[c, n, 0], g_conics[c, n, 1], g_conics[c, n, 2]
                # conics = (syy, -sxy, sxx) / dets
                if ok:
                    g_sxx, g_sxy, g_syy = gc / det, -gb / det, ga / det
                    g_det = -(ga * syy - gb * sxy + gc * sxx) / (det * det)
                    g_sxx += g_det * syy
                    g_syy += g_det * sxx
                    g_sxy += -2.0 * g_det * sxy
                else:
                    g_sxx, g_sxy, g_syy = gc, -gb, ga
                # cov2d = J cc J^T (written out; cc symmetric, each off-diagonal entry one variable)
                g_j00 = (g_sxx * (2.0 * j00 * cc[0, 0] + 2.0 * j02 * cc[0, 2])
                         + g_sxy * (j11 * cc[0, 1] + j12 * cc[0, 2]))
                g_j02 = (g_sxx * (2.0 * j00 * cc[0, 2] + 2.0 * j02 * cc[2, 2])
                         + g_sxy * (j11 * cc[1, 2] + j12 * cc[2, 2]))
                g_j11 = (g_syy * (2.0 * j11 * cc[1, 1] + 2.0 * j12 * cc[1, 2])
                         + g_sxy * (j00 * cc[0, 1] + j02 * cc[1, 2]))
                g_j12 = (g_syy * (2.0 * j11 * cc[1, 2] + 2.0 * j12 * cc[2, 2])
                         + g_sxy * (j00 * cc[0, 2] + j02 * cc[2, 2]))
                g00 = g_sxx * j00 * j00
                g11 = g_syy * j11 * j11
                g22 = g_sxx * j02 * j02 + g_syy * j12 * j12 + g_sxy * j02 * j12
                g01 = g_sxy * j00 * j11
                g02 = g_sxx * 2.0 * j00 * j02 + g_sxy * j00 * j12
                g12 = g_syy * 2.0 * j11 * j12 + g_sxy * j02 * j11
                # J entries -> zs and the clamped x/z, y/z
                g_zs = (-g_j00 * fx + g_j02 * fx * txz - g_j11 * fy + g_j12 * fy * tyz) / (zs * zs)
                g_tx, g_ty = -g_j02 * fx / zs, -g_j12 * fy / zs
                gmx2, gmy2 = g_means2d[c, n, 0], g_means2d[c, n, 1]
                gx = gmx2 * fx / zs
                gy = gmy2 * fy / zs
                g_zs -= (gmx2 * fx * x + gmy2 * fy * y) / (zs * zs)
                if lox < ux < hix:
                    gx += g_tx / zs
                    g_zs -= g_tx * x / (zs * zs)
                if loy < uy < hiy:
                    gy += g_ty / zs
                    g_zs -= g_ty * y / (zs * zs)
                gz = g_depths[c, n] + (g_zs if valid else 0.0)
                r2 = x * x + y * y + z * z
                if r2 > 1e-20:
                    d = math.sqrt(r2)
                    gd = g_dists[c, n] / d
                    gx += gd * x
                    gy += gd * y
                    gz += gd * z
                # p = V mean + t
                gmx += V[0, 0] * gx + V[1, 0] * gy + V[2, 0] * gz
                gmy += V[0, 1] * gx + V[1, 1] * gy + V[2, 1] * gz
                gmz += V[0, 2] * gx + V[1, 2] * gy + V[2, 2] * gz
                # cc = V S V^T: dL/dS += sum_ij g_ij V_i^T V_j over the six variables
                gs = ((0, 0, g00), (1, 1, g11), (2, 2, g22), (0, 1, g01), (0, 2, g02), (1, 2, g12))
                for t in range(6):
                    i, j, g = gs[t]
                    if g != 0.0:
                        for k in range(3):
                            for l in range(3):
                                G[k, l] += g * V[i, k] * V[j, l]
            g_means[n, 0], g_means[n, 1], g_means[n, 2] = gmx, gmy, gmz
            # S = M M^T: dL/dM = (G + G^T) M, M = R diag(s)
            s = (scales[n, 0], scales[n, 1], scales[n, 2])
            gs0, gs1, gs2 = 0.0, 0.0, 0.0
            for i in range(3):
                for m in range(3):
                    gM = 0.0
                    for l in range(3):
                        gM += (G[i, l] + G[l, i]) * R[3 * l + m] * s[m]
                    gR[3 * i + m] = gM * s[m]
                    if m == 0:
                        gs0 += gM * R[3 * i]
                    elif m == 1:
                        gs1 += gM * R[3 * i + 1]
                    else:
                        gs2 += gM * R[3 * i + 2]
            g_scales[n, 0], g_scales[n, 1], g_scales[n, 2] = gs0, gs1, gs2
            # R(q) for the unit quaternion, then the normalisation
            w, x, y, z = quats[n, 0] / qn, quats[n, 1] / qn, quats[n, 2] / qn, quats[n, 3] / qn
            gw = 2.0 * (-gR[1] * z + gR[2] * y + gR[3] * z - gR[5] * x - gR[6] * y + gR[7] * x)
            gx = 2.0 * (gR[1] * y + gR[2] * z + gR[3] * y - 2.0 * gR[4] * x - gR[5] * w + gR[6] * z + gR[7] * w
                        - 2.0 * gR[8] * x)
            gy = 2.0 * (-2.0 * gR[0] * y + gR[1] * x + gR[2] * w + gR[3] * x + gR[5] * z - gR[6] * w + gR[7] * z
                        - 2.0 * gR[8] * y)
            gz = 2.0 * (-2.0 * gR[0] * z - gR[1] * w + gR[2] * x + gR[3] * w - 2.0 * gR[4] * z + gR[5] * y
                        + gR[6] * x + gR[7] * y)
            dot = w * gw + x * gx + y * gy + z * gz
            g_quats[n, 0] = (gw - w * dot) / qn
            g_quats[n, 1] = (gx - x * dot) / qn
            g_quats[n, 2] = (gy - y * dot) / qn
            g_quats[n, 3] = (gz - z * dot) / qn
