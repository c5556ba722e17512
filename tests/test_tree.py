"""Argument structure (fastape._tree) and its use by grad, value_and_grad and compile:
namedtuple, dict and nested arguments checked against central differences and closed
forms, structure errors that name the path, and arguments that are never mutated."""

import collections
import copy
import dataclasses

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft
from fastape._tree import describe, difference, flatten, normalize_argnums, unflatten
from fastape.errors import ShapeError

Params = collections.namedtuple("Params", "w b")
Other = collections.namedtuple("Other", "w b")


def loss(p, X, y):
    """A least-squares loss of a linear model with parameters p = Params(w, b)."""
    r = np.sum(X * p.w, axis=1) + p.b - y
    return np.sum(r * r)


def loss_grad(p, X, y):
    """Its gradient, by hand: 2 Xᵀ r and 2 Σ r."""
    r = X @ p.w + p.b - y
    return 2 * X.T @ r, 2 * np.sum(r)


def dict_loss(p):
    """A function of a nested dict: {'layer': [W, c], 'scale': s} (W a matrix)."""
    W, c = p["layer"]
    return np.sum(np.tanh(W * c) ** 2) * p["scale"] + np.sum(W) * c


def dict_loss_fd(p):
    """Central differences of dict_loss, leaf by leaf, rebuilding the dict by hand."""
    W, c = p["layer"]
    s = p["scale"]
    fd = {"layer": [central_diff(lambda W: dict_loss({"layer": [W, c], "scale": s}), [W], 0),
                    central_diff(lambda c: dict_loss({"layer": [W, c], "scale": s}), [c], 0)],
          "scale": central_diff(lambda s: dict_loss({"layer": [W, c], "scale": s}), [s], 0)}
    return {k: fd[k] for k in p}            # in p's key order, as a gradient comes back


def assert_tree_close(got, want, rtol=1e-6, atol=1e-8):
    """Same structure (types, key order, lengths), leaves close; a number must come
    back as a Python float, an array as an array of the same shape."""
    if isinstance(want, (float, int)):       # np.float64 too
        assert type(got) is float
    else:
        assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            assert_tree_close(got[k], want[k], rtol, atol)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert_tree_close(a, b, rtol, atol)
    elif want is None:
        assert got is None
    else:
        if isinstance(want, np.ndarray):
            assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.fixture
def data(rng):
    X = rng.normal(size=(8, 3))
    y = rng.normal(size=8)
    p = Params(rng.normal(size=3), 0.3)
    return p, X, y


@pytest.fixture
def nested(rng):
    return {"scale": 1.7, "layer": [rng.normal(size=(2, 3)), 0.6]}


# ---------------------------------------------------------------------------
# the pytree module itself
# ---------------------------------------------------------------------------

def test_flatten_order_and_round_trip():
    w = np.arange(3.0)
    tree = {"z": [1, (2.5, w)], "a": Params(w=np.float32(4.0), b=None), "m": None}
    leaves, td = flatten(tree)
    # dict children by sorted key: a, m, z; numbers become floats, arrays stay as they are
    assert leaves[:2] == [4.0, 1.0] and leaves[2] == 2.5 and leaves[3] is w
    assert all(type(x) is float for x in leaves[:3])
    assert td.num_leaves == 4 and td.leaf_shapes == ((), (), (), (3,))
    back = unflatten(td, leaves)
    assert list(back) == ["z", "a", "m"]                    # insertion order kept
    assert type(back["a"]) is Params and back["a"].b is None and back["m"] is None
    assert type(back["z"]) is list and type(back["z"][1]) is tuple
    assert back["z"][1][1] is w


def test_dict_types_are_kept():
    od = collections.OrderedDict([("b", 1.0), ("a", 2.0)])
    dd = collections.defaultdict(list, {"b": 1.0, "a": 2.0})
    for d in (od, dd):
        leaves, td = flatten(d)
        assert leaves == [2.0, 1.0]
        back = unflatten(td, [10.0, 20.0])
        assert type(back) is type(d) and list(back.items()) == [("b", 20.0), ("a", 10.0)]
    assert unflatten(flatten(dd)[1], [0.0, 0.0]).default_factory is list

    class Factory:                      # callable, and unhashable (it defines __eq__)
        def __call__(self):
            return 0.0

        def __eq__(self, other):
            return isinstance(other, Factory)

    dd = collections.defaultdict(Factory(), {"b": 1.0})
    leaves, td = flatten(dd)
    assert td == flatten(collections.defaultdict(list, {"b": 2.0}))[1]   # not structure
    assert type(unflatten(td, leaves).default_factory) is Factory


