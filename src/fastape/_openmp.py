"""libgomp's wait policy for fastape's threads (issue 14; src/fastape/_threads.pxi).

Imported first by ``fastape/__init__.py``: it loads the compiled core, and with it
libgomp, which reads its environment once, when it loads. Unless the environment says
otherwise (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set), libgomp is loaded with
``OMP_WAIT_POLICY=PASSIVE``: a thread that has no chunk left sleeps at once instead of
spinning for about a millisecond first. A spinning thread takes the core that the
thread it waits for needs when another process has the other cores: on this 2-core
machine, with a test suite running beside it, the whole-array Rosenbrock's compiled
gradient (n = 10^5) took 15.4 ms a call on 2 spinning threads, 0.99 ms on one and
0.52 ms on 2 sleeping ones. The variable is removed again once libgomp has read it,
so subprocesses inherit the caller's environment unchanged. ``OMP_WAIT_POLICY=ACTIVE``
(a machine of one's own) keeps libgomp's spinning. If libgomp was loaded before
fastape (by another library), its policy is whatever that load read.
"""

import os

_OURS = not any(k in os.environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
if _OURS:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
try:
    from fastape import _tape  # noqa: F401 - loads libgomp
finally:
    if _OURS:
        del os.environ["OMP_WAIT_POLICY"]
