# Var and recording (included into _tape.pyx): a Var is a tape and a node id; its
# operators and the functions below append nodes. Elementwise ops record through
# unary/binary/unary_k (numbers become immediates: no constant node); the
# structural recorders sit with their kernels in _structural.pxi and _linalg.pxi.


cdef object _np_matmul = np.matmul
cdef object _F64_DTYPE = np.dtype(np.float64)
cdef dict _PY = {}


cdef inline object _py(str name):
    """fastape.<name> (a Python module of the package, imported once: the modules
    import this one, so Var cannot import them at the top)."""
    m = _PY.get(name)
    if m is None:
        m = _PY[name] = importlib.import_module("fastape." + name)
    return m


cpdef check_scalar_output(Var out, Tape tape, str where):
    """Raise unless `out`, a transform's output to differentiate, is a scalar of `tape`
    (every value_and_grad path: eager, nested, fast)."""
    if out.tape is not tape:
        raise TapeError(f"{where}: the function returned a value of another tape")
    if out.size != 1:
        raise ShapeError(f"{where}: the function must return a scalar to be "
                         f"differentiated, got shape {out.shape}; sum the "
                         "output, or use fastape.vjp or fastape.jacobian")


def eager_value_and_grad(fun, tuple args, dict kwargs, tuple nums, bint single, str where,
                         list tapes, on_constant):
    """fastape.value_and_grad's fast path: arguments `nums` (distinct positions) plain
    floats or float arrays, `tapes` (this thread's recording stack) empty. Records fun
    on a fresh tape (one array argument as an element block: x[i] records no node),
    runs the reverse sweep and returns (value, gradient(s)) as the general path does;
    on_constant(out, args, nums, single, where) answers for an output that is not a
    value of the tape. None when it does not apply. Here rather than in api.py: the
    seeds' scalar function spent 40 % of a call in the Python of this wrapper."""
    cdef Py_ssize_t q, n = len(nums)
    cdef Tape tape
    cdef Var v, y
    if tapes:
        return None
    for q in range(n):
        x = args[<Py_ssize_t>nums[q]]
        if type(x) is not float and (type(x) is not np.ndarray or
                                     (<object>x).dtype.kind == "c"):
            return None
    if n > 1 and len(set(nums)) != n:
        return None
    tape = Tape()
    tape.lean_constants = True      # the transform reads its inputs' multipliers only
    cdef list call = list(args)
    cdef list vs = []
    try:
        # no with-block: closing would trim the buffers of a tape released right after
        for q in range(n):
            x = args[<Py_ssize_t>nums[q]]
            if single and type(x) is np.ndarray:
                v = tape._var_elements(x)
            else:
                v = _leaf(tape, INPUT, x, "Tape.var", "value")
            vs.append(v)
            call[<Py_ssize_t>nums[q]] = _new(tape, v.node, v.shape, v.size)
        tapes.append(tape)
        try:
            out = fun(*call, **kwargs)
        finally:
            tapes.pop()
        if type(out) is not Var:
            return on_constant(out, args, nums, single, where)
        y = <Var>out
        check_scalar_output(y, tape, where)
        value = _read(tape, tape.val, y)
        if tape.val_cap > tape.nval + (tape.nval >> 3):
            tape.trim_values()
        # whole-array code: the reverse sweep through the fused runs of the compiled
        # functions (their inner multipliers never reach memory), when it has any
        if tape.off == NULL or tape.blk_n or not _py("_compiled")._eager_backward(tape, y):
            tape.backward(y)
        grads = []
        for q in range(n):
            v = <Var>vs[q]
            g = _read(tape, tape.adj, v)
            if not v.shape and type(args[<Py_ssize_t>nums[q]]) is np.ndarray:
                g = np.asarray(g, dtype=np.float64).reshape(())       # a 0-d array's
            grads.append(g)
        return value, (grads[0] if single else tuple(grads))
    finally:
        tape.release()


