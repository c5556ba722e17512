"""The file format of tapes and compiled functions (fastape._format): round trips for
every op of the registry, the layout and its refusals, and a mutation fuzzer.

The round trips compare a loaded function with the one that was saved, bit for bit,
on values, gradients, tangents and Hessian-vector products at new points; the
originals themselves are checked against finite differences elsewhere
(test_ops, test_compiled), and here once more for the structural program.

The fuzzer mutates saved files (``FASTAPE_FORMAT_FUZZ_N`` mutations, default 10000):
raw bytes (flips, truncation, splices), and fields rewritten with fresh checksums so
that the validation, not the checksum, must catch them (out-of-range parents,
offsets and parameters, unknown opcodes, inconsistent sizes, wrong versions). Every
mutated file must load or raise TapeFormatError; one that loads is swept, which
under the ASan build (.ci/asan) proves that no accepted file reads out of bounds.
"""

import io
import json
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
from helpers import central_diff
from test_ops import ELEMENTWISE_ROWS, _points

import fastape as ft
from fastape import _format, registry
from fastape._ops import Op

FUZZ_N = int(os.environ.get("FASTAPE_FORMAT_FUZZ_N", "10000"))
FUZZ_SEED = int(os.environ.get("FASTAPE_FORMAT_FUZZ_SEED", "2026"))


def _bytes_of(obj):
    """The file of a tape or function, as bytes."""
    if isinstance(obj, ft.Tape):
        return _format.tape_reduce(obj)[1][0]
    header, arrays, _ = _format._function_parts(obj)
    return _format._to_bytes(header, arrays)


def _opcodes(F):
    return {int(o) for tr in F.traces for o in tr.tape.opcodes()}


# ---------------------------------------------------------------------------
# programs that, together, record every op of the registry
# ---------------------------------------------------------------------------

def _structural(x, A, b):
    y = x[1] * x[[0, 2, 1, 1]] + x[::2].sum()          # GATHER1, GATHER, STRIDED, SUM
    M = x * A[:2, :]                                   # BROADCAST
    z = ft.prod(M, axis=1) + ft.max(M, axis=0).sum() + ft.min(M)
    z = z.sum() + ft.cumsum(x).sum() + ft.cumprod(x)[-1] + ft.dot(x, x)
    w = ft.where(np.array([True, False, True, False]), x, x * 2.0)
    c = ft.concatenate([w, x[:2]])
    m = ft.matmul(A, c[:4]) + A.T @ b
    s = ft.linalg.solve(A[:3, :3] + 3.0 * np.eye(3), b[:3])
    d = ft.linalg.det(A[:3, :3] + 2.0 * np.eye(3))
    _, ld = ft.linalg.slogdet(A[:3, :3] + 2.0 * np.eye(3))
    return (y.sum() + z + m.sum() + s.sum() + d + ld + ft.linalg.norm(x)
            + _scaled(x).sum())


@ft.custom_vjp
def _scaled(x):
    return x * 3.0


_scaled.defvjp(lambda x: (x * 3.0, None), lambda res, g: (g * 3.0,))


def _structural_np(x, A, b):
    """_structural in plain numpy, for finite differences."""
    y = x[1] * x[[0, 2, 1, 1]] + x[::2].sum()
    M = np.broadcast_to(x, (2, 4)) * A[:2, :]
    z = np.prod(M, axis=1) + np.max(M, axis=0).sum() + np.min(M)
    z = z.sum() + np.cumsum(x).sum() + np.cumprod(x)[-1] + np.dot(x, x)
    w = np.where(np.array([True, False, True, False]), x, x * 2.0)
    c = np.concatenate([w, x[:2]])
    m = A @ c[:4] + A.T @ b
    s = np.linalg.solve(A[:3, :3] + 3.0 * np.eye(3), b[:3])
    d = np.linalg.det(A[:3, :3] + 2.0 * np.eye(3))
    ld = np.linalg.slogdet(A[:3, :3] + 2.0 * np.eye(3))[1]
    return y.sum() + z + m.sum() + s.sum() + d + ld + np.linalg.norm(x) + (3.0 * x).sum()


def _row_programs():
    """Per elementwise row: scalar (scalar layout), arrays (general layout) and its
    compiled gradient (the derived partial ops of nested derivatives)."""
    rng = np.random.default_rng(5)
    out = []
    for row in ELEMENTWISE_ROWS:
        fn = row.fn
        args = _points(row, rng)
        out.append((row.name, lambda *a, fn=fn: fn(ft, *a), args))
        if "reshape" not in row.expr:
            arr = _points(row, rng, (3,))
            out.append((row.name + "[3]", lambda *a, fn=fn: ft.sum(fn(ft, *a)), arr))
        g = ft.grad(lambda *a, fn=fn: fn(ft, *a), tuple(range(row.arity)))
        out.append((row.name + "'", lambda *a, g=g: ft.stack(list(g(*a))) if len(a) > 1
                    else g(*a)[0], args))
    return out


ROW_PROGRAMS = _row_programs()


def _structural_args():
    rng = np.random.default_rng(1)
    return rng.uniform(0.5, 1.5, 4), rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, 4)


