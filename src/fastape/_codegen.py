"""Generate the Cython op table and dispatch from ``registry.py``.

Run by ``setup.py`` on every build (``python src/fastape/_codegen.py OUTDIR`` does
the same by hand). It writes two Cython include files into the build tree, never
into ``src/`` or git:

* ``_opgen.pxi`` (included by ``_ops.pxd``): the ``Op`` and ``Cmp`` enums, the
  arity classes, ``value_and_partials`` (value and first partials, one branch per
  op, which Cython turns into a C ``switch``), ``second_partials`` and the
  per-op facts pruning needs (what the ``b`` field holds, which parameters are
  node ids);
* ``_dispatch.pxi`` (included by ``_tape.pyx`` after the kernels): the one line
  per structural op that sends a node to its forward, reverse or tangent kernel
  (``<kernel>_forward(t, i)``, ``<kernel>_reverse(t, i)``,
  ``<kernel>_tangent(t, i, T)`` with T one direction's tangent arena).

It also renders ``_ops.pyi`` and ``_ufuncs.pyi``, the stubs type checkers read
from the source tree; those are committed, and ``tests/test_registry.py`` fails
when one is stale (``python src/fastape/_codegen.py --stub`` rewrites them).

This file imports nothing but the standard library and loads the registry by
path, so the build can run it before fastape is compiled.
"""

import importlib.util
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "# generated from fastape/registry.py by fastape/_codegen.py: do not edit\n"


def load_registry():
    spec = importlib.util.spec_from_file_location("_fastape_registry", HERE / "registry.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_fastape_registry", mod)
    spec.loader.exec_module(mod)
    return mod


def _ranges(reg, codes):
    ew = reg.ELEMENTWISE + reg.DERIVED
    un = [e.name for e in ew if e.arity == 1 and not e.has_k]
    uk = [e.name for e in ew if e.has_k]
    bi = [e.name for e in ew if e.arity == 2]
    return un[0], uk[0], uk[-1], bi[0], bi[-1]


def _branches(ops, body, comment=None):
    """One `if o == NAME:` branch per op (Cython makes the chain a C switch)."""
    out = []
    for j, op in enumerate(ops):
        note = f"    # {comment(op)}" if comment else ""
        out.append(f"    {'if' if j == 0 else 'elif'} o == {op.name}:{note}")
        out += [f"        {line}" for line in body(op)]
    return out


def _named(expr):
    """A second partial's formula reading the first partials from their pointers."""
    return re.sub(r"\b(d0|d1)\b", r"\1[0]", expr)