def test_treedef_equality():
    def td(x):
        return flatten(x)[1]

    a = td({"w": np.ones(3), "b": 0.0})
    assert a == td({"b": 1.0, "w": np.zeros(3)})               # key order is not structure
    assert hash(a) == hash(td({"b": 1.0, "w": np.zeros(3)}))
    assert a != td({"w": np.ones(4), "b": 0.0})                # shapes are
    assert a != td({"w": np.ones(3), "c": 0.0})
    assert td([1.0, 2.0]) != td((1.0, 2.0))
    assert td(Params(1.0, 2.0)) != td(Other(1.0, 2.0)) != td((1.0, 2.0))
    assert td(0.5) == td(np.array(0.5)) == td(np.float32(0.5)) == td(3)
    assert td([None]) != td([0.0])
    # the fast paths hand out the same objects as the general one
    assert flatten((0.5,))[1] is flatten((2,))[1]
    x = np.ones((2, 5))
    assert flatten((x.astype(np.int32),))[1] is flatten((x,))[1]
    assert flatten(x)[1] is flatten(x.copy())[1]
    assert flatten((x, 1.0))[1] is flatten((x, 2.0))[1]


def test_describe_and_difference():
    leaves, td = flatten(({"w": [1.0, np.ones(3)], "b": None}, Params(np.ones((2, 2)), 1.0)))
    assert describe(td) == ("({'b': None, 'w': [scalar, array(3,)]}, "
                            "Params(w=array(2, 2), b=scalar))")
    _, other = flatten(({"w": [1.0, np.ones(4)], "b": None}, Params(np.ones((2, 2)), 1.0)))
    assert difference(other, td, "args") == (
        "args[0]['w'][1] is an array of shape (4,), expected an array of shape (3,)")
    _, other = flatten(({"w": [1.0, np.ones(3)], "b": None}, Other(np.ones((2, 2)), 1.0)))
    assert difference(other, td, "args") == (
        "args[1] is an Other namedtuple, expected a Params namedtuple")
    _, other = flatten(({"w": [1.0, np.ones(3)]}, Params(np.ones((2, 2)), 1.0)))
    assert difference(other, td, "args") == (
        "args[0] is a dict with keys ['w'], expected a dict with keys ['b', 'w']")
    _, other = flatten(({"w": [1.0, np.ones(3)], "b": None}, Params(np.ones((2, 2)), 1.0)))
    assert difference(other, td) is None
    assert describe(flatten([1.0] * 100)[1]) == "[scalar, scalar, scalar, … 96 more …, scalar]"


@pytest.mark.parametrize("bad, path, what", [
    ({"w": [1.0, "x"]}, r"args\['w'\]\[1\]", "got str"),
    ([b"x"], r"args\[0\]", "got bytes"),
    ({"w": np.array([1 + 2j], dtype=np.clongdouble)}, r"args\['w'\]", "complex128"),
    ((np.array([None, 1.0]),), r"args\[0\]", "dtype object"),
    ([object()], r"args\[0\]", "got object"),
    ({1: 1.0, "a": 2.0}, r"args is a dict whose keys cannot be sorted", ""),
])
def test_bad_leaves_name_their_path(bad, path, what):
    with pytest.raises(TypeError, match=rf"^compiled f: {path}.*{what}"):
        flatten(bad, "args", "compiled f")


def test_unflatten_checks_the_number_of_leaves():
    with pytest.raises(ValueError, match="2 leaves, got 3"):
        unflatten(flatten([1.0, 2.0])[1], [1.0, 2.0, 3.0])