def _compiled_programs():
    funs = [ft.compile(f, *a) for _, f, a in ROW_PROGRAMS]
    funs.append(ft.compile(_structural, *_structural_args(), argnums=(0, 1, 2)))
    return funs


def test_programs_record_every_op_of_the_registry():
    """Derived from what the tapes hold: an op without a program fails here."""
    seen = set()
    for F in _compiled_programs():
        seen |= _opcodes(F)
    missing = {name for name, code in registry.opcodes().items() if code not in seen}
    assert not missing, missing


def _same(a, b):
    for x, y in zip(np.atleast_1d(np.asarray(a, dtype=object)).ravel(),
                    np.atleast_1d(np.asarray(b, dtype=object)).ravel(), strict=True):
        np.testing.assert_array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def _check_round_trip(F, G, args):
    assert G.nodes == F.nodes
    assert [len(t.tape) for t in G.traces] == [len(t.tape) for t in F.traces]
    _same(F(*args), G(*args))
    if np.ndim(F(*args)) == 0:
        _same(F.grad(*args), G.grad(*args))
    tangents = args[0] * 0.0 + 0.5
    _same(F.jvp(args, tangents)[1], G.jvp(args, tangents)[1])


@pytest.mark.parametrize("k", range(len(ROW_PROGRAMS)), ids=[p[0] for p in ROW_PROGRAMS])
def test_round_trip_every_elementwise_op(k, tmp_path):
    name, f, args = ROW_PROGRAMS[k]
    F = ft.compile(f, *args, argnums=0)
    path = tmp_path / "f.npz"
    F.save(path)
    G = ft.load(path)
    moved = [a * 0.9 + 0.01 if isinstance(a, float) else a * 0.9 for a in args]
    _check_round_trip(F, G, moved)
    if np.ndim(F(*args)) == 0 and F.traces[0].direct_hvp:
        _same(F.hvp(moved, 0.25 if isinstance(moved[0], float) else moved[0] * 0 + 0.25),
              G.hvp(moved, 0.25 if isinstance(moved[0], float) else moved[0] * 0 + 0.25))


def test_round_trip_structural_ops_against_finite_differences(tmp_path):
    x, A, b = _structural_args()
    F = ft.compile(_structural, x, A, b, argnums=(0, 1, 2))
    F.save(tmp_path / "s.npz")
    with pytest.raises(ft.TapeFormatError, match="custom rule"):
        ft.load(tmp_path / "s.npz")
    G = ft.load(tmp_path / "s.npz", callbacks=F.rules)
    x2, A2, b2 = x * 1.1, A * 0.9, b + 0.1
    assert G(x2, A2, b2) == F(x2, A2, b2)
    assert G(x2, A2, b2) == pytest.approx(_structural_np(x2, A2, b2), rel=1e-12)
    for gf, gg, j in zip(F.grad(x2, A2, b2), G.grad(x2, A2, b2), range(3), strict=True):
        np.testing.assert_array_equal(gf, gg)
        np.testing.assert_allclose(gg, central_diff(_structural_np, [x2, A2, b2], j),
                                   rtol=1e-6, atol=1e-6)
    by_name = ft.load(tmp_path / "s.npz", callbacks={r.name: r for r in F.rules})
    assert by_name(x2, A2, b2) == F(x2, A2, b2)


def test_tape_round_trip(tmp_path):
    x0 = np.array([0.3, 0.7, 1.1])
    with ft.Tape() as t:
        x = t.var(x0)
        y = ft.sum(ft.exp(x) * ft.sin(x) @ np.ones((3, 2)))
    t.save(tmp_path / "t.npz")
    u = ft.Tape.load(tmp_path / "t.npz")
    assert u.closed and len(u) == len(t)
    e, f = t.export(), u.export()
    assert e.keys() == f.keys()
    for k in e:
        np.testing.assert_array_equal(e[k], f[k])
    g = t.gradient(y, x)
    np.testing.assert_array_equal(u.gradient(u.node(len(u) - 1), u.node(0)), g)
    np.testing.assert_allclose(g, 2 * np.exp(x0) * (np.sin(x0) + np.cos(x0)), rtol=1e-14)
    assert type(ft.load(tmp_path / "t.npz")) is ft.Tape
    # a scalar-layout tape
    with ft.Tape() as s:
        a = s.var(0.5)
        c = ft.tanh(a * a) + 2.0 ** a
    s.save(tmp_path / "s.npz")
    v = ft.Tape.load(tmp_path / "s.npz")
    assert v.scalar_layout
    assert v.gradient(v.node(len(v) - 1), v.node(0)) == s.gradient(c, a)