def generate_opgen(reg):
    codes = reg.opcodes()
    first_unary, first_k, last_k, first_binary, last_binary = _ranges(reg, codes)
    out = [HEADER]
    out.append("cpdef enum Op:")
    for name, code in codes.items():
        out.append(f"    {name} = {code}")
    out.append(f"    NUM_OPS = {len(codes)}\n")
    out.append("# comparison kinds of guards")
    out.append("cpdef enum Cmp:")
    for j, name in enumerate(reg.COMPARISONS):
        out.append(f"    {name} = {j}")
    out.append("")
    out.append(f"""
cdef inline bint is_unary(int o) noexcept nogil:
    return {first_unary} <= o <= {last_k}

cdef inline bint has_k(int o) noexcept nogil:
    return {first_k} <= o <= {last_k}

cdef inline bint is_binary(int o) noexcept nogil:
    return {first_binary} <= o <= {last_binary}

cdef inline bint is_elementwise(int o) noexcept nogil:
    return {first_unary} <= o <= {last_binary}

cdef inline bint is_leaf(int o) noexcept nogil:
    return o <= CONSTANT


cdef inline double derived_value_and_partials "fastape_derived_value_and_partials"(
        int o, double x, double y, double* d0, double* d1) noexcept nogil:
    \"\"\"value_and_partials of the derived partial ops (registry.DERIVED); never inlined
    (FASTAPE_NOINLINE in _ops.pxd).\"\"\"
    cdef double k = y
{{DERIVED_BRANCHES}}
    d0[0] = NAN
    d1[0] = NAN
    return NAN


cdef inline double value_and_partials "fastape_value_and_partials"(
        int o, double x, double y, double* d0, double* d1, const double* known) noexcept nogil:
    \"\"\"value = f_o(x, y); d0, d1 = ∂f/∂x, ∂f/∂y (y is k for the *_K ops). `known`,
    when not NULL, points to the node's stored value (reused by the partials).\"\"\"
    cdef double v
    cdef double k = y""")
    out += _branches(reg.ELEMENTWISE, lambda e: [
        f"v = known[0] if known != NULL else ({e.value})", f"d0[0] = {e.d0}",
        f"d1[0] = {e.d1}", "return v"], lambda e: e.doc)
    # the derived partial ops (nested derivatives only) through one call that is not
    # inlined: their formulas are long, and every sweep loop inlines this switch
    # (compile time; the base ops' cases stay as they were)
    if reg.DERIVED:
        cond = " or ".join(f"o == {e.name}" for e in reg.DERIVED)
        out.append(f"    elif {cond}:")
        out.append("        return derived_value_and_partials(o, x, y, d0, d1)")
    out += ["    d0[0] = NAN", "    d1[0] = NAN", "    return NAN\n"]
    derived = "\n".join(_branches(reg.DERIVED, lambda e: [
        f"d0[0] = {e.d0}", f"d1[0] = {e.d1}", f"return {e.value}"])) if reg.DERIVED else ""
    out = [line.replace("{DERIVED_BRANCHES}", derived) for line in out]
    out.append("""
cdef inline void second_partials(int o, double x, double y, double* d00, double* d01,
                                 double* d11) noexcept nogil:
    \"\"\"d00, d01, d11 = ∂²f/∂x², ∂²f/∂x∂y, ∂²f/∂y² of elementwise op o at (x, y).\"\"\"
    cdef double d0, d1
    cdef double v = value_and_partials(o, x, y, &d0, &d1, NULL)
    cdef double k = y""")
    out += _branches(reg.ELEMENTWISE + reg.DERIVED, lambda e: [
        f"d00[0] = {e.d00}", f"d01[0] = {e.d01}", f"d11[0] = {e.d11}", "return"])
    out += ["    d00[0] = NAN", "    d01[0] = NAN", "    d11[0] = NAN\n"]
    # the forward-over-reverse sweeps need all five at once: one switch, and the
    # value and first partials (which the second partials' formulas name) computed once
    out.append("""
cdef inline double value_and_second_partials "fastape_value_and_second_partials"(
        int o, double x, double y, double* d0, double* d1, double* d00, double* d01,
        double* d11, const double* known) noexcept nogil:
    \"\"\"value_and_partials(o, x, y, d0, d1, known), and d00, d01, d11 as second_partials
    gives them (from the stored value when `known` is not NULL).\"\"\"
    cdef double v
    cdef double k = y""")
    out += _branches(reg.ELEMENTWISE + reg.DERIVED, lambda e: [
        f"v = known[0] if known != NULL else ({e.value})", f"d0[0] = {e.d0}",
        f"d1[0] = {e.d1}", f"d00[0] = {_named(e.d00)}", f"d01[0] = {_named(e.d01)}",
        f"d11[0] = {_named(e.d11)}", "return v"])
    out += ["    d0[0] = NAN", "    d1[0] = NAN", "    d00[0] = NAN", "    d01[0] = NAN",
            "    d11[0] = NAN", "    return NAN\n"]
    derived = [e.name for e in reg.DERIVED]
    out.append("""
cdef inline bint has_second_partials(int o) noexcept nogil:
    \"\"\"Does elementwise op o have second partials? (A derived partial op has none:
    its registry block's are NAN.)\"\"\"""")
    if derived:
        out.append("    if " + " or ".join(f"o == {n}" for n in derived) + ":")
        out.append("        return False")
    out.append("    return is_elementwise(o)\n")
    # what the b field of a node holds
    out.append("""
cdef enum:
    B_NONE = 0      # unused (-1)
    B_NODE = 1      # the second parent (unary elementwise ops: the first parent again)
    B_POOL = 2      # the index of an immediate in the pool

cdef inline int b_kind(int o) noexcept nogil:
    \"\"\"What node field b holds for opcode o.\"\"\"
    if is_leaf(o):
        return B_NONE
    if has_k(o):
        return B_POOL
    if is_elementwise(o):
        return B_NODE""")
    for kind in ("pool", "node"):
        names = [s.name for s in reg.STRUCTURAL if s.b == kind]
        if names:
            cond = " or ".join(f"o == {n}" for n in names)
            out.append(f"    if {cond}:")
            out.append(f"        return B_{kind.upper()}")
    out.append("    return B_NONE\n")
    out.append("""
cdef inline int64_t node_param_count(int o, const int64_t* P) noexcept nogil:
    \"\"\"How many of node's parameters P are node ids (parents beyond a and b).\"\"\"""")
    for s in reg.STRUCTURAL:
        if s.node_params:
            first_, count, stride = s.node_params
            c = str(count) if count > 0 else f"P[{-count}]"
            out.append(f"    if o == {s.name}:")
            out.append(f"        return {c}")
    out.append("    return 0\n")
    out.append("""
cdef inline int64_t node_param_pos(int o, const int64_t* P, int64_t j) noexcept nogil:
    \"\"\"The position in P of the j-th node-id parameter (j < node_param_count).\"\"\"""")
    for s in reg.STRUCTURAL:
        if s.node_params:
            first_, count, stride = s.node_params
            out.append(f"    if o == {s.name}:")
            out.append(f"        return {first_} + {stride} * j")
    out.append("    return -1\n")
    return "\n".join(out) + "\n"


