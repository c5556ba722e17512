"""Independent numerical checks shared by the tests."""

import numpy as np


def central_diff(f, args, argnum, h=1e-6):
    """Central finite differences of scalar f with respect to args[argnum] (a float or an
    array), evaluated with plain numpy values: an independent check of the tape."""
    x = np.array(args[argnum], dtype=float)
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for j in range(flat.size):
        step = h * max(1.0, abs(flat[j]))
        old = flat[j]
        flat[j] = old + step
        fp = f(*[x.copy() if i == argnum else a for i, a in enumerate(args)])
        flat[j] = old - step
        fm = f(*[x.copy() if i == argnum else a for i, a in enumerate(args)])
        flat[j] = old
        gf[j] = (fp - fm) / (2 * step)
    return g if g.ndim else float(g)
