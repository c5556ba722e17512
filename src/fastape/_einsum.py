"""Tensor contractions on fastape values (issue 13, item 3): ``einsum``, ``tensordot``
and ``dot`` of N-d operands.

``einsum`` is lowered to ops the tape already has, so its derivatives are theirs
(exact, every order, both modes) and its products run in BLAS:

1. an operand's repeated labels (``'ii->i'``, a trace's diagonal) become one gather,
   found by numpy's own einsum applied to the operand's element positions;
2. labels of one operand that no other operand and not the output name are summed
   out (a SUM node);
3. the operands are contracted pairwise from the left: the labels two of them share
   split into batch labels (still needed later) and contracted ones, each operand is
   transposed to (batch, free, contracted) order and reshaped, and one batched MATMUL
   (dgemm per batch) forms the product;
4. the result is transposed into the output's order.

Labels of length 1 broadcast against longer ones, as in numpy.
"""

import functools
import math
import operator
import string

import numpy as np

from fastape import _functions as F
from fastape._arrays import _moved, broadcast_to
from fastape._tape import Var
from fastape.errors import ShapeError

__all__ = ["einsum", "tensordot"]


def _parse(subscripts, shapes):
    """The operands' labels (ellipses expanded into fresh labels) and the output's."""
    s = subscripts.replace(" ", "")
    explicit = "->" in s
    lhs, _, out = s.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} operand subscript(s) in {subscripts!r} for "
                         f"{len(shapes)} operand(s)")
    used = set(c for c in s if c.isalpha())
    fresh = [c for c in string.ascii_letters if c not in used]
    for c in s:
        if not (c.isalpha() or c in ",->."):
            raise ValueError(f"einsum: invalid subscript {c!r} in {subscripts!r}")
    ell_len = 0
    labels = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            head, _, tail = term.partition("...")
            if "." in head + tail:
                raise ValueError(f"einsum: invalid ellipsis in {subscripts!r}")
            k = len(shape) - len(head) - len(tail)
            if k < 0:
                raise ShapeError(f"einsum: operand of shape {shape} has fewer dimensions "
                                 f"than subscripts {term!r}")
            ell_len = max(ell_len, k)
            labels.append(list(head) + ["..."] * k + list(tail))
        else:
            if "." in term:
                raise ValueError(f"einsum: invalid ellipsis in {subscripts!r}")
            if len(term) != len(shape):
                raise ShapeError(f"einsum: subscripts {term!r} name {len(term)} dimension(s) "
                                 f"of an operand of shape {shape}")
            labels.append(list(term))
    if ell_len > len(fresh):
        raise ValueError("einsum: too many dimensions under the ellipsis")
    ell = fresh[:ell_len]                    # right-aligned, as broadcasting
    for lab in labels:
        k = lab.count("...")
        if k:
            i = lab.index("...")
            lab[i:i + k] = ell[ell_len - k:]
    if explicit:
        if "..." in out:
            head, _, tail = out.partition("...")
            out_labels = list(head) + ell + list(tail)
        else:
            out_labels = list(out)
        if "." in "".join(c for c in out_labels if c not in ell):
            raise ValueError(f"einsum: invalid ellipsis in {subscripts!r}")
        seen = set()
        for c in out_labels:
            if c in seen:
                raise ValueError(f"einsum: output subscript {c!r} appears more than once")
            seen.add(c)
            if not any(c in lab for lab in labels):
                raise ValueError(f"einsum: output subscript {c!r} does not appear in the "
                                 "operands' subscripts")
    else:
        counts = {}
        for lab in labels:
            for c in lab:
                counts[c] = counts.get(c, 0) + 1
        out_labels = ell + sorted(c for c, n in counts.items() if n == 1 and c not in ell)
    return labels, out_labels


@functools.lru_cache(maxsize=256)
def _parse_cached(subscripts, shapes):
    """_parse, once per subscripts and shapes (an objective calls the same einsum each
    evaluation; parsing was a fifth of a small einsum's recording)."""
    labels, out_labels = _parse(subscripts, shapes)
    return tuple(tuple(lab) for lab in labels), tuple(out_labels)


def _distinct(v, lab):
    """An operand with repeated labels reduced to its diagonal (one gather)."""
    if len(set(lab)) == len(lab):
        return v, lab
    uniq = list(dict.fromkeys(lab))
    spec = "".join(lab) + "->" + "".join(uniq)
    return _moved(v, lambda p: np.einsum(spec, p)), uniq


def _sum_out(v, lab, keep):
    axes = tuple(i for i, c in enumerate(lab) if c not in keep)
    if not axes:
        return v, lab
    return F.sum(v, axis=axes), [c for c in lab if c in keep]


def _permuted(v, lab, order):
    if lab == order:
        return v
    return F.transpose(v, tuple(lab.index(c) for c in order))


def _contract(a, la, b, lb, keep, size):
    """The product of a (labels la) and b (labels lb), summing the shared labels that
    are not in keep: one batched matmul. Returns the result and its labels."""
    batch = [c for c in la if c in lb and c in keep]
    summed = [c for c in la if c in lb and c not in keep]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]
    nb = math.prod(size[c] for c in batch)          # (np.prod cost 3 µs a call)
    m = math.prod(size[c] for c in left)
    k = math.prod(size[c] for c in summed)
    n = math.prod(size[c] for c in right)
    lead = (nb,) if nb > 1 else ()              # one product: a plain 2-D matmul
    A = F.reshape(_permuted(a, la, batch + left + summed), lead + (m, k))
    B = F.reshape(_permuted(b, lb, batch + summed + right), lead + (k, n))
    C = A @ B
    labels = batch + left + right
    return F.reshape(C, tuple(size[c] for c in labels)), labels