cdef object read_slot(Tape t, double* buf, i64 node, tuple shape):
    """Copy node's slot of `buf` (values or multipliers) out as a float, or as a new
    array of `shape`."""
    cdef double* src = buf + (node if t.off == NULL else t.off[node])
    if t.off == NULL and node == t.blk_base and t.blk_n:
        src += 1                # an element block's head: its elements follow it
    if shape == SCALAR:
        return src[0]
    arr = np.empty(shape, dtype=np.float64)
    cdef double[::1] dst = arr.reshape(-1)
    if dst.shape[0]:
        memcpy(&dst[0], src, dst.shape[0] * sizeof(double))
    return arr


cdef inline object _read(Tape t, double* buf, Var x):
    return read_slot(t, buf, x.node, x.shape)


def _map_structure(obj, fn, str where):
    """fn over the Vars of obj, in obj's structure (the containers of fastape._tree:
    lists, tuples, namedtuples, dicts)."""
    if isinstance(obj, Var):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*[_map_structure(o, fn, where) for o in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_structure(o, fn, where) for o in obj)
    if isinstance(obj, dict):
        return type(obj)({k: _map_structure(o, fn, where) for k, o in obj.items()})
    raise TypeError(f"{where}: expected a fastape value or a list, tuple or dict of them, "
                    f"got {type(obj).__name__}")


# ---------------------------------------------------------------------------
# Var: a node id on a tape, with numpy-style operators
# ---------------------------------------------------------------------------

cdef inline Var _new(Tape t, i64 node, tuple shape, i64 size):
    cdef Var v = Var.__new__(Var)
    v.tape = t
    v.node = node
    v.shape = shape
    v.size = size
    return v


cdef inline Var _own(Tape t, object v, str op, str arg):
    if type(v) is not Var:
        raise TypeError(f"{op}: argument '{arg}' must be a fastape value, "
                        f"got {type(v).__name__}")
    if (<Var>v).tape is not t:
        raise TapeError(f"{op}: argument '{arg}' belongs to another tape")
    return <Var>v