def test_guards_and_retracing_survive(tmp_path):
    def f(x):
        return ft.sum(x * x) if x[0] > 0 else ft.sum(ft.sin(x))

    x = np.array([1.0, 2.0])
    F = ft.compile(f, x)
    F(-x)                               # a second trace
    assert len(F.traces) == 2
    F.save(tmp_path / "f.npz")
    G = ft.load(tmp_path / "f.npz")     # without the source function
    assert len(G.traces) == 2
    for v in (x, -x, 3 * x, -3 * x):
        assert G(v) == F(v)
        np.testing.assert_array_equal(G.grad(v), F.grad(v))
    assert len(G.traces) == 2           # both branches replayed, nothing re-recorded
    H = ft.load(tmp_path / "f.npz", fun=f)
    assert H(x) == F(x)

    def g(x):
        return x[0] * 2.0 if x[1] > 5 else x[0] * 3.0

    K = ft.compile(g, x, max_traces=1)
    K.save(tmp_path / "g.npz")
    L = ft.load(tmp_path / "g.npz")
    with pytest.raises(ft.BranchChanged, match="without its source function"):
        L(np.array([1.0, 6.0]))
    M = ft.load(tmp_path / "g.npz", fun=g)
    assert M(np.array([1.0, 6.0])) == 2.0


def test_argument_structures(tmp_path):
    def f(p, scale):
        return ft.sum(p["w"] * p["b"][0]) * scale

    p = {"w": np.ones(3), "b": (2.0, np.zeros(2))}
    F = ft.compile(f, p, 2.0, argnums=0)
    F.save(tmp_path / "f.npz")
    G = ft.load(tmp_path / "f.npz")
    gf, gg = F.grad(p, 3.0), G.grad(p, 3.0)
    assert list(gg) == ["w", "b"] and type(gg["b"]) is tuple
    np.testing.assert_array_equal(gg["w"], gf["w"])
    assert gg["b"][0] == gf["b"][0] == 9.0
    with pytest.raises(ft.ShapeError):
        G({"w": np.ones(3)}, 3.0)


def test_the_file_is_a_plain_npz_without_pickles(tmp_path):
    F = ft.compile(lambda x: ft.sum(x ** 3), np.ones(3))
    F.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        header = json.loads(z["header"].tobytes())
        assert header["magic"] == "fastape" and header["format_version"] == 1
        assert header["registry"] == _format.registry_fingerprint()
        assert header["kind"] == "function"
        np.testing.assert_array_equal(z["t0.op"], F.traces[0].tape.opcodes())
    with zipfile.ZipFile(tmp_path / "f.npz") as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    G = ft.load(tmp_path / "f.npz", mmap=True)
    assert G(np.full(3, 2.0)) == 24.0


def _rewrite(data, edit):
    header, arrays, _ = _format.read(data)
    edit(header, arrays)
    buf = io.BytesIO()
    zf_header = {k: v for k, v in header.items() if k != "arrays"}
    _format._write(buf, zf_header, arrays)
    return buf.getvalue()