def test_normalize_argnums():
    assert normalize_argnums(0, 2, "f") == (True, (0,))
    assert normalize_argnums(-1, 3, "f") == (True, (2,))
    assert normalize_argnums((0, -1), 3, "f") == (False, (0, 2))
    assert normalize_argnums([1], 3, "f") == (False, (1,))
    assert normalize_argnums(np.int64(1), 3, "f") == (True, (1,))
    with pytest.raises(ValueError, match=r"^grad of f: argnums=\(0, 3\) is out of range for 3"):
        normalize_argnums((0, 3), 3, "grad of f")
    with pytest.raises(ValueError, match="^compile: argnums=-3"):
        normalize_argnums(-3, 2, "compile")
    with pytest.raises(TypeError, match="^grad of f: argnums must be an int"):
        normalize_argnums(0.5, 2, "grad of f")
    with pytest.raises(TypeError, match="^grad of f: argnums must be an int"):
        normalize_argnums(("a",), 2, "grad of f")


# ---------------------------------------------------------------------------
# grad and value_and_grad
# ---------------------------------------------------------------------------

def test_grad_of_a_namedtuple_closed_form(data):
    p, X, y = data
    v, g = ft.value_and_grad(loss)(p, X, y)
    gw, gb = loss_grad(p, X, y)
    assert type(g) is Params and type(g.b) is float
    assert v == pytest.approx(loss(p, X, y), rel=1e-13)
    np.testing.assert_allclose(g.w, gw, rtol=1e-12)
    assert g.b == pytest.approx(gb, rel=1e-12)
    # and by central differences, field by field
    np.testing.assert_allclose(g.w, central_diff(lambda w: loss(Params(w, p.b), X, y), [p.w], 0),
                               rtol=1e-6)
    assert g.b == pytest.approx(central_diff(lambda b: loss(Params(p.w, b), X, y), [p.b], 0),
                                rel=1e-6)


def test_grad_of_a_nested_dict(nested):
    g = ft.grad(dict_loss)(nested)
    assert list(g) == ["scale", "layer"]                  # the argument's key order
    assert type(g["layer"]) is list and g["layer"][0].shape == (2, 3)
    assert type(g["scale"]) is float and type(g["layer"][1]) is float
    assert_tree_close(g, dict_loss_fd(nested))


def test_argnums_tuple_of_structures(data, nested):
    p, X, y = data

    def f(p, X, q, y):
        return loss(p, X, y) * dict_loss(q)

    v, (gp, gX, gq) = ft.value_and_grad(f, argnums=(0, 1, -2))(p, X, nested, y)
    assert v == pytest.approx(loss(p, X, y) * dict_loss(nested), rel=1e-13)
    gw, gb = loss_grad(p, X, y)
    assert_tree_close(gp, Params(gw * dict_loss(nested), gb * dict_loss(nested)), rtol=1e-12)
    np.testing.assert_allclose(gX, central_diff(lambda X: f(p, X, nested, y), [X], 0),
                               rtol=1e-6)
    fd = dict_loss_fd(nested)
    assert_tree_close(gq, {"scale": fd["scale"] * loss(p, X, y),
                           "layer": [fd["layer"][0] * loss(p, X, y),
                                     fd["layer"][1] * loss(p, X, y)]})
    # the same argument twice
    g0, g0b = ft.grad(f, argnums=(0, 0))(p, X, nested, y)
    assert_tree_close(g0, gp, rtol=1e-14)
    assert_tree_close(g0b, gp, rtol=1e-14)


def test_none_and_zero_d_leaves(rng):
    x = rng.normal(size=3)

    def f(p):
        return np.sum(p["x"] ** 2) * p["s"]

    g = ft.grad(f)({"x": x, "mask": None, "s": np.array(2.0)})
    assert g["mask"] is None
    assert isinstance(g["s"], np.ndarray) and g["s"].shape == ()     # the argument's kind
    assert float(g["s"]) == pytest.approx(np.sum(x ** 2))
    np.testing.assert_allclose(g["x"], 4.0 * x, rtol=1e-14)
    assert ft.grad(lambda a, m: a * 2.0)(1.0, None) == 2.0
    assert ft.grad(lambda a, m: a * 2.0, argnums=1)(1.0, None) is None


def test_constant_function_of_a_structure():
    g = ft.grad(lambda p: 3.0)(Params(np.ones(2), {"k": 1}))
    assert type(g) is Params and type(g.b) is dict
    np.testing.assert_array_equal(g.w, np.zeros(2))
    assert g.b == {"k": 0.0} and type(g.b["k"]) is float