cdef object _as_array(object value, str op, str arg):
    """value as a C-contiguous float64 array, or a clear TypeError. Not a copy when
    value already is one: the caller copies it into the value arena."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{op}: argument '{arg}' must be a real number or an array of "
                        f"them, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except TypeError:
        raise
    except Exception as e:
        raise TypeError(f"{op}: argument '{arg}' is not numeric ({e})") from None
    if arr.dtype.kind == "c":
        raise TypeError(f"{op}: argument '{arg}' is complex; fastape differentiates real "
                        "float64 functions")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: argument '{arg}' must be a real number or an array of "
                        f"them, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64, order="C")


cdef Var _leaf(Tape t, int o, object value, str op, str arg):
    cdef const double[::1] src
    cdef i64 i
    if type(value) is Var:
        raise TypeError(f"{op}: argument '{arg}' is already a fastape value")
    cdef double d
    if type(value) is float or type(value) is int:
        d = _as_double(value, 0, op, arg)      # before the push: a refused value leaves no node
        i = t.push(o, -1, -1, 1, 0)
        t.val[i if t.off == NULL else t.off[i]] = d
        return _new(t, i, SCALAR, 1)
    arr = _as_array(value, op, arg)
    shape = arr.shape
    if shape == SCALAR:
        i = t.push(o, -1, -1, 1, 0)
        t.val[i if t.off == NULL else t.off[i]] = <double>arr[()]
        return _new(t, i, SCALAR, 1)
    i = t.push(o, -1, -1, arr.size, 1)
    src = arr.reshape(-1)
    if arr.size:
        memcpy(t.val + t.off[i], &src[0], arr.size * sizeof(double))
    return _new(t, i, shape, arr.size)


cdef inline double _as_double(object v, int o, str op, str arg) except? -1.0:
    """A Python number as a double; an int beyond float64's range is a TypeError naming
    `op` (or, when it is None, opcode o: the fast paths of binary() come here for every
    number, so the name is looked up only for the error)."""
    if PyFloat_Check(v):
        return PyFloat_AS_DOUBLE(v)
    try:
        return <double>v
    except OverflowError:
        raise TypeError(f"{OP_NAMES[o] if op is None else op}: argument '{arg}' "
                        f"({type(v).__name__} of {len(str(v))} digits) is too large for a "
                        "float64") from None


cdef Var _coerce(Tape t, object v, str op, str arg):
    """A Var of tape t for v: v itself, or a constant node holding v."""
    if type(v) is Var:
        if (<Var>v).tape is not t:
            raise TapeError(f"{op}: argument '{arg}' belongs to another tape than the "
                            "other operand; values of two tapes cannot be mixed")
        return <Var>v
    return _leaf(t, CONSTANT, v, op, arg)


cdef Var _first_var(tuple args, str op):
    """The first fastape value among args (they decide the tape an op records on)."""
    for v in args:
        if type(v) is Var:
            return <Var>v
    raise TypeError(f"{op}: no argument is a fastape value")


def broadcast_shapes(*shapes):
    """numpy's broadcast of the shapes, for any number of dimensions (numpy's own
    broadcast_shapes stops at 32); ValueError when they do not broadcast."""
    cdef int nd = max(len(s) for s in shapes), d
    out = [1] * nd
    for s in shapes:
        for d in range(len(s)):
            n = s[len(s) - 1 - d]
            if n != 1:
                if out[nd - 1 - d] not in (1, n):
                    raise ValueError(f"shapes {shapes} cannot be broadcast together")
                out[nd - 1 - d] = n
    return tuple(out)


cdef inline i64 _prod(tuple shape):
    cdef i64 s = 1
    for d in shape:
        s *= <i64>d
    return s


# the name an op's errors use: its public name (as the user wrote it: "subtract"),
# else the opcode's
cdef dict OP_NAMES = {int(getattr(PyOp, e.name)): e.public or e.name.lower()
                      for e in _registry.ELEMENTWISE + _registry.DERIVED}


cdef inline int _k_variant(int o, bint number_first) noexcept:
    """The *_K op computing `x o k` (or `k o x` when the number comes first); -1: none.
    x - k is recorded as x + (-k) by the caller."""
    if o == ADD:
        return ADD_K
    if o == MUL:
        return MUL_K
    if o == SUB:
        return RSUB_K if number_first else -1
    if o == DIV:
        return RDIV_K if number_first else DIV_K
    if o == POW:
        return RPOW_K if number_first else POW_K
    return -1


cpdef object binary(int o, object x, object y):
    """Record the elementwise binary op ``o`` on x, y (numpy broadcasting)."""
    cdef Var vx, vy
    cdef Tape t
    cdef i64 i, size
    cdef int ko
    cdef str name
    # fast paths: scalar op scalar, and a value with a Python number (an immediate)
    if type(x) is Var:
        vx = <Var>x
        if type(y) is Var:
            vy = <Var>y
            if vx.tape is vy.tape and vx.size == 1 and vy.size == 1 and \
                    vx.shape == SCALAR and vy.shape == SCALAR:
                return _new(vx.tape, vx.tape._rec2(o, vx.node, vy.node), SCALAR, 1)
        elif PyFloat_Check(y) or PyLong_Check(y):
            if o == SUB:
                return _unary_k(vx, ADD_K, -_as_double(y, o, None, "x2"))
            ko = _k_variant(o, False)
            if ko >= 0:
                return _unary_k(vx, ko, _as_double(y, o, None, "x2"))
    elif type(y) is Var and (PyFloat_Check(x) or PyLong_Check(x)):
        ko = _k_variant(o, True)
        if ko >= 0:
            return _unary_k(<Var>y, ko, _as_double(x, o, None, "x1"))
    # general path
    if _complex_operand(x) or _complex_operand(y):
        return _py("_complex").binary(o, x, y)
    name = OP_NAMES[o]
    t = _first_var((x, y), name).tape
    # numpy data broadcast against a value is broadcast by numpy, then one constant:
    # a BROADCAST node of it would sweep multipliers back into data nobody reads (the
    # GMM's x[:, None, :] - means, in runs of 5 elements)
    if type(x) is np.ndarray and type(y) is Var:
        x = _broadcast_data(<object>x, (<Var>y).shape)
    elif type(y) is np.ndarray and type(x) is Var:
        y = _broadcast_data(<object>y, (<Var>x).shape)
    vx = _coerce(t, x, name, "x1")
    vy = _coerce(t, y, name, "x2")
    if vx.shape == vy.shape:
        shape = vx.shape
    else:
        try:
            shape = broadcast_shapes(vx.shape, vy.shape)
        except ValueError:
            raise ShapeError(f"{name}: operands could not be broadcast together: "
                             f"x1 has shape {vx.shape}, x2 has shape {vy.shape}") from None
    size = _prod(shape)
    if vx.size != size and vx.size != 1:
        vx = _broadcast_to(vx, shape, name, "x1")
    if vy.size != size and vy.size != 1:
        vy = _broadcast_to(vy, shape, name, "x2")
    i = t.push(o, vx.node, vy.node, size, 1 if shape != SCALAR else 0)
    t.forward_node(i)
    return _new(t, i, shape, size)


cdef object _broadcast_data(object a, tuple other):
    """a (an array operand of a binary op with a value of shape `other`) broadcast to
    the op's shape when it must be and is not one number; else a unchanged (a shape
    mismatch is reported by the caller)."""
    if a.ndim == 0 or a.size == 1 or a.shape == other:
        return a
    try:
        shape = broadcast_shapes(a.shape, other)
    except ValueError:
        return a
    return a if shape == a.shape else np.broadcast_to(a, shape)


cdef inline bint _complex_operand(object v):
    """Is v a complex operand (a complex number or array, a complex fastape value)?
    Those go to fastape._complex, which writes the op with real ones."""
    if type(v) is Var or PyFloat_Check(v):
        return False
    if PyComplex_Check(v):
        return True
    if type(v) is np.ndarray:
        return (<object>v).dtype.kind == "c"
    return isinstance(v, np.complexfloating) or getattr(type(v), "_fastape_complex", False)


cdef Var _unary_k(Var x, int o, double k):
    cdef Tape t = x.tape
    cdef i64 i
    if o == POW_K and k == 2.0:
        # x ** 2 is SQUARE (the same x·x): no immediate to load and test per node
        return unary(SQUARE, x)
    if x.shape == SCALAR:
        return _new(t, t._rec1(o, x.node, k), SCALAR, 1)
    i = t.push(o, x.node, t.pool_add(k), x.size, 1)
    t.forward_node(i)
    return _new(t, i, x.shape, x.size)


cpdef object unary(int o, object x):
    """Record the elementwise unary op ``o`` on x."""
    cdef Var vx
    cdef Tape t
    cdef i64 i
    if type(x) is not Var:
        raise TypeError(f"{OP_NAMES[o]}: argument 'x' must be a fastape value, "
                        f"got {type(x).__name__}")
    vx = <Var>x
    t = vx.tape
    if vx.shape == SCALAR:
        return _new(t, t._rec1(o, vx.node, 0.0), SCALAR, 1)
    i = t.push(o, vx.node, vx.node, vx.size, 1)
    t.forward_node(i)
    return _new(t, i, vx.shape, vx.size)


cpdef object unary_k(int o, object x, double k):
    """Record the unary op ``o`` with immediate ``k`` on x (a *_K op)."""
    if type(x) is not Var:
        raise TypeError(f"{OP_NAMES[o]}: argument 'x' must be a fastape value")
    return _unary_k(<Var>x, o, k)


# -- shapes ------------------------------------------------------------------

def copy_as(Var x not None, tuple shape):
    """A copy of x with another shape of the same size (reshape)."""
    cdef Tape t = x.tape
    cdef i64 i
    if shape == SCALAR:
        if x.shape == SCALAR:
            return _new(t, t._rec1(COPY, x.node, 0.0), SCALAR, 1)
        return item(x, 0)
    i = t.push(COPY, x.node, x.node, x.size, 1)
    t.forward_node(i)
    return _new(t, i, shape, x.size)


def constant_like(Var x not None, value):
    """A constant node holding `value` on x's tape."""
    return _leaf(x.tape, CONSTANT, value, "constant", "value")


