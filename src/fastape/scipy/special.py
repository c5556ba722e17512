"""``scipy.special`` for fastape values (as ``jax.scipy.special``).

The special-function ufuncs the op registry holds (``erf``, ``gammaln``, ``expit``,
``xlogy``, …) are recorded ops: calling scipy's own ufuncs on fastape values works as
well. ``logsumexp``, ``softmax`` and ``log_softmax`` are Python functions in scipy
(which convert their argument with ``np.asarray``), so they are here, written with
recorded ops and shifted by the maximum as scipy's are: stable values and stable
gradients (the softmax). On plain numbers and arrays each calls scipy's function.

``polygamma`` and ``multigammaln`` are Python functions in scipy that call
``np.asarray`` (which a fastape value refuses), so scipy's own cannot record: call
these. ``betainc`` (a ufunc of three operands) works both ways. The shape parameters
of ``gammainc``/``gammaincc``/``betainc`` and the orders of the Bessel functions
(``jv``, ``iv``, ``ive``, ``yn``) are not differentiated: a fastape value there
raises NotImplementedError.
"""

from fastape import _ufuncs, registry
from fastape._special import betainc, multigammaln, polygamma
from fastape._stats import log_softmax, logsumexp, softmax

#: scipy.special name -> the registry op's public function
_UFUNCS = {d.split(".")[-1]: _ufuncs.ELEMENTWISE[e.public]
           for e in registry.ELEMENTWISE for d in e.numpy if d.startswith("scipy.special.")}
globals().update(_UFUNCS)

__all__ = ["logsumexp", "softmax", "log_softmax", "polygamma", "multigammaln", "betainc",
           *sorted(_UFUNCS)]
