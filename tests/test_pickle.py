"""Pickling and copying tapes and compiled functions (through the file format of
fastape._format), in this process and in real worker processes."""

import copy
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft


def loss(x):
    """A branchy module-level function (picklable by reference)."""
    if x[0] > 0:
        return ft.sum(ft.sin(x) * x)
    return ft.sum(x ** 3)


def loss_np(x):
    return np.sum(np.sin(x) * x) if x[0] > 0 else np.sum(x ** 3)


@ft.custom_vjp
def clipped(x):
    return x * 2.0


clipped.defvjp(lambda x: (x * 2.0, None), lambda res, g: (g * 0.5,))   # a deliberate rule


def with_rule(x):
    return ft.sum(clipped(x) * x)


X = np.array([0.3, -0.7, 1.2])


def test_pickle_round_trip_and_retrace():
    F = ft.compile(loss, X)
    G = pickle.loads(pickle.dumps(F))
    assert G.fun is loss
    assert G(X) == F(X)
    np.testing.assert_array_equal(G.grad(X), F.grad(X))
    np.testing.assert_allclose(G.grad(X), central_diff(loss_np, [X], 0), rtol=1e-7)
    y = -X                                  # another branch: re-recorded from `loss`
    assert G(y) == pytest.approx(loss_np(y), rel=1e-14)
    assert len(G.traces) == 2 and len(F.traces) == 1


def test_unpicklable_source_function_says_so():
    F = ft.compile(lambda x: ft.sum(x * x), X)
    with pytest.raises(TypeError, match="source function by reference.*cannot be pickled"):
        pickle.dumps(F)
    H = ft.compile(lambda x: ft.sum(x * x) if x[0] > 0 else ft.sum(x), X, retrace=False)
    K = pickle.loads(pickle.dumps(H))
    assert K.fun is None and K(X) == H(X)
    with pytest.raises(ft.BranchChanged):
        K(-X)


def test_deepcopy_needs_no_pickling():
    F = ft.compile(lambda x: ft.sum(x * x) if x[0] > 0 else ft.sum(x), X)
    G = copy.deepcopy(F)
    assert G is not F and G.fun is F.fun
    assert G.traces[0].tape is not F.traces[0].tape
    np.testing.assert_array_equal(G.grad(X), F.grad(X))
    assert G(-X) == np.sum(-X)              # retraces through the shared source function
    assert len(F.traces) == 1
    assert copy.copy(F)(X) == F(X)


def test_tape_pickle_and_deepcopy():
    with ft.Tape() as t:
        x = t.var(X)
        y = ft.sum(ft.exp(x) @ np.ones((3, 2)))
    for u in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        assert u.closed and len(u) == len(t)
        np.testing.assert_array_equal(u.gradient(u.node(len(u) - 1), u.node(0)),
                                      t.gradient(y, x))


def test_custom_rules_travel_with_the_pickle():
    F = ft.compile(with_rule, X)
    G = pickle.loads(pickle.dumps(F))
    # the rule's own (deliberately not the true) derivative: d/dx (2x·x) by the rule is
    # 0.5·x + 2x
    np.testing.assert_allclose(G.grad(X), 0.5 * X + 2 * X, rtol=1e-15)
    np.testing.assert_array_equal(G.grad(X), F.grad(X))


def _work(F, x):
    return F.value_and_grad(x)


def test_process_pool_executor():
    """The function goes to fresh interpreters (spawn: nothing inherited) as an argument."""
    F = ft.compile(loss, X)
    points = [X * s for s in (1.0, 0.5, 2.0, -1.0)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        got = list(ex.map(_work, [F] * len(points), points))
    for (v, g), x in zip(got, points, strict=True):
        v0, g0 = ft.compile(loss, x).value_and_grad(x)
        assert v == v0
        np.testing.assert_array_equal(g, g0)


def test_subprocess_reads_a_pickle(tmp_path):
    F = ft.compile(loss, X)
    (tmp_path / "f.pkl").write_bytes(pickle.dumps(F))
    code = ("import json, pickle, sys, numpy as np; sys.path.insert(0, sys.argv[2]); "
            "F = pickle.load(open(sys.argv[1], 'rb')); "
            "v, g = F.value_and_grad(np.array([0.3, -0.7, 1.2])); "
            "print(json.dumps([v, list(g)]))")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.pkl"),
                          os.path.dirname(__file__)], capture_output=True, text=True,
                         env=env, check=True, timeout=120)
    v, g = json.loads(out.stdout)
    v0, g0 = F.value_and_grad(X)
    assert v == v0 and g == list(g0)
