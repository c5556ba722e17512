"""Run by tests/test_errors.py in a child process with a capped address space: a
gradient() whose adjoint arena cannot be allocated raises MemoryError and leaves the
tape as it was (the adjoints of the last sweep still readable)."""
import os
import resource

import numpy as np

import fastape as ft

t = ft.Tape()
with t:
    s = t.var(3.0)
    small = s * s
    t.gradient(small, s)
    big = t.var(np.zeros(50_000_000))            # 400 MB of values, as much for adjoints
    y = ft.sum(big) + small
    vm = int(open(f"/proc/{os.getpid()}/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + 100 * 2**20, resource.RLIM_INFINITY))
    try:
        t.gradient(y, big)
        print("no MemoryError")
    except MemoryError:
        print("MemoryError")
    print("adjoint", t.adjoint(s))               # the last sweep's: d(s*s)/ds = 6
    print("record", (s * 2.0).value)