# ---------------------------------------------------------------------------

@cython.freelist(1024)
@cython.final
cdef class Var:
    """A value recorded on a :class:`Tape`: the tape and a node id.

    Arithmetic, numpy ufuncs and numpy functions applied to a Var record nodes on
    its tape. ``v.value`` reads the current value (a float or a new array).
    """
    __array_priority__ = 1000

    def __init__(self):
        raise TypeError("Var cannot be created directly: use Tape.var(value)")

    @property
    def value(self):
        """The current value: a float for a scalar, else a new float64 array."""
        self.tape._check()
        return _read(self.tape, self.tape.val, self)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def dtype(self):
        return np.dtype(np.float64)

    def __repr__(self):
        if self.tape._released:
            return f"Var(<released tape>, node={self.node})"
        return f"Var({self.value!r}, node={self.node})"

    def __hash__(self):
        return id(self) >> 4

    # arithmetic
    def __add__(self, other):
        return binary(ADD, self, other)

    def __radd__(self, other):
        return binary(ADD, other, self)

    def __sub__(self, other):
        return binary(SUB, self, other)

    def __rsub__(self, other):
        return binary(SUB, other, self)

    def __mul__(self, other):
        return binary(MUL, self, other)

    def __rmul__(self, other):
        return binary(MUL, other, self)

    def __truediv__(self, other):
        return binary(DIV, self, other)

    def __rtruediv__(self, other):
        return binary(DIV, other, self)

    def __pow__(self, other, mod):
        if mod is not None:
            raise TypeError("pow() with a modulus is not differentiable")
        return binary(POW, self, other)

    def __rpow__(self, other, mod):
        if mod is not None:
            raise TypeError("pow() with a modulus is not differentiable")
        return binary(POW, other, self)

    def __mod__(self, other):
        return binary(REMAINDER, self, other)

    def __rmod__(self, other):
        return binary(REMAINDER, other, self)

    def __matmul__(self, other):
        r = matmul_2d(self, other)
        return _py("linalg").matmul(self, other) if r is None else r

    def __rmatmul__(self, other):
        r = matmul_2d(other, self)
        return _py("linalg").matmul(other, self) if r is None else r

    def __neg__(self):
        return unary(NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return unary(ABS, self)

    def __round__(self, ndigits=None):
        if ndigits is not None:
            raise TypeError("round(v, ndigits) is not supported; use round(v)")
        return unary(ROUND, self)

    # comparisons: plain booleans of the values (recorded as guards by compile())
    def __lt__(self, other):
        return _compare(self, other, LT)

    def __le__(self, other):
        return _compare(self, other, LE)

    def __gt__(self, other):
        return _compare(self, other, GT)

    def __ge__(self, other):
        return _compare(self, other, GE)

    def __eq__(self, other):
        return _compare(self, other, EQ)

    def __ne__(self, other):
        return _compare(self, other, NE)

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a fastape value of shape {self.shape} is "
                             "ambiguous; use fastape.where for elementwise choices")
        return _compare(self, 0.0, NE)

    def __float__(self):
        raise TypeError(
            "float() of a fastape value would drop it from the tape (math.* functions "
            "do this too, and so does storing it into a numpy array: out = np.zeros(n); "
            "out[i] = v); use numpy or fastape functions (np.sqrt(x), fastape.exp(x)), "
            "build arrays with np.stack(list_of_values) or update a fastape array "
            "(y = x.copy(); y[i] = v), or read the number with x.value")

    def __int__(self):
        raise TypeError("int() of a fastape value would drop it from the tape; "
                        "use x.value to read the number")

    def __index__(self):
        raise TypeError("a fastape value cannot be used as an index")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "a fastape value cannot be converted to a numpy array (np.asarray, "
            "np.array, an ndarray slot): that would drop it from the tape. Use "
            "fastape.stack(list_of_values) to build an array value, numpy functions on the "
            "value itself (np.sum(x), np.exp(x)), or x.value to read the numbers")

    # containers
    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a scalar fastape value")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a scalar fastape value")
        for j in range(self.shape[0]):
            yield self[j]

    def __getitem__(self, key):
        cdef i64 j, n
        if type(key) is int and len(self.shape) == 1:
            n = self.shape[0]
            try:
                j = key
            except OverflowError:       # beyond int64: out of bounds as well
                j = -n - 1
            if j < 0:
                j += n
            if j < 0 or j >= n:
                raise IndexError(f"index {key} is out of bounds for axis 0 with size {n}")
            return item(self, j)
        from fastape import _functions
        return _functions.getitem(self, key)

    def __setitem__(self, key, value):
        """x[key] = value, numpy's semantics, recorded as a functional update: a new node
        (one gather of x and value, fastape._arrays.updated) that this Var then stands
        for. x's old multiplier flows through the elements left unchanged, value's
        through the ones written. Other Vars of the old value are unchanged (a slice
        is a copy, not a view)."""
        from fastape import _arrays
        cdef Var new = _arrays.updated(self, key, value)
        self.node = new.node

    # numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # the common cases first: a registry op called plainly, np.exp(x), x * arr, and
        # a matrix product, arr @ x
        if method == "__call__" and not kwargs:
            code = UFUNC_OPS.get(ufunc)
            if code is not None:
                if len(inputs) == 2:
                    return binary(<int>code, inputs[0], inputs[1])
                return unary(<int>code, inputs[0])
            if ufunc is _np_matmul:
                r = matmul_2d(inputs[0], inputs[1])
                return _py("linalg").matmul(inputs[0], inputs[1]) if r is None else r
        return _py("_numpy").array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _py("_numpy").array_function(func, args, kwargs)

    # numpy-style methods
    @property
    def T(self):
        from fastape import _functions
        return _functions.transpose(self)

    def transpose(self, *axes):
        from fastape import _functions
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return _functions.transpose(self, axes or None)

    def reshape(self, *shape):
        from fastape import _functions
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _functions.reshape(self, shape)

    def ravel(self, order="C"):
        from fastape import _arrays
        return _arrays.ravel(self, order)

    def flatten(self, order="C"):
        from fastape import _arrays
        return _arrays.ravel(self, order)

    def squeeze(self, axis=None):
        from fastape import _arrays
        return _arrays.squeeze(self, axis)

    def swapaxes(self, axis1, axis2):
        from fastape import _arrays
        return _arrays.swapaxes(self, axis1, axis2)

    def repeat(self, repeats, axis=None):
        from fastape import _arrays
        return _arrays.repeat(self, repeats, axis)

    def diagonal(self, offset=0, axis1=0, axis2=1):
        from fastape import _arrays
        return _arrays.diagonal(self, offset, axis1, axis2)

    def take(self, indices, axis=None):
        from fastape import _arrays
        return _arrays.take(self, indices, axis)

    def clip(self, min=None, max=None):  # noqa: A002 - numpy's names
        from fastape import _arrays
        return _arrays.clip(self, min, max)

    def copy(self, order="C"):
        """Another Var of the same value (the same node: an update of one through
        ``[...] =`` leaves the other as it was)."""
        return _new(self.tape, self.node, self.shape, self.size)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        """float64 (the only dtype of fastape values): the value itself; any other dtype
        would drop the derivative, so it raises."""
        if np.dtype(dtype) != np.float64:
            raise TypeError(f"astype({dtype!r}): fastape values are float64; converting "
                            "to another dtype would drop the derivative (read x.value "
                            "for the numbers)")
        return self

    def sort(self, axis=-1, kind=None, order=None):
        raise TypeError("fastape values are immutable: x.sort() sorts in place; use "
                        "y = numpy.sort(x) (or fastape.sort(x)), whose derivative follows "
                        "the permutation")

    def var(self, axis=None, ddof=0, keepdims=False):
        from fastape import _stats
        return _stats.var(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, ddof=0, keepdims=False):
        from fastape import _stats
        return _stats.std(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def ptp(self, axis=None, keepdims=False):
        from fastape import _stats
        return _stats.ptp(self, axis=axis, keepdims=keepdims)

    def trace(self, offset=0, axis1=0, axis2=1):
        return np.trace(self, offset, axis1, axis2)

    def sum(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.mean(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.prod(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.min(self, axis=axis, keepdims=keepdims)

    def cumsum(self, axis=None):
        from fastape import _functions
        return _functions.cumsum(self, axis=axis)

    def cumprod(self, axis=None):
        from fastape import _functions
        return _functions.cumprod(self, axis=axis)

    def dot(self, other):
        from fastape import _functions
        return _functions.dot(self, other)


# A Var is not a sequence to the C API: numpy, storing an object in a float array
# (z[0] = v), calls float() and, when that fails on an object that *is* a sequence,
# replaces our TypeError (which says what to do) with "setting an array element
# with a sequence". Indexing, len() and iteration go through the mapping slot and
# __iter__, which stay.
cdef extern from *:
    """
    static void fastape_not_a_sequence(PyTypeObject* t) {
        if (t->tp_as_sequence != NULL) t->tp_as_sequence->sq_item = NULL;
    }
    """
    void fastape_not_a_sequence(object t)

fastape_not_a_sequence(Var)


cpdef object compare(Var x, object other, int how):
    """x (<, <=, >, >=, ==, !=)[how] other on the values, or a predicate of x alone
    (ISNAN, ISINF, ISFINITE, SIGNBIT: other is ignored) (how: a Cmp)."""
    return _compare(x, x if how >= ISNAN else other, how)


cdef object _compare(Var x, object other, int how):
    """The comparison of values; reported to the tape's on_compare hook (compile()
    records it as a guard) while the tape is recording."""
    xv = x.value
    ov = other.value if type(other) is Var else other
    if how == LT:
        r = xv < ov
    elif how == LE:
        r = xv <= ov
    elif how == GT:
        r = xv > ov
    elif how == GE:
        r = xv >= ov
    elif how == EQ:
        r = xv == ov
    elif how == NE:
        r = xv != ov
    elif how == ISNAN:
        r = np.isnan(xv)
    elif how == ISINF:
        r = np.isinf(xv)
    elif how == ISFINITE:
        r = np.isfinite(xv)
    else:
        r = np.signbit(xv)
    if type(r) is np.bool_:
        r = bool(r)
    if x.tape.on_compare is not None and not x.tape._closed:
        if type(other) is not Var or (<Var>other).tape is not x.tape:
            other = _leaf(x.tape, CONSTANT, ov, "comparison", "other")
        x.tape.on_compare(how, x.node, (<Var>other).node, r)
    return r


# -- the tape as data, for the recorded reverse sweep (fastape._rules) -------------

def node_var(Tape t not None, i64 node, tuple shape):
    """A Var for recorded node `node` of t, viewed with `shape` (of its size)."""
    t._check()
    if node < 0 or node >= t.n or _prod(shape) != t.size_of(node):
        raise ValueError(f"node_var: node {node} of a tape of {t.n} nodes cannot have "
                         f"shape {shape}")
    return _new(t, node, shape, t.size_of(node))


def node_size(Tape t not None, i64 i):
    """The number of values of node i."""
    return int(t.size_of(i))


def node_record(Tape t not None, i64 i):
    """(opcode, a, b, size, params) of node i: b is the immediate k (a float) for ops
    whose b field is a pool index, params the node's parameter struct after its size
    field (a tuple of ints)."""
    t._check()
    cdef int o = t.op[i]
    cdef i64 j, m = t.nparams_of(i)
    cdef i64* P
    b = t.pool[t.b[i]] if b_kind(o) == B_POOL else int(t.b[i])
    params = ()
    if m:
        P = t.params(i)
        params = tuple(int(P[j]) for j in range(1, m))
    return o, int(t.a[i]), b, int(t.size_of(i)), params


def dependents(Tape t not None, leaves, i64 top):
    """The nodes 0..top that depend on any of `leaves` (node ids), ascending: their
    parents (a, b and node-id parameters) reach a leaf."""
    t._check()
    cdef i64 lo = top + 1, i, q, pos
    cdef int o
    cdef i64* P
    for v in leaves:
        if v < lo:
            lo = v
    if lo > top:
        return []
    dep = np.zeros(top - lo + 1, dtype=np.uint8)
    cdef unsigned char[::1] d = dep
    for v in leaves:
        if v <= top:
            d[v - lo] = 1
    out = []
    for i in range(lo, top + 1):
        o = t.op[i]
        if not d[i - lo] and not is_leaf(o):
            if t.a[i] >= lo and d[t.a[i] - lo]:
                d[i - lo] = 1
            elif b_kind(o) == B_NODE and t.b[i] >= lo and d[t.b[i] - lo]:
                d[i - lo] = 1
            elif t.off != NULL and t.poff[i] >= 0:
                P = t.params(i)
                for q in range(node_param_count(o, P)):
                    pos = P[node_param_pos(o, P, q)]
                    if pos >= lo and d[pos - lo]:
                        d[i - lo] = 1
                        break
        if d[i - lo]:
            out.append(i)
    return out