def test_refusals_name_the_field():
    F = ft.compile(lambda x: ft.sum(ft.sin(x) * x), np.ones(3))
    data = _bytes_of(F)
    header, arrays, _ = _format.read(data)
    with pytest.raises(ft.TapeFormatError, match="format version 7.*upgrade fastape"):
        ft.load(_patched(dict(header, format_version=7), arrays))
    with pytest.raises(ft.TapeFormatError, match="field 'registry'"):
        ft.load(_patched(dict(header, registry="0" * 64), arrays))
    with pytest.raises(ft.TapeFormatError, match="field 'magic'"):
        ft.load(_patched(dict(header, magic="other"), arrays))
    assert isinstance(ft.load(_patched(header, arrays)), ft.Function)

    def bad_parent(h, a):
        a["t0.a"] = a["t0.a"].copy()
        a["t0.a"][-1] = len(a["t0.a"]) + 5
    with pytest.raises(ft.TapeFormatError, match=r"field 'a' at node \d+: parent id"):
        ft.load(_rewrite(data, bad_parent))

    def bad_op(h, a):
        a["t0.op"] = a["t0.op"].copy()
        a["t0.op"][-1] = 250
    with pytest.raises(ft.TapeFormatError, match="opcode 250 is unknown"):
        ft.load(_rewrite(data, bad_op))

    def bad_offset(h, a):
        a["t0.off"] = a["t0.off"].copy()
        a["t0.off"][-1] += 1
    with pytest.raises(ft.TapeFormatError, match="field 'off' at node"):
        ft.load(_rewrite(data, bad_offset))
    flipped = bytearray(data)
    start, length, _ = _format._members(io.BytesIO(data), "")["t0.val"]
    flipped[start + length - 3] ^= 0x40                 # a value: the zip CRC-32 catches it
    with pytest.raises(ft.TapeFormatError, match="checksum|corrupt|readable|damaged"):
        ft.load(bytes(flipped))
    with pytest.raises(ft.TapeFormatError, match="not a fastape file"):
        ft.load(b"PK not a zip")
    with pytest.raises(ft.TapeFormatError, match="truncated|readable|not a fastape"):
        ft.load(data[:len(data) // 3])


def _patched(header, arrays):
    """A file whose header is written as given (not re-stamped by _write)."""
    import zlib
    hb = json.dumps(header).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in [("header", np.frombuffer(hb, np.uint8)),
                          ("checksum", np.array([zlib.crc32(hb)], np.uint32))] \
                + list(arrays.items()):
            with zf.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, arr)
    return buf.getvalue()


def test_registry_fingerprint_covers_the_op_table(monkeypatch):
    fp = _format.registry_fingerprint()
    assert len(fp) == 64
    s = registry.STRUCTURAL[0]
    monkeypatch.setattr(registry, "STRUCTURAL",
                        [registry.Structural(s.name, s.kernel, "node")] + registry.STRUCTURAL[1:])
    monkeypatch.setattr(registry, "BY_NAME", dict(registry.BY_NAME,
                                                  **{s.name: registry.STRUCTURAL[0]}))
    monkeypatch.setattr(_format, "_BY_NAME", registry.BY_NAME)
    assert _format.registry_fingerprint() != fp


# ---------------------------------------------------------------------------
# the mutation fuzzer
# ---------------------------------------------------------------------------

def _fuzz_subjects():
    """Small files of both layouts, structural ops, guards and several traces."""
    def branchy(x):
        return ft.sum(x * x) if x[0] > 0 else ft.sum(ft.sin(x))

    F1 = ft.compile(branchy, np.array([1.0, 2.0, 3.0]))
    F1(-np.ones(3))

    def scalar_loop(x):
        s = 0.0
        for i in range(5):
            s = s + ft.tanh(x[i] * x[(i + 1) % 5]) * 2.0
        return s
    F2 = ft.compile(scalar_loop, np.linspace(0.1, 0.5, 5))
    x, A, b = _structural_args()

    def structural_no_rule(x, A, b):
        return _structural(x, A, b) - _scaled(x).sum()
    F3 = ft.compile(lambda x, A, b: structural_no_rule(x, A, b), x, A, b, argnums=(0, 1))
    with ft.Tape() as t:
        v = t.var(np.array([0.5, 1.5]))
        ft.sum(ft.cumprod(v) @ np.ones((2, 2)))
    subjects = [(F1, (np.array([1.0, 2.0, 3.0]),)), (F2, (np.linspace(0.1, 0.5, 5),)),
                (F3, (x, A, b)), (t, None)]
    return [(obj, args, _bytes_of(obj), obj.rules if isinstance(obj, ft.Function) else [])
            for obj, args in subjects]


def _exercise(obj, args):
    """Sweep what loaded: values, gradients, tangents (any Python error is fine)."""
    try:
        if isinstance(obj, ft.Tape):
            obj.forward()
            if len(obj):
                obj.backward(obj.node(len(obj) - 1), np.ones(obj.node(len(obj) - 1).shape)
                             if obj.node(len(obj) - 1).shape else None)
            return
        obj(*args)
        if np.ndim(obj(*args)) == 0:
            obj.value_and_grad(*args)
        obj.jvp(args, args[0] * 0 + 1.0)
    except (ft.FastapeError, ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError,
            IndexError):
        pass


def _mutations(data, rng):
    """Yield mutations of a file: ("bytes", its bytes with raw damage: flips,
    truncation, random splices), or ("parts", (header, arrays)) read from it with one
    field changed, which bypasses the checksums (a forged file has valid ones) so that
    the validation itself must catch it: an opcode, a parent, an offset, a parameter,
    a value, an array's length, a header field."""
    header, arrays, _ = _format.read(data)
    names = sorted(arrays)
    while True:
        kind = rng.integers(10)
        if kind < 3:
            b = bytearray(data)
            if kind == 0:
                for _ in range(rng.integers(1, 4)):
                    b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
            elif kind == 1:
                b = b[:rng.integers(len(b))]
            else:
                i, j = sorted(rng.integers(len(b), size=2))
                b[i:j] = bytes(rng.integers(256, size=j - i, dtype=np.uint8))
            yield "bytes", bytes(b)
            continue
        h = json.loads(json.dumps(header))
        a = dict(arrays)
        if kind < 8:
            name = names[rng.integers(len(names))]
            x = np.array(a[name])
            if x.size == 0 or rng.random() < 0.1:
                x = x[:-1] if x.size else np.zeros((1,) + x.shape[1:], x.dtype)
            else:
                i = rng.integers(x.size)
                if x.dtype == np.float64:
                    x.flat[i] = rng.choice([np.nan, -1.0, 1e300, x.flat[i] + 1, 0.5, 3.0])
                else:
                    info = np.iinfo(x.dtype)
                    choice = rng.integers(6)
                    if choice == 0:
                        v = rng.integers(info.min, info.max, dtype=np.int64, endpoint=True)
                    elif choice == 1:
                        v = x.flat[i] + rng.integers(-3, 4)
                    elif choice == 2:
                        v = -1
                    elif choice == 3:
                        v = rng.integers(0, 2 * x.size + 2)
                    elif choice == 4:
                        v = x.flat[rng.integers(x.size)]
                    else:
                        v = rng.integers(0, 256) if x.dtype == np.uint8 else 2**31 - 1
                    x.flat[i] = np.array(v).astype(x.dtype)
            a[name] = x
        else:
            targets = [h["tapes"][0]] + ([h["function"], h["function"]["traces"][0]]
                                         if "function" in h else [])
            target = targets[rng.integers(len(targets))]
            keys = [k for k in target if k != "rules"] or ["n"]
            k = keys[rng.integers(len(keys))]
            target[k] = [None, -1, 0, 1, 2, 10**12, "x", [], {}, True][rng.integers(10)]
        yield "parts", (h, a)


def test_mutation_fuzzer():
    """FUZZ_N mutations: each loads cleanly or raises TapeFormatError; a file that
    loads is swept (no crash, no hang, nothing out of bounds under ASan). The refusals
    must come from many fields, so the checks, not only the checksum, are exercised."""
    rng = np.random.default_rng(FUZZ_SEED)
    subjects = _fuzz_subjects()
    gens = [_mutations(data, rng) for _, _, data, _ in subjects]
    loaded = 0
    fields = set()
    for q in range(FUZZ_N):
        k = q % len(subjects)
        obj, args, _, rules = subjects[k]
        how, m = next(gens[k])
        try:
            if how == "bytes":
                out = _format.load(m, callbacks=rules or None)
            else:
                out = _format.from_parts((*m, "forged"), callbacks=rules or None)
        except ft.TapeFormatError as e:
            f = re.search(r"field '([^']*)'", str(e))
            fields.add(f.group(1).split(".")[-1] if f else str(e).split(": ")[1][:20])
            continue
        loaded += 1
        if isinstance(out, ft.Function) == isinstance(obj, ft.Function):
            _exercise(out, args)
    assert loaded > 0           # some mutations are harmless (a value changed)
    if FUZZ_N >= 2000:
        for f in ("op", "a", "b", "off", "poff", "P", "val", "checksum", "inputs",
                  "guards", "output"):
            assert f in fields, (f, sorted(fields))


def test_op_names_of_the_fuzzed_files_cover_structural_ops():
    ops = set()
    for obj, _, _, _ in _fuzz_subjects():
        ops |= ({int(o) for o in obj.opcodes()} if isinstance(obj, ft.Tape) else _opcodes(obj))
    for name in ("GATHER", "STRIDED", "BROADCAST", "CONCAT", "MATMUL", "LU", "SOLVE", "DET",
                 "WHERE", "CUMPROD", "NORM"):
        assert Op[name] in ops, name


# ---------------------------------------------------------------------------
# sizes: nbytes exact, a tape that cannot grow names its size
# ---------------------------------------------------------------------------

def _traced(build):
    """(result of build(), bytes it left allocated) measured by tracemalloc, which sees
    the tape's PyMem buffers: an independent count of what nbytes claims."""
    import gc
    import tracemalloc
    gc.collect()
    limit = ft.arena_pool()["limit"]
    ft.arena_pool(limit=0)      # no pooled arena of an earlier test: fresh buffers only
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = build()
        gc.collect()
        return out, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        ft.arena_pool(limit=limit)


def test_tape_nbytes_is_exact():
    def scalar():
        with ft.Tape() as t:
            x = t.var(0.5)
            s = x
            for _ in range(20000):
                s = s * 0.999 + x
        t.gradient(s, x)
        return t

    t, traced = _traced(scalar)
    n = len(t)
    # records, values, adjoints, and one pool entry: the 20,000 immediates 0.999 share it
    assert t.nbytes == n * (1 + 4 + 4 + 8 + 8) + 8
    assert abs(traced - t.nbytes) < 0.01 * t.nbytes + 50_000, (traced, t.nbytes)

    def general():
        with ft.Tape() as t:
            x = t.var(np.ones(1000))
            y = ft.sum(ft.cumsum(ft.sin(x) * x) @ np.ones((1000, 3)))
        t.gradient(y, x)
        t.forward_tangents([x], [np.ones(1000)])
        return t

    t, traced = _traced(general)
    e = t.export()
    records = sum(a.nbytes for a in e.values())                  # op a b val pool off poff P
    assert t.nbytes == records + e["val"].nbytes * 2              # + adjoints + tangents
    assert abs(traced - t.nbytes) < 0.01 * t.nbytes + 50_000, (traced, t.nbytes)


def test_function_nbytes_is_exact():
    def build():
        F = ft.compile(lambda x: ft.sum(ft.tanh(x) * x) if x[0] > 0 else ft.sum(x),
                       np.ones(20000))
        F.grad(np.ones(20000))
        F.grad(-np.ones(20000))                 # a second trace
        return F

    F, traced = _traced(build)
    assert len(F.traces) == 2
    assert abs(traced - F.nbytes) < 0.02 * F.nbytes + 100_000, (traced, F.nbytes)
    tapes = sum(tr.tape.nbytes for tr in F.traces)
    assert F.nbytes >= tapes


def test_memory_error_names_the_tape_size():
    """In a child whose address space is capped, recording past the cap raises
    MemoryError naming the tape's nodes and bytes, never a crash."""
    import subprocess
    import sys
    code = """
import os, resource, fastape as ft
vm = int(open(f"/proc/{os.getpid()}/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))
try:
    with ft.Tape() as t:
        x = t.var(1.0)
        s = x
        while True:
            s = s * 1.0000001
except MemoryError as e:
    print("MemoryError", e)
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("RLIMIT_AS and /proc")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"MemoryError fastape: .*tape of \d+ nodes \(\d+ bytes held\)",
                     out.stdout), out.stdout


def test_records_are_read_into_the_tape_and_adopted_once():
    """load reads a tape's records straight into its buffers (no copy after the
    checks); the parts it read are then spent, so that nothing reads the tape's memory
    through them (a copy made before is loaded by copying)."""
    with ft.Tape() as t:
        x = t.var(np.array([0.5, 1.5]))
        y = ft.sum(ft.exp(x))
    parts = _format.read(_bytes_of(t))
    assert len(parts[1].homes) == 1
    copy_first = (parts[0], dict(parts[1]), "copied")
    w = _format.from_parts(copy_first)            # not the home's arrays: a copy
    u = _format.from_parts(parts)
    assert parts[1].homes[0][0] is u and w is not u
    with pytest.raises(ft.TapeFormatError, match="missing"):
        _format.from_parts(parts)
    np.testing.assert_array_equal(u.gradient(u.node(len(u) - 1), u.node(0)), t.gradient(y, x))
    np.testing.assert_array_equal(w.export()["val"], t.export()["val"])


# ---------------------------------------------------------------------------
# the checksum, the container, and the deferred (mmap=True) load
# ---------------------------------------------------------------------------

def test_crc32_is_zlibs():
    """The folded CRC-32 (and its bitwise fallback) against zlib.crc32 over lengths
    around the fold's 64- and 16-byte steps, unaligned starts and running values."""
    import zlib

    from fastape import _tape
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 256, 1 << 14, dtype=np.uint8).tobytes()
    lengths = list(range(0, 200)) + [255, 256, 257, 1000, 4095, 4096, 12345]
    for q, n in enumerate(lengths):
        s = q % 37
        d = memoryview(buf)[s:s + n]
        crc = int(rng.integers(2**32)) if q % 2 else 0
        assert _tape._crc32(d, crc) == zlib.crc32(d, crc), (n, s)
        assert _tape._crc32(d, crc, False) == zlib.crc32(d, crc), (n, s)
    assert _format._crc32(memoryview(buf), 7) == zlib.crc32(buf, 7)


