"""A bundle-adjustment-like sparse least-squares problem through scipy's least_squares.

Planar cameras (angle theta and position a, b each) on a circle look at points in
a disc; a 1-D pinhole camera sees point q at u = x / y, where (x, y) is q in the
camera's frame. From noisy observations of every point by a few cameras, and a
prior on the camera poses (as a GPS would give), find the poses and the points.
The residuals are a Python loop of scalar operations, one per observation; each
touches the 3 numbers of one camera and the 2 of one point, so the Jacobian has 5
nonzeros a row. ``fastape.compile`` records the loop once, ``F.jacobian_sparsity()``
gives the pattern and ``F.sparse_jacobian(z)`` the exact Jacobian as a csr_array at
every iteration of ``scipy.optimize.least_squares(jac=..., tr_solver="lsmr")``.

The same solve with scipy's own sparse finite differences (``jac="2-point"``,
``jac_sparsity=`` the same pattern) is the comparison: the two final costs and
solutions, the worst difference between the two Jacobians at the start, and the
times.

    python examples/sparse_least_squares.py [cameras points]

(default 40 cameras and 2000 points, each seen by 4 cameras.)
"""

import sys
import time

import numpy as np
import scipy.optimize

import fastape as ft

SEEN_BY = 4          # cameras per point
NOISE = 1e-3         # of the observations u
POSE_PRIOR = 0.05    # standard deviation of the pose prior


def make_problem(cameras, points, seed=0):
    """(true z, start z, data) with z = (theta, a, b per camera, x, y per point)."""
    rng = np.random.default_rng(seed)
    phi = 2.0 * np.pi * np.arange(cameras) / cameras
    poses = np.column_stack([phi + np.pi / 2, 10.0 * np.cos(phi), 10.0 * np.sin(phi)])
    r = 3.0 * np.sqrt(rng.uniform(size=points))
    angle = rng.uniform(0.0, 2.0 * np.pi, points)
    pts = np.column_stack([r * np.cos(angle), r * np.sin(angle)])
    cam = np.concatenate([rng.choice(cameras, SEEN_BY, replace=False) for _ in range(points)])
    pt = np.repeat(np.arange(points), SEEN_BY)
    truth = np.concatenate([poses.ravel(), pts.ravel()])
    u = project(truth, cameras, cam, pt) + NOISE * rng.standard_normal(cam.size)
    prior = poses.ravel() + POSE_PRIOR * rng.standard_normal(3 * cameras)
    start = np.concatenate([prior, (pts + 0.3 * rng.standard_normal(pts.shape)).ravel()])
    return truth, start, {"cameras": cameras, "cam": cam, "pt": pt, "u": u, "prior": prior}


def project(z, cameras, cam, pt):
    """u = x / y of each observed point in its camera's frame (numpy, for the data)."""
    th, a, b = (z[3 * cam + i] for i in range(3))
    qx, qy = z[3 * cameras + 2 * pt] - a, z[3 * cameras + 2 * pt + 1] - b
    return (np.cos(th) * qx + np.sin(th) * qy) / (-np.sin(th) * qx + np.cos(th) * qy)


def residuals(z, data):
    """Scaled observation errors, then the pose prior's: a Python loop of scalars."""
    n_cam, cam, pt, u = data["cameras"], data["cam"], data["pt"], data["u"]
    out = []
    for j in range(len(cam)):
        c, p = 3 * int(cam[j]), 3 * n_cam + 2 * int(pt[j])
        th = z[c]
        qx, qy = z[p] - z[c + 1], z[p + 1] - z[c + 2]
        cs, sn = np.cos(th), np.sin(th)
        out.append(((cs * qx + sn * qy) / (cs * qy - sn * qx) - u[j]) / NOISE)
    for i in range(3 * n_cam):
        out.append((z[i] - data["prior"][i]) / POSE_PRIOR)
    return ft.stack(out)


def check_columns(fun, J, z, count=20, h=1e-6, seed=1):
    """max |J e_j - central difference along e_j| / max |J| over random columns j."""
    worst = 0.0
    for j in np.random.default_rng(seed).choice(z.size, min(count, z.size), replace=False):
        e = np.zeros(z.size)
        e[j] = h
        fd = (fun(z + e) - fun(z - e)) / (2 * h)
        worst = max(worst, np.abs(J[:, [j]].toarray().ravel() - fd).max())
    return worst / abs(J).max()


def main(cameras, points):
    truth, z0, data = make_problem(cameras, points)
    t0 = time.perf_counter()
    F = ft.compile(lambda z: residuals(z, data), z0)
    pattern = F.jacobian_sparsity()
    setup = time.perf_counter() - t0
    m, n = pattern.shape
    print(f"{cameras} cameras, {points} points: {m} residuals, {n} unknowns, "
          f"{pattern.nnz} Jacobian nonzeros ({pattern.nnz / m:.1f} a row)")
    print(f"fastape: record + sparsity pattern {setup:.3f} s")

    def fun(z):
        return F(z)

    def jac(z):
        return F.sparse_jacobian(z)

    err = check_columns(fun, jac(z0), z0)
    print(f"Jacobian at the start, 20 random columns: max |fastape - central differences| "
          f"/ max |J| = {err:.1e}")
    solves = {}
    for name, kw in (("fastape sparse Jacobian", {"jac": jac}),
                     ("scipy 2-point, jac_sparsity", {"jac": "2-point",
                                                      "jac_sparsity": pattern})):
        t0 = time.perf_counter()
        res = scipy.optimize.least_squares(fun, z0, method="trf", tr_solver="lsmr",
                                           x_scale="jac", **kw)
        solves[name] = (res, time.perf_counter() - t0)
    print(f"{'solve':<30} {'cost':>12} {'nfev':>5} {'njev':>5} {'time':>8}  status")
    for name, (res, t) in solves.items():
        print(f"{name:<30} {res.cost:12.6f} {res.nfev:5d} {res.njev or 0:5d} {t:7.2f}s  "
              f"{res.status}: {res.message}")
    (a, ta), (b, tb) = solves.values()
    print(f"final costs differ by {abs(a.cost - b.cost) / b.cost:.1e} (relative); "
          f"max |z_fastape - z_fd| = {np.abs(a.x - b.x).max():.1e}; fastape's solve took "
          f"{ta / tb:.2f}x the finite-difference one")
    pts = slice(3 * cameras, None)
    print(f"points recovered to {np.sqrt(np.mean((a.x[pts] - truth[pts]) ** 2)):.1e} RMS "
          f"(start {np.sqrt(np.mean((z0[pts] - truth[pts]) ** 2)):.1e})")
    if err > 1e-5 or not a.success:
        sys.exit("fastape's Jacobian or solve failed")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*(args if len(args) == 2 else (40, 2000)))
