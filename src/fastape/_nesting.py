"""Which tape is recording, per thread: the state nested transforms consult.

``grad``, ``jvp`` and the other transforms record a function on a tape; a transform
called while another one's function runs (``grad(grad(f))``, ``grad`` inside a
function being compiled) must record its derivative on that same tape, so that the
outer transform differentiates through it (fastape._rules records the inner
reverse sweep). Each recording pushes its tape here for the duration of the call.
"""

import threading


class _Stack(threading.local):
    def __init__(self):
        self.tapes = []


_local = _Stack()


def active():
    """The innermost tape recording a transform's function in this thread, or None."""
    tapes = _local.tapes
    return tapes[-1] if tapes else None


def tapes():
    """This thread's stack of recording tapes (push and pop in a try/finally)."""
    return _local.tapes


class recording:
    """``with recording(tape):`` marks `tape` as the one recording while the block runs
    (a class, not a generator: it is entered on every eager grad call)."""

    __slots__ = ("tape",)

    def __init__(self, tape):
        self.tape = tape

    def __enter__(self):
        _local.tapes.append(self.tape)
        return self.tape

    def __exit__(self, *exc):
        _local.tapes.pop()
        return False
