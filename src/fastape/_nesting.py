"""Which tape is recording, per thread: the state nested transforms consult.

``grad``, ``jvp`` and the other transforms record a function on a tape; a transform
called while another one's function runs (``grad(grad(f))``, ``grad`` inside a
function being compiled) must record its derivative on that same tape, so that the
outer transform differentiates through it (fastape._rules records the inner
reverse sweep). Each recording pushes its tape here for the duration of the call.
"""

import contextlib
import threading

_local = threading.local()


def active():
    """The innermost tape recording a transform's function in this thread, or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def recording(tape):
    """Mark `tape` as the one recording while the block runs."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(tape)
    try:
        yield tape
    finally:
        stack.pop()