def test_grad_argument_errors():
    with pytest.raises(TypeError, match=r"^grad of f: args\[0\]\['name'\] must be a real number"):
        def f(p):
            return p["x"] * 2.0
        ft.grad(f)({"x": 1.0, "name": "x"})
    # a complex leaf is a value (issue 18): its gradient is a complex zero here
    g = ft.grad(lambda a, p: a * p.w, argnums=(0, 1))(3.0, Params(2.0, 2j))
    assert g == (2.0, Params(3.0, 0j))
    with pytest.raises(ValueError, match=r"^grad of <lambda>: argnums=\(0, 2\)"):
        ft.grad(lambda a, b: a, argnums=(0, 2))(1.0, 2.0)


def test_grad_never_mutates_its_arguments(data, nested):
    p, X, y = data
    for f, args in ((loss, (p, X, y)), (dict_loss, (nested,))):
        before = copy.deepcopy(args)
        g = ft.grad(f)(*args)
        assert_tree_close(args, before, rtol=0, atol=0)
        for leaf in flatten(g)[0]:
            for arg_leaf in flatten(args)[0]:
                assert not np.shares_memory(leaf, arg_leaf)


# ---------------------------------------------------------------------------
# compile
# ---------------------------------------------------------------------------

def test_compile_namedtuple_argument(data, rng):
    p, X, y = data
    F = ft.compile(loss, p, X, y)
    for _ in range(3):
        q = Params(rng.normal(size=3), float(rng.normal()))
        v, g = F.value_and_grad(q, X, y)
        gw, gb = loss_grad(q, X, y)
        assert v == pytest.approx(loss(q, X, y), rel=1e-13) and F(q, X, y) == v
        assert type(g) is Params and type(g.b) is float
        np.testing.assert_allclose(g.w, gw, rtol=1e-12)
        assert g.b == pytest.approx(gb, rel=1e-12)
    # new data of the same shapes needs no re-recording
    X2, y2 = rng.normal(size=X.shape), rng.normal(size=y.shape)
    np.testing.assert_allclose(F.grad(p, X2, y2).w, loss_grad(p, X2, y2)[0], rtol=1e-12)
    assert len(F.traces) == 1


def test_compile_nested_dict_with_argnums(nested, rng):
    def f(q, s):
        return dict_loss(q) * s

    F = ft.compile(f, nested, 2.0, argnums=(0, 1))
    q = {"scale": 0.4, "layer": [rng.normal(size=(2, 3)), -0.9]}
    v, (gq, gs) = F.value_and_grad(q, 3.0)
    assert v == pytest.approx(f(q, 3.0), rel=1e-13)
    fd = dict_loss_fd(q)
    assert_tree_close(gq, {"scale": 3 * fd["scale"],
                           "layer": [3 * fd["layer"][0], 3 * fd["layer"][1]]})
    assert gs == pytest.approx(dict_loss(q), rel=1e-13)
    # a dict built in another order is the same structure; the gradient follows the call
    v2, (gq2, _) = F.value_and_grad({"layer": q["layer"], "scale": q["scale"]}, 3.0)
    assert v2 == v and list(gq2) == ["layer", "scale"]
    np.testing.assert_array_equal(gq2["layer"][0], gq["layer"][0])


def test_compile_vjp_of_a_dict_argument(rng):
    W = rng.normal(size=(3, 2))
    F = ft.compile(lambda p: np.tanh(p["W"]) * p["c"], {"W": W, "c": 0.5})
    ct = rng.normal(size=(3, 2))
    value, g = F.vjp(({"W": W, "c": 2.0},), ct)
    np.testing.assert_allclose(value, np.tanh(W) * 2.0, rtol=1e-14)
    np.testing.assert_allclose(g["W"], ct * 2.0 * (1 - np.tanh(W) ** 2), rtol=1e-13)
    assert g["c"] == pytest.approx(np.sum(ct * np.tanh(W)), rel=1e-13)


def test_compile_retraces_with_structured_arguments():
    F = ft.compile(lambda p: p["x"] * 2.0 if p["s"] > 0 else p["x"] * 3.0, {"x": 1.0, "s": 1.0})
    assert F.grad({"x": 1.0, "s": 1.0}) == {"x": 2.0, "s": 0.0}
    assert F.grad({"x": 1.0, "s": -1.0}) == {"x": 3.0, "s": 0.0}
    assert len(F.traces) == 2