def _from_sublists(args):
    """numpy's interleaved form einsum(a, [0, 1], b, [1, 2], [0, 2]) as a subscripts
    string and the operands (labels: integers 0..51, and Ellipsis)."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def spelled(sub, what):
        if not isinstance(sub, (list, tuple)):
            raise TypeError(f"numpy.einsum: {what} must be a list of subscript labels "
                            f"(integers and Ellipsis), got {type(sub).__name__}")
        out = []
        for s in sub:
            if s is Ellipsis:
                out.append("...")
            elif isinstance(s, (int, np.integer)) and 0 <= s < len(letters):
                out.append(letters[int(s)])
            else:
                raise ValueError(f"numpy.einsum: subscript labels in {what} must be "
                                 f"integers in [0, 52) or Ellipsis, got {s!r}")
        return "".join(out)

    args = list(args)
    n = len(args) // 2
    operands = args[0:2 * n:2]
    spec = ",".join(spelled(args[2 * i + 1], f"the sublist of operand {i}") for i in range(n))
    if len(args) % 2:
        spec += "->" + spelled(args[-1], "the output sublist")
    return spec, operands


def einsum(subscripts, *operands, out=None, optimize=False, dtype=None, order="K",
           casting="safe"):
    """numpy.einsum (the subscripts string, with ellipses and repeated labels, or the
    interleaved operand/sublist form),
    lowered to gathers, sums and batched BLAS products; see the module's text.
    ``optimize`` is accepted and ignored: operands are contracted from the left."""
    if not isinstance(subscripts, str):
        subscripts, operands = _from_sublists((subscripts, *operands))
    like = F._first_var(operands, "einsum")
    if like is None:
        return np.einsum(subscripts, *operands, out=out, optimize=optimize, dtype=dtype,
                         order=order, casting=casting)
    if out is not None:
        raise TypeError("numpy.einsum: out= cannot write into a fastape value")
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"numpy.einsum: fastape values are float64; dtype={dtype} is not "
                        "supported")
    ops = [F._as_var(like, v if type(v) is Var else np.asarray(v, dtype=np.float64),
                     "einsum", f"operands[{i}]") for i, v in enumerate(operands)]
    labels, out_labels = _parse_cached(subscripts, tuple(v.shape for v in ops))
    labels, out_labels = [list(lab) for lab in labels], list(out_labels)
    size = {}
    for v, lab in zip(ops, labels):
        for c, d in zip(lab, v.shape):
            if size.get(c, 1) != 1 and d not in (1, size[c]):
                raise ShapeError(f"einsum: subscript {c!r} has size {size[c]} in one operand "
                                 f"and {d} in another ({subscripts!r}, operand shapes "
                                 f"{[w.shape for w in ops]})")
            size[c] = max(size.get(c, 1), d)
    for i, (v, lab) in enumerate(zip(ops, labels)):       # size-1 labels broadcast
        want = tuple(size[c] for c in lab)
        if v.shape != want:
            ops[i] = broadcast_to(v, want)
    pairs = [_distinct(v, lab) for v, lab in zip(ops, labels)]
    acc, lacc = None, None
    for i, (v, lab) in enumerate(pairs):
        later = set(out_labels).union(*[set(lb) for _, lb in pairs[i + 1:]])
        if acc is None:
            acc, lacc = _sum_out(v, lab, later)
            continue
        v, lab = _sum_out(v, lab, later | set(lacc))
        acc, lacc = _sum_out(acc, lacc, later | set(lab))
        acc, lacc = _contract(acc, lacc, v, lab, later, size)
    acc, lacc = _sum_out(acc, lacc, set(out_labels))
    return _permuted(acc, lacc, out_labels)


def tensordot(a, b, axes=2):
    """numpy.tensordot: sum products over the given axes of a and b (the last ``axes``
    of a with the first of b for an integer), as one einsum."""
    like = F._first_var((a, b), "tensordot")
    if like is None:
        return np.tensordot(a, b, axes)
    a = a if type(a) is Var else F._as_var(like, np.asarray(a, dtype=np.float64),
                                           "tensordot", "a")
    b = b if type(b) is Var else F._as_var(like, np.asarray(b, dtype=np.float64),
                                           "tensordot", "b")
    if not isinstance(axes, (tuple, list)):
        n = operator.index(axes)
        if n < 0 or n > min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: axes={n} for operands of shapes {a.shape} and "
                             f"{b.shape}")
        ax_a, ax_b = list(range(a.ndim - n, a.ndim)), list(range(n))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if np.ndim(ax_a) == 0 else list(ax_a)
        ax_b = [ax_b] if np.ndim(ax_b) == 0 else list(ax_b)
        if len(ax_a) != len(ax_b):
            raise ShapeError(f"tensordot: shape-mismatch for sum: axes {ax_a} and {ax_b}")
        ax_a = [operator.index(x) % a.ndim for x in ax_a]
        ax_b = [operator.index(x) % b.ndim for x in ax_b]
    for i, j in zip(ax_a, ax_b):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot: shape-mismatch for sum: a's axis {i} has length "
                             f"{a.shape[i]}, b's axis {j} has {b.shape[j]} (shapes {a.shape}, "
                             f"{b.shape})")
    letters = iter(string.ascii_letters)
    la = [next(letters) for _ in range(a.ndim)]
    lb = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in ax_a] + \
        [c for j, c in enumerate(lb) if j not in ax_b]
    return einsum("".join(la) + "," + "".join(lb) + "->" + "".join(out), a, b)


def dot_nd(a, b):
    """numpy.dot for operands of more than two dimensions: a's last axis with b's
    second-to-last."""
    return tensordot(a, b, axes=([-1], [-2 if np.ndim(getattr(b, "value", b)) > 1 else -1]))