def test_zip64_end_records_read_everywhere(tmp_path, monkeypatch):
    """The ZIP64 end records (written past 4 GiB of members) read with zipfile, numpy
    and fastape: forced here on a small file."""
    monkeypatch.setattr(_format, "_ZIP64_END_FROM", 0)
    t = _fuzz_subjects()[-1][0]
    t.save(tmp_path / "t.npz")
    data = (tmp_path / "t.npz").read_bytes()
    assert b"PK\x06\x06" in data[-200:] and b"PK\x06\x07" in data[-200:]
    with zipfile.ZipFile(tmp_path / "t.npz") as zf:
        assert zf.testzip() is None
    with np.load(tmp_path / "t.npz") as z:
        np.testing.assert_array_equal(z["t0.val"], t.export()["val"])
    u = ft.Tape.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(u.export()["val"], t.export()["val"])


def _member_data(path, name):
    """(start, length) of a member's array data in the file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        nlen, elen = np.frombuffer(f.read(4), "<u2")
    start = info.header_offset + 30 + int(nlen) + int(elen)
    hdr = len(_format._npy_header("<f8", (1,)))      # 128 bytes for these shapes
    return start + hdr, info.file_size - hdr


def _mmap_case(how, m, load, first_use, at):
    """One mutated file `m` (raw bytes, or ("parts", (header, arrays)) forged and written
    with fresh checksums) through an mmap=True load and a first use, counted in `at` by
    where it was refused; the loaded object when neither refused it, else None."""
    if how == "parts":
        h, a = m
        try:
            m = _format._to_bytes({k: v for k, v in h.items() if k != "arrays"}, a)
        except (TypeError, ValueError, KeyError, AttributeError):
            return None                 # a header the writer cannot even write
    try:
        x = load(m)
    except ft.TapeFormatError:
        at["load"] += 1
        return None
    try:
        first_use(x)
    except ft.TapeFormatError:
        at["first use"] += 1
        return None
    at["clean"] += 1
    return x


def _count_reads(monkeypatch):
    """The names of the members the format reads from now on, in order (a list that
    grows as they are read)."""
    read = []
    real = _format._read_array

    def counting(f, member, name, *a, **k):
        read.append(name)
        return real(f, member, name, *a, **k)
    monkeypatch.setattr(_format, "_read_array", counting)
    return read


def test_mmap_load_reads_no_records_until_first_use(tmp_path, monkeypatch):
    """Tape.load(mmap=True) reads the directory and the header only: a damaged value
    is found at the first use (and at every later one), not at the load; the eager
    load finds it at once. Counting the members read makes it fail if a load reads
    the records."""
    t, s, x = _scalar_tape(2000)
    path = tmp_path / "t.npz"
    t.save(path)
    read = _count_reads(monkeypatch)
    u = ft.Tape.load(path, mmap=True)
    assert read == ["header", "checksum"]
    assert len(u) == len(t) and not u.released and u.nbytes == t.nbytes
    np.testing.assert_array_equal(u.opcodes(), t.opcodes())        # first use: reads
    assert set(read) == {"header", "checksum"} | {f"t0.{f}" for f in t.export()}
    assert u.gradient(u.node(len(u) - 1), u.node(0)) == t.gradient(s, x)

    start, length = _member_data(path, "t0.val")
    data = bytearray(path.read_bytes())
    data[start + length // 2] ^= 4
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ft.TapeFormatError, match="'t0.val': checksum"):
        ft.Tape.load(bad)
    v = ft.Tape.load(bad, mmap=True)
    w = ft.load(bad, mmap=True)
    for _ in range(2):
        with pytest.raises(ft.TapeFormatError, match="'t0.val': checksum.*first use"):
            v.forward()
        with pytest.raises(ft.TapeFormatError, match="first use"):
            w.node(0)
    v.release()
    with pytest.raises(ft.TapeError, match="released"):
        v.forward()


def test_an_unused_mmap_load_is_freed_at_once(tmp_path):
    """A tape loaded with mmap=True and dropped unused is freed by its reference count
    (its deferred load holds no reference back to it) and closes its file."""
    import gc
    t, _, _ = _scalar_tape(100)
    t.save(tmp_path / "t.npz")
    u = ft.Tape.load(tmp_path / "t.npz", mmap=True)
    deferred = [o for o in gc.get_referents(u) if isinstance(o, _format._Deferred)]
    assert len(deferred) == 1
    f = deferred[0].f
    del deferred
    gc.disable()
    try:
        del u
        assert f.closed
    finally:
        gc.enable()


def _scalar_tape(n):
    with ft.Tape() as t:
        x = t.var(0.5)
        s = x
        for _ in range(n // 2):
            s = s * 0.999 + x
    return t, s, x


def test_mmap_load_of_mutated_files():
    """Mutated tape files (raw damage, and forged fields written with fresh checksums
    so that only the validation can catch them) loaded with mmap=True: each raises
    TapeFormatError at the load or at the first use, or loads and sweeps."""
    rng = np.random.default_rng(FUZZ_SEED + 1)
    data = _fuzz_subjects()[-1][2]
    gen = _mutations(data, rng)
    at = {"load": 0, "first use": 0, "clean": 0}
    for _ in range(max(FUZZ_N // 5, 200)):
        t = _mmap_case(*next(gen), lambda m: ft.Tape.load(m, mmap=True),
                       lambda t: t.opcodes(), at)
        if t is not None:
            _exercise(t, None)
    assert min(at.values()) > 0, at


def test_function_mmap_load_reads_no_records_until_first_use(tmp_path, monkeypatch):
    """fastape.load(path, mmap=True) of a compiled function reads the directory and the
    header only: its traces' members are read, checksummed and validated at the first
    use of any method or attribute (and a damaged one then raises, at every use), while
    the eager load refuses the same file at once. Counting the members read makes it
    fail if the load reads a trace."""
    x = np.linspace(0.1, 0.5, 5)
    F = _fuzz_subjects()[1][0]
    path = tmp_path / "f.npz"
    F.save(path)
    read = _count_reads(monkeypatch)
    G = ft.load(path, mmap=True)
    assert isinstance(G, ft.Function) and set(read) == {"header", "checksum"}
    assert G(x) == F(x)                                 # first use: reads everything
    E = ft.load(path)
    E(x)
    assert G.nbytes == E.nbytes and G.nodes == F.nodes
    assert {f"t0.{f}" for f in F.traces[0].tape.export()} | {"r0.inputs", "example"} \
        <= set(read)
    np.testing.assert_array_equal(G.grad(x), F.grad(x))
    np.testing.assert_array_equal(G.hvp((x,), x), F.hvp((x,), x))
    H = ft.load(path, mmap=True)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(H)).grad(x), F.grad(x))

    start, length = _member_data(path, "t0.a")
    data = bytearray(path.read_bytes())
    data[start + length // 2] ^= 4
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ft.TapeFormatError, match="'t0.a': checksum"):
        ft.load(bad)
    read.clear()
    B = ft.load(bad, mmap=True)
    assert set(read) == {"header", "checksum"}
    for use in (lambda: B(x), lambda: B.grad(x), lambda: B.traces, lambda: B.nbytes):
        with pytest.raises(ft.TapeFormatError, match="'t0.a': checksum.*first use"):
            use()
    with pytest.raises(ft.TapeFormatError, match="custom rule"):
        ft.load(_bytes_of(_fuzz_subjects()[2][0]), mmap=True)   # needs callbacks=, at once

    def no_memory(*a, **k):
        raise MemoryError("no memory")
    M = ft.load(path, mmap=True)
    monkeypatch.setattr(_format, "_check_trace", no_memory)
    for _ in range(2):          # a failed first use leaves it unusable, never half built
        with pytest.raises(MemoryError, match="no memory.*first use"):
            M(x)


def test_mmap_load_of_mutated_function_files():
    """Mutated function files (raw damage, and forged fields with fresh checksums)
    loaded with mmap=True: each raises TapeFormatError at the load or at the first
    use, or loads and sweeps (under ASan: nothing out of bounds)."""
    rng = np.random.default_rng(FUZZ_SEED + 2)
    subjects = [s for s in _fuzz_subjects() if isinstance(s[0], ft.Function)]
    gens = [_mutations(data, rng) for _, _, data, _ in subjects]
    at = {"load": 0, "first use": 0, "clean": 0}
    for q in range(max(FUZZ_N // 5, 300)):
        k = q % len(subjects)
        _, args, _, rules = subjects[k]
        G = _mmap_case(*next(gens[k]),
                       lambda m, rules=rules: ft.load(m, mmap=True, callbacks=rules or None),
                       lambda G: G.traces if isinstance(G, ft.Function) else G.opcodes(),
                       at)
        if G is not None:       # (a damaged kind may load a tape: swept as one)
            _exercise(G, args if isinstance(G, ft.Function) else None)
    assert min(at.values()) > 0, at


def test_two_thread_read_is_the_sequential_read(tmp_path, monkeypatch):
    """A large file is read by two threads (forced here on small files): the same
    tape and function, and of a file damaged in two members the same refusal (the
    first bad field in the file's order) as the one-thread read of its bytes."""
    monkeypatch.setattr(_format, "_PARALLEL_FROM", 0)
    threads = []
    real = _format._read_array

    def spy(*a, **k):
        import threading
        threads.append(threading.current_thread().name)
        return real(*a, **k)
    monkeypatch.setattr(_format, "_read_array", spy)
    t, s, x = _scalar_tape(3000)
    t.save(tmp_path / "t.npz")
    u = ft.Tape.load(tmp_path / "t.npz")
    assert "fastape-load" in threads
    for k, v in t.export().items():
        np.testing.assert_array_equal(u.export()[k], v)
    F = _fuzz_subjects()[2][0]
    F.save(tmp_path / "f.npz")
    args = _structural_args()
    G = ft.load(tmp_path / "f.npz", callbacks=F.rules)
    np.testing.assert_array_equal(G.grad(*args)[0], F.grad(*args)[0])
    data = bytearray((tmp_path / "t.npz").read_bytes())
    for name in ("t0.val", "t0.a"):                   # a is first in the file's order
        start, length = _member_data(tmp_path / "t.npz", name)
        data[start + length // 3] ^= 1
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(ft.TapeFormatError) as par:
        ft.Tape.load(tmp_path / "bad.npz")
    with pytest.raises(ft.TapeFormatError) as seq:
        ft.Tape.load(bytes(data))                     # bytes: read in one thread
    assert "'t0.a': checksum" in str(par.value)
    assert str(par.value).replace(str(tmp_path / "bad.npz"), "") == \
        str(seq.value).replace("fastape data", "")


def test_files_of_another_zip_writer_load(tmp_path):
    """The reader takes any zip writer's container of the same members: numpy.savez
    (zipfile's layout, which fastape wrote itself before) of a saved function's
    arrays loads to the same function."""
    F = ft.compile(lambda x: ft.sum(ft.sin(x) * x), np.linspace(0.1, 0.9, 4))
    F.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "g.npz", **arrays)
    G = ft.load(tmp_path / "g.npz")
    x = np.linspace(-1, 1, 4)
    assert G.value_and_grad(x)[0] == F.value_and_grad(x)[0]
    np.testing.assert_array_equal(G.grad(x), F.grad(x))
    F.save(tmp_path / "h.npz")
    assert (tmp_path / "h.npz").read_bytes() == _bytes_of(F)     # the same bytes each time


def test_a_finite_constant_factor_is_checked_at_load():
    """A product marks a constant factor of finite values when recorded (flags 4/8),
    so its sweeps skip the scan for inf and NaN; a file whose marked constant holds an
    inf is refused (else a zero multiplier times inf would give NaN), and a constant
    with an inf is never marked: its zero multipliers still contribute nothing."""
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    F = ft.compile(lambda x: ft.sum((W @ x) * np.array([0.0, 1.0])), np.ones(2))
    data = _bytes_of(F)
    np.testing.assert_array_equal(ft.load(data).grad(np.ones(2)), W[1])

    def constant_inf(h, a):
        op = a["t0.op"]
        j = int(np.flatnonzero(op == int(ft.Op.CONSTANT))[0])
        a["t0.val"] = a["t0.val"].copy()
        a["t0.val"][int(a["t0.off"][j])] = np.inf
    with pytest.raises(ft.TapeFormatError, match="finite constant"):
        ft.load(_rewrite(data, constant_inf))
    Winf = np.array([[np.inf, 2.0], [3.0, 4.0]])
    G = ft.compile(lambda x: ft.sum((Winf @ x) * np.array([0.0, 1.0])), np.ones(2))
    np.testing.assert_array_equal(G.grad(np.ones(2)), [3.0, 4.0])
    np.testing.assert_array_equal(ft.grad(lambda x: ft.sum((Winf @ x) * np.array([0.0, 1.0])))(
        np.ones(2)), [3.0, 4.0])
    np.testing.assert_array_equal(ft.load(_bytes_of(G)).grad(np.ones(2)), [3.0, 4.0])