def test_compile_scalar_leaves_of_any_kind():
    F = ft.compile(lambda x: x ** 3, 0.5)
    for x in (2, np.float64(2.0), np.float32(2.0), np.array(2.0), True):
        assert F.grad(x) == pytest.approx(3.0 * float(x) ** 2)
    G = ft.compile(lambda a, m: a * 2.0, 1.0, None)      # None: an empty argument
    assert G.grad(5.0, None) == 2.0


def test_compile_wrong_structure_names_the_path(nested):
    F = ft.compile(lambda q, s: dict_loss(q) * s, nested, 2.0)
    bad = {"scale": 1.0, "layer": [np.ones((2, 2)), 0.6]}
    with pytest.raises(ft.ShapeError) as e:
        F(bad, 2.0)
    msg = str(e.value)
    assert msg.startswith("compiled <lambda>: args[0]['layer'][0] is an array of shape (2, 2), "
                          "expected an array of shape (2, 3)")
    assert "called with ({'layer': [array(2, 2), scalar], 'scale': scalar}, scalar)" in msg
    assert "compiled for ({'layer': [array(2, 3), scalar], 'scale': scalar}, scalar)" in msg
    with pytest.raises(ft.ShapeError, match=r"args\[0\] is a dict with keys \['layer'\], "
                                            r"expected a dict with keys \['layer', 'scale'\]"):
        F({"layer": nested["layer"]}, 2.0)
    with pytest.raises(ft.ShapeError, match=r"args\[0\]\['layer'\] is a tuple of 2, "
                                            r"expected a list of 2"):
        F({"scale": 1.0, "layer": tuple(nested["layer"])}, 2.0)
    with pytest.raises(ft.ShapeError, match=r"args\[1\] is None, expected a scalar"):
        F(nested, None)
    with pytest.raises(TypeError, match=r"^compiled <lambda>: args\[0\]\['scale'\] must be a "
                                        "real number or an array of them, got str"):
        F({"scale": "big", "layer": nested["layer"]}, 2.0)
    P = ft.compile(loss, Params(np.ones(3), 0.0), np.ones((2, 3)), np.ones(2))
    with pytest.raises(ft.ShapeError, match=r"args\[0\] is an Other namedtuple, expected a "
                                            r"Params namedtuple"):
        P(Other(np.ones(3), 0.0), np.ones((2, 3)), np.ones(2))
    with pytest.raises(ft.ShapeError, match=r"args\[0\]\.w is an array of shape \(4,\)"):
        P(Params(np.ones(4), 0.0), np.ones((2, 3)), np.ones(2))


def test_compile_never_mutates_its_arguments(data, nested):
    p, X, y = data
    for f, args in ((loss, (p, X, y)), (lambda q, s: dict_loss(q) * s, (nested, 2.0))):
        before = copy.deepcopy(args)
        F = ft.compile(f, *args, argnums=(0, 1))
        g = F.grad(*args)
        F.value_and_grad(*args)
        assert_tree_close(args, before, rtol=0, atol=0)
        for leaf in flatten(g)[0]:
            for arg_leaf in flatten(args)[0]:
                assert not np.shares_memory(leaf, arg_leaf)


def test_compile_array_leaves_of_any_dtype_and_layout(rng):
    """Floats and float64 arrays take Function's shortcut; everything else goes through
    flatten. Both must give the same values and gradients."""
    def f(x, s):
        return np.sum(np.sin(x) * x) * s

    x = rng.normal(size=6)
    F = ft.compile(f, np.zeros(3), 1.0, argnums=(0, 1))
    want = ft.value_and_grad(f, argnums=(0, 1))(x[::2].copy(), 2.0)
    for a, s in ((x[::2], 2.0),                       # float64, not contiguous
                 (x[::2].astype(">f8"), 2.0),         # another byte order
                 (x[::2].astype(np.float32).astype(np.float64), 2),   # an int scale
                 (np.array([1, 2, 3]), np.float64(2.0))):
        v, (gx, gs) = F.value_and_grad(a, s)
        xa = np.asarray(a, dtype=float)
        assert v == pytest.approx(f(xa, float(s)), rel=1e-13)
        np.testing.assert_allclose(gx, (np.sin(xa) + xa * np.cos(xa)) * float(s), rtol=1e-13)
        assert type(gs) is float and gs == pytest.approx(np.sum(np.sin(xa) * xa), rel=1e-13)
    v, (gx, gs) = F.value_and_grad(x[::2], 2.0)
    assert v == pytest.approx(want[0], rel=1e-14) and gs == pytest.approx(want[1][1], rel=1e-14)
    np.testing.assert_allclose(gx, want[1][0], rtol=1e-14)
    with pytest.raises(ft.ShapeError, match=r"args\[0\] is an array of shape \(6,\)"):
        F(x, 2.0)
    with pytest.raises(ft.ShapeError, match=r"args\[1\] is an array of shape \(1,\)"):
        F(x[:3], np.ones(1))


