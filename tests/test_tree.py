"""Argument structure (fastape._tree): flatten and unflatten of nested lists, tuples,
namedtuples, dicts and None, treedef equality, descriptions, errors that name the
path, and argnums."""

import collections

import numpy as np
import pytest

from fastape._tree import describe, difference, flatten, normalize_argnums, unflatten

Params = collections.namedtuple("Params", "w b")
Other = collections.namedtuple("Other", "w b")


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
    (Params(1.0, 1j), r"args\.b", "complex"),
    ({"w": np.array([1 + 2j])}, r"args\['w'\]", "complex"),
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