def generate_dispatch(reg):
    out = [HEADER]
    for sweep in ("forward", "reverse"):
        what = ("compute node i's value" if sweep == "forward" else
                "add node i's adjoints, through its partials, into its parents'")
        out.append(f"""
cdef inline void structural_{sweep}(Tape t, i64 i, int o) noexcept nogil:
    \"\"\"Structural and linear-algebra ops: {what}.\"\"\"""")
        out += _branches(reg.STRUCTURAL, lambda s, sweep=sweep: [f"{s.kernel}_{sweep}(t, i)"])
    out.append("""
cdef inline void structural_tangent(Tape t, i64 i, int o, double* T) noexcept nogil:
    \"\"\"Structural and linear-algebra ops: node i's tangent in one direction, T that
    direction's arena (the value layout: node j's tangent at T + t.off[j]).\"\"\"""")
    out += _branches(reg.STRUCTURAL, lambda s: [f"{s.kernel}_tangent(t, i, T)"])
    return "\n".join(out) + "\n"


def generate_ops_pyi(reg):
    out = [HEADER.replace("#", "#", 1), "import enum\n", "class Op(enum.IntEnum):"]
    for name in reg.opcodes():
        out.append(f"    {name} = ...")
    out.append("    NUM_OPS = ...\n")
    out.append("class Cmp(enum.IntEnum):")
    for name in reg.COMPARISONS:
        out.append(f"    {name} = ...")
    out.append("")
    out.append("ELEMENTWISE: tuple[Op, ...]")
    out.append("STRUCTURAL: tuple[Op, ...]\n")
    out.append("def eval_op(o: int, x: float, y: float = 0.0) -> tuple[float, float, float]: ...")
    out.append("def eval_second(o: int, x: float, y: float = 0.0) "
               "-> tuple[float, float, float]: ...")
    out.append("def b_kind(o: int) -> int: ...")
    return "\n".join(out) + "\n"


def generate_ufuncs_pyi(reg):
    """The stub of ``_ufuncs``: one signature per public elementwise op and alias."""
    out = [HEADER, "from typing import Any\n", "from numpy.typing import ArrayLike\n",
           "from fastape._tape import Var\n", "_X = Var | ArrayLike\n"]
    names = []
    for e in reg.ELEMENTWISE:
        if e.public:
            args = "x: _X" if e.arity == 1 else "x1: _X, x2: _X"
            out.append(f"def {e.public}({args}) -> Any:")
            out.append(f'    """{e.doc}"""')
            names.append(e.public)
    arity = {e.public: e.arity for e in reg.ELEMENTWISE if e.public}
    for alias, name in (("abs", "absolute"), ("expit", "sigmoid"), ("digamma", "psi")):
        args = "x: _X" if arity[name] == 1 else "x1: _X, x2: _X"
        out.append(f"def {alias}({args}) -> Any: ...")
        names.append(alias)
    out.append("")
    out.append("ELEMENTWISE: dict[str, Any]")
    out.append("ALIASES: dict[str, str]")
    out.append(f"__all__ = {names!r}")
    return "\n".join(out) + "\n"


STUBS = {"_ops.pyi": generate_ops_pyi, "_ufuncs.pyi": generate_ufuncs_pyi}


def write_build(outdir):
    """Write the generated Cython includes into `outdir` (only files that changed,
    so that an unchanged registry does not force a rebuild)."""
    reg = load_registry()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in (("_opgen.pxi", generate_opgen(reg)),
                       ("_dispatch.pxi", generate_dispatch(reg))):
        path = outdir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return outdir


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--stub":
        for name, make in STUBS.items():
            (HERE / name).write_text(make(load_registry()))
    else:
        write_build(sys.argv[1] if len(sys.argv) > 1 else "build/gen")