def test_tape_gradient_keeps_namedtuples_and_dicts():
    P = collections.namedtuple("P", "w b")
    with ft.Tape() as t:
        p = P(t.var(2.0), t.var(np.ones(2)))
        d = {"x": t.var(3.0)}
        y = p.w * d["x"] + ft.sum(p.b) * 2.0
    g = t.gradient(y, {"p": p, "d": d})
    assert isinstance(g["p"], P) and g["p"].w == 3.0 and g["d"]["x"] == 2.0
    np.testing.assert_array_equal(g["p"].b, [2.0, 2.0])


def test_nesting_too_deep_is_a_clear_error():
    deep = 1.0
    for _ in range(20_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more deeply"):
        ft.compile(lambda x: 1.0, deep)
    with pytest.raises(ValueError, match="nested more deeply"):
        ft.grad(lambda x: 1.0)(deep)


# -- dataclasses (issue 13, item 7) ---------------------------------------------------

@dataclasses.dataclass
class Layer:
    w: np.ndarray
    b: float


@dataclasses.dataclass(frozen=True)
class Model:
    layers: list
    scale: float = 1.0
    steps: int = dataclasses.field(default=0, init=False)


def _model_loss(m, x):
    h = x
    for layer in m.layers:
        h = np.tanh(h @ layer.w + layer.b)
    return m.scale * np.sum(h ** 2)


def test_dataclass_arguments_and_gradients():
    """A (frozen, nested) dataclass of arrays is a differentiated argument: the gradient
    is the same dataclass, built without __init__, equal to central differences; grad,
    compile and hessian agree."""
    rng = np.random.default_rng(3)
    m = Model([Layer(rng.standard_normal((3, 2)), 0.1), Layer(rng.standard_normal((2, 2)), -0.2)],
              scale=0.5)
    x = rng.standard_normal((4, 3))
    g = ft.grad(_model_loss)(m, x)
    assert type(g) is Model and type(g.layers[0]) is Layer and g.steps == 0.0
    leaves, td = flatten(m)
    assert describe(td).startswith("Model(layers=[Layer(w=array(3, 2), b=scalar)")

    def f_flat(v):
        return _model_loss(unflatten(td, _split(v, leaves)), x)

    v0 = np.concatenate([np.ravel(a) for a in leaves])
    want = central_diff(f_flat, [v0], 0)
    got = np.concatenate([np.ravel(a) for a in flatten(g)[0]])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    F = ft.compile(_model_loss, m, x)
    v, gc = F.value_and_grad(m, x)
    assert type(gc) is Model
    np.testing.assert_allclose(np.concatenate([np.ravel(a) for a in flatten(gc)[0]]), got,
                               rtol=1e-13)
    assert np.isclose(v, _model_loss(m, x), rtol=1e-14)
    assert m.layers[0].b == 0.1                   # nothing the user had is modified


def _split(v, like):
    out, i = [], 0
    for a in like:
        n = int(np.size(a))
        out.append(v[i:i + n].reshape(np.shape(a)) if np.ndim(a) else float(v[i]))
        i += n
    return out


def test_dataclass_bad_leaf_names_the_field():
    bad = Layer(np.ones(2), "x")
    with pytest.raises(TypeError, match=r"args\[0\]\.b"):
        ft.grad(lambda p: np.sum(p.w))(bad)


def test_dataclass_structure_difference_names_the_field():
    F = ft.compile(lambda p: np.sum(p.w) * p.b, Layer(np.ones(2), 1.0))
    with pytest.raises(ShapeError, match=r"\.w"):
        F(Layer(np.ones(3), 1.0))
