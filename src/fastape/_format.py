"""fastape's file format for tapes and compiled functions, and its validation.

Layout (format version 1). A file is a zip archive of *stored* (uncompressed)
``.npy`` members, which is what ``numpy.savez`` writes, so ``numpy.load(path)``
opens it (``allow_pickle=False``: no member holds an object array):

``header.npy``
    a uint8 array holding a UTF-8 JSON document: ``magic`` (``"fastape"``),
    ``format_version`` (1), ``fastape_version``, ``registry`` (the op registry's
    fingerprint, :func:`registry_fingerprint`), ``kind`` (``"tape"`` or
    ``"function"``), ``arrays`` (every other member's dtype and shape: each
    member's CRC-32 is the zip's own, checked on load), ``tapes`` (per tape: node
    count, layout and the names of its custom rules; the sweeps' scratch is sized
    from the nodes' parameters on load) and, for a
    function, ``function`` (argnums, retrace, the arguments' structure, per trace
    its output node and shape and whether it is grouped).
``checksum.npy``
    uint32 ``[crc32(header bytes)]``.
``t{k}.op``, ``.a``, ``.b``, ``.val``, ``.pool`` (and ``.off``, ``.poff``, ``.P``)
    tape k's struct-of-arrays buffers, as :meth:`fastape.Tape.export` returns them,
    the last three for the general layout only (uint8 opcodes, int32 parents, float64
    values and immediates, int64 offsets and parameter arena).
``r{k}.inputs``, ``r{k}.guards``, ``r{k}.expect`` (and ``r{k}.outs``)
    trace k of a function: its input nodes (int64, one per argument leaf), its
    branch guards (int64, one row per guard: comparison, x node, y node, offset and
    count of its expected results, x and y strides) and their expected results; for
    an output held as scalar nodes (a scalar-layout trace of a stacked output), the
    node of each output element (int64; the trace's output node is then their maximum).
``example``
    the example arguments a function was compiled on, their leaves flattened and
    concatenated (float64).

Every member's data is contiguous in the file (stored, not deflated). fastape writes
the container itself (not through zipfile): the fields zipfile writes with
``force_zip64`` (ZIP64 sizes in every header; ZIP64 end records past 4 GiB), dates
fixed at 1980-01-01 so that one tape always gives the same bytes, and each member's
CRC-32 computed chunk by chunk as it is written (folded with carry-less
multiplication, ``_format_check.pxi``, where the processor has it: zlib's table runs
~2-3 GB/s, the fold at memory speed). Any zip reader reads the files, and this one
reads files of any zip writer that stores the same members (numpy.savez's too).

Loading validates everything before any sweep can read it and raises
:class:`fastape.TapeFormatError` naming the first bad field: the header and its
checksum, the format version (a newer one is refused), the registry fingerprint
(a file of another op table is refused), each array's dtype, shape and CRC-32,
then per node: the opcode is known, parents are below the node's own id, the
value offsets and sizes tile the value arena, immediates' indices lie in the pool
(one pass in C each, ``_format_check.pxi``), each parameter struct has its op's
length and fields that fit its parents' sizes; per trace: inputs, output and guards
point inside the tape. A file never runs code when loaded: it holds no pickle, and
the classes of a function's argument structure are looked up among the modules
already imported, never imported. A tape's records are read straight into the
tape's own buffers, 1 MiB at a time, each chunk checksummed while it is in cache; a
file of 64 MiB or more by two threads, each its half of the members (_read_arrays).

``Tape.load(path, mmap=True)`` (and ``fastape.load`` of a tape file) is O(1) in the
size of the records: at the load it checks the zip directory, every member's place
and .npy header, the header document and its checksum, the format version, the
registry fingerprint, the list of arrays and the rule names, and allocates the tape
(untouched memory); the records are read into it, checksummed and validated, all of
the above, at its first use (any method that reads it: a sweep, ``node``,
``opcodes``, ``export``, ``save``, pickling), which raises TapeFormatError if they
fail, then and at every later use; until then the tape is unusable, so no sweep
reads an unchecked field. The file stays open until then (a file changed meanwhile
is read as it is then, and checked). They are read, not mapped: a sweep writes the
value arena, and the tape owns its buffers (the arena pool, release).

``fastape.load(path, mmap=True)`` of a compiled function's file is O(1) as well: the
same checks of the directory and the header at the load, and the custom rules the
file names (``callbacks=``); it returns a Function (of a subclass,
_mapped_function_class) whose every method and attribute first reads all members,
checksums and validates them and builds the function in place, exactly as the eager
load (_DeferredFunction), or raises TapeFormatError then and at every later use.
Until then its compiled state is empty and unreachable: only Function's own methods
read it, and each of them passes through that wrapper first.
"""

import functools
import importlib
import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from hashlib import sha256

import numpy as np

from fastape import registry
from fastape.errors import TapeFormatError

__all__ = ["load", "read", "from_parts", "registry_fingerprint", "FORMAT_VERSION"]

MAGIC = "fastape"
FORMAT_VERSION = 1

_CODES = registry.opcodes()
_NAMES = {c: n for n, c in _CODES.items()}
NUM_OPS = len(_CODES)
INPUT, CONSTANT = _CODES["INPUT"], _CODES["CONSTANT"]
_BY_NAME = registry.BY_NAME
_CMP_COUNT = len(registry.COMPARISONS)
INT_MAX = 2**31 - 1


def _kinds():
    """Per opcode: 0 leaf, 1 unary, 2 unary with immediate, 3 binary, 4 structural."""
    kind = np.zeros(NUM_OPS, np.int8)
    for name, code in _CODES.items():
        e = _BY_NAME.get(name)
        if name in registry.LEAVES:
            kind[code] = 0
        elif isinstance(e, registry.Structural):
            kind[code] = 4
        else:
            kind[code] = 2 if e.has_k else (3 if e.arity == 2 else 1)
    return kind


_KIND = _kinds()


def registry_fingerprint():
    """SHA-256 of the op table a file's opcodes refer to: every op's name, opcode,
    arity class and node-id fields (``b`` and ``node_params``). Two builds with the
    same fingerprint agree on what every opcode means."""
    rows = []
    for name, code in sorted(_CODES.items(), key=lambda kv: kv[1]):
        e = _BY_NAME.get(name)
        if isinstance(e, registry.Structural):
            rows.append([name, code, "structural", e.b, list(e.node_params)])
        elif e is None:
            rows.append([name, code, "leaf"])
        else:
            rows.append([name, code, e.arity, e.has_k])
    return sha256(json.dumps(rows).encode()).hexdigest()


_FINGERPRINT = registry_fingerprint()


def _version():
    from fastape import __version__
    return __version__


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

#: bytes read or written per call, then checksummed while they are in cache
_CHUNK = 1 << 20


def _crc32(view, crc):
    """zlib.crc32(view, crc): folded with carry-less multiplication (_format_check.pxi,
    at memory speed) where the processor has it, zlib's table (~2-3 GB/s) elsewhere."""
    from fastape import _tape
    return _tape._crc32(view, crc) if _tape.CRC32_FOLDS else zlib.crc32(view, crc)


def _chunks(view):
    return [view[q:q + _CHUNK] for q in range(0, len(view), _CHUNK)]


def _bytes_of(a):
    a = np.asarray(a, order="C")
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")


def _tape_parts(tape, k, arrays, rules):
    """Tape k's arrays into `arrays` and its rule objects appended to `rules`; returns
    its header entry."""
    buf = tape._buffers()
    for name, a in buf.items():
        arrays[f"t{k}.{name}"] = a
    objs = tape.pyobjs or []
    rules.extend(objs)
    return {"n": int(buf["op"].shape[0]), "general": "off" in buf,
            "rules": [getattr(r, "name", type(r).__name__) for r in objs]}


# the zip container, written here (not by zipfile) so that a member's CRC-32 is
# computed chunk by chunk beside its write, by _crc32; every field as
# zipfile itself writes with force_zip64 (ZIP64 sizes in the local headers), the
# dates fixed (1980-01-01), so one tape always gives the same bytes
_ZIP_TIME, _ZIP_DATE = 0, (0 << 9) | (1 << 5) | 1
_U32 = 0xFFFFFFFF
#: from what size or offset ZIP64 fields are written in the central directory and its
#: end records (lowered by a test)
_ZIP64_END_FROM = _U32


def _local_header(name, size):
    extra = struct.pack("<HHQQ", 1, 16, size, size)
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, _ZIP_TIME, _ZIP_DATE, 0,
                       _U32, _U32, len(name), len(extra)) + name + extra


def _central(entries, start):
    """The central directory and end records of members (name, size, crc, offset)
    whose directory starts at byte `start`."""
    out = []
    for name, size, crc, offset in entries:
        extra = b""
        if max(size, offset) >= _ZIP64_END_FROM:        # ZIP64 only where needed, as
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)    # zipfile does
            size = offset = _U32
        out.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, _ZIP_TIME,
                               _ZIP_DATE, crc, size, size, len(name), len(extra), 0, 0,
                               0, 0, offset) + name + extra)
    body = b"".join(out)
    n, end = len(entries), start + len(body)
    tail = b""
    if n >= 0xFFFF or max(start, len(body)) >= _ZIP64_END_FROM:
        tail = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(body),
                           start) + struct.pack("<IIQI", 0x07064B50, 0, end, 1)
        n, size, start = 0xFFFF, _U32, _U32
    else:
        size = len(body)
    return body + tail + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, size, start, 0)


def _write(target, header, arrays):
    """The zip of header, checksum and arrays (stored .npy members) into a path or a
    seekable binary file."""
    header = dict(header, magic=MAGIC, format_version=FORMAT_VERSION,
                  fastape_version=_version(), registry=_FINGERPRINT)
    # each member's CRC-32 is the zip's own (computed as it is written)
    header["arrays"] = {name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()}
    hbytes = json.dumps(header).encode()
    hdr = np.frombuffer(hbytes, np.uint8)
    members = [("header", hdr), ("checksum", np.array([zlib.crc32(hbytes)], np.uint32))] \
        + list(arrays.items())
    f = open(target, "wb") if isinstance(target, (str, bytes, os.PathLike)) else target
    try:
        base = f.tell()
        entries = []
        for name, a in members:
            a = np.asarray(a, order="C")
            # the header numpy.save writes (the reader compares it byte for byte)
            npy = _npy_header(a.dtype.str, a.shape)
            data = _bytes_of(a)
            zname = (name + ".npy").encode()
            offset = f.tell() - base
            f.write(_local_header(zname, len(npy) + len(data)))
            f.write(npy)
            crc = zlib.crc32(npy)
            for c in _chunks(data):
                crc = _crc32(c, crc)
                f.write(c)
            entries.append((zname, len(npy) + len(data), crc, offset))
        end = f.tell()
        for _, _, crc, offset in entries:   # each local header's CRC-32, now known
            f.seek(base + offset + 14)
            f.write(struct.pack("<I", crc))
        f.seek(end)
        f.write(_central(entries, end - base))
    finally:
        if f is not target:
            f.close()


def save_tape(tape, path):
    arrays, rules = {}, []
    info = _tape_parts(tape, 0, arrays, rules)
    _write(path, {"kind": "tape", "tapes": [info]}, arrays)


def save_function(F, path):
    _write(path, *_function_parts(F)[:2])


def _function_parts(F):
    meta, treedef, example, traces = F._state()
    arrays, rules, tapes, trs = {}, [], [], []
    for k, (tape, d) in enumerate(traces):
        tapes.append(_tape_parts(tape, k, arrays, rules))
        arrays[f"r{k}.inputs"] = np.asarray(d["inputs"], dtype=np.int64)
        arrays[f"r{k}.guards"] = np.stack([np.asarray(d[g], dtype=np.int64)
                                           for g in _GUARD_FIELDS], axis=1) \
            if d["g_how"].shape[0] else np.zeros((0, len(_GUARD_FIELDS)), np.int64)
        arrays[f"r{k}.expect"] = np.asarray(d["g_expect"], dtype=np.float64)
        if d.get("outs") is not None:
            arrays[f"r{k}.outs"] = np.asarray(d["outs"], dtype=np.int64)
        trs.append({"output": d["output"], "out_shape": d["out_shape"],
                    "grouped": d["grouped"]})
    arrays["example"] = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1)
                                        for x in example] or [np.zeros(0)])
    meta = dict(meta, traces=trs, args=_tree_to_json(treedef))
    return {"kind": "function", "tapes": tapes, "function": meta}, arrays, rules


def function_rules(F):
    return _function_parts(F)[2]


# ---------------------------------------------------------------------------
# the arguments' structure as JSON (fastape._tree keys without pickling types)
# ---------------------------------------------------------------------------

# complex: a complex argument, the container of its real and imaginary parts (_tree)
_BUILTIN_TYPES = {"tuple": tuple, "list": list, "dict": dict, "complex": complex}


def _type_name(cls):
    for name, t in _BUILTIN_TYPES.items():
        if cls is t:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def _tree_to_json(td):
    return _node_json(td._key, td._aux)


def _node_json(key, aux):
    from fastape._tree import _is_leaf
    if key is None:
        return None
    if _is_leaf(key):
        return [int(d) for d in key]
    cls, keys, children = key
    auxes = aux[1] if aux is not None else (None,) * len(children)
    out = {"type": _type_name(cls), "children": [_node_json(k, a)
                                                 for k, a in zip(children, auxes)]}
    if keys is not None:
        order, factory = aux[0]
        if factory is not None:
            raise TypeError("save: the arguments hold a defaultdict with a default "
                            "factory, which is code and is not saved; pass a dict")
        for k in keys:
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"save: the arguments hold a dict key {k!r} of type "
                                f"{type(k).__name__}; only str, int, float, bool and None "
                                "keys can be saved")
        out["keys"] = list(keys)
        out["order"] = list(order)
    return out


def _resolve_type(name, where):
    if name in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[name]
    if not isinstance(name, str) or ":" not in name:
        raise TapeFormatError(f"{where}: field 'function.args': bad container type {name!r}")
    module, qual = name.split(":", 1)
    obj = sys.modules.get(module)        # never imported here: loading runs no code
    for part in qual.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if not isinstance(obj, type) or not issubclass(obj, (tuple, list, dict)):
        raise TapeFormatError(f"{where}: the arguments' structure uses the class {name}, "
                              f"which is not a container class of a module imported in this "
                              f"process; import {module} before loading")
    return obj


def _tree_from_json(obj, where):
    from fastape._tree import _make
    key, aux = _node_from_json(obj, where, 0)
    return _make(key, aux, None)


def _node_from_json(obj, where, depth):
    if depth > 200:
        raise TapeFormatError(f"{where}: field 'function.args' is nested too deeply")
    if obj is None:
        return None, None
    if isinstance(obj, list):
        if not all(type(d) is int and 0 <= d < 2**62 for d in obj):
            raise TapeFormatError(f"{where}: field 'function.args': bad leaf shape {obj!r}")
        return tuple(obj), None
    if not isinstance(obj, dict) or not isinstance(obj.get("children"), list):
        raise TapeFormatError(f"{where}: field 'function.args': bad node {obj!r:.80}")
    cls = _resolve_type(obj.get("type"), where)
    kids = [_node_from_json(c, where, depth + 1) for c in obj["children"]]
    keys = None
    extra = None
    if issubclass(cls, dict):
        keys, order = obj.get("keys"), obj.get("order")
        if not (isinstance(keys, list) and isinstance(order, list) and len(keys) == len(kids)
                and sorted(map(repr, order)) == sorted(map(repr, keys))):
            raise TapeFormatError(f"{where}: field 'function.args': a dict's keys and "
                                  "children do not match")
        try:
            if list(keys) != sorted(keys):
                raise TypeError
        except TypeError:
            raise TapeFormatError(f"{where}: field 'function.args': a dict's keys are not "
                                  "sorted") from None
        keys = tuple(keys)
        extra = (tuple(order), None)
    elif issubclass(cls, tuple) and hasattr(cls, "_fields") and len(cls._fields) != len(kids):
        raise TapeFormatError(f"{where}: field 'function.args': {cls.__name__} has "
                              f"{len(cls._fields)} fields, the file {len(kids)}")
    if cls is complex and not (len(kids) == 2 and kids[0] == kids[1]
                               and type(kids[0][0]) is tuple and kids[0][1] is None):
        raise TapeFormatError(f"{where}: field 'function.args': a complex value needs two "
                              "leaves of one shape (its real and imaginary parts)")
    key = (cls, keys, tuple(k for k, _ in kids))
    auxes = tuple(a for _, a in kids)
    aux = (extra, auxes) if extra is not None or any(a is not None for a in auxes) else None
    return key, aux


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def _members(f, where):
    """name -> (offset of the member's bytes in the file, their length, their CRC-32)
    of every member (the zip's directory; no member is read)."""
    try:
        infos = zipfile.ZipFile(f).infolist()
    except Exception as e:          # zipfile raises many kinds on a damaged directory
        raise TapeFormatError(f"{where}: not a fastape file (not a readable zip archive: "
                              f"{type(e).__name__}: {e})") from None
    size = f.seek(0, 2)
    out = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in out:
            raise TapeFormatError(f"{where}: unexpected member {name!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
            raise TapeFormatError(f"{where}: member {name!r} is compressed or encrypted")
        if not 0 <= info.header_offset < size:
            raise TapeFormatError(f"{where}: member {name!r}: bad zip entry")
        f.seek(info.header_offset)
        local = f.read(30)
        nlen = int.from_bytes(local[26:28], "little")
        if len(local) != 30 or local[:4] != b"PK\x03\x04" or f.read(nlen) != name.encode():
            raise TapeFormatError(f"{where}: member {name!r}: bad zip entry")
        start = info.header_offset + 30 + nlen + int.from_bytes(local[28:30], "little")
        if start + info.file_size > size:
            raise TapeFormatError(f"{where}: member {name!r} is truncated")
        out[name[:-4]] = (start, info.file_size, info.CRC)
    return out


@functools.lru_cache(maxsize=4096)
def _npy_header(dtype, shape):
    """The .npy header numpy writes for a C-ordered array of this dtype (a dtype string)
    and shape: version 1.0, or 2.0 when that is too long."""
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
         "shape": tuple(shape)}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _read_array(f, member, name, dtype, shape, where, out=None, fd=None):
    """(array, its member's CRC-32) of member `name` (its bytes at member = (start,
    length)), read into `out` if given: the member's .npy header must be the one numpy
    writes for this dtype and shape (so the file reads the same with numpy.load), the
    data exactly as long as they say. With `fd` (f's descriptor) it reads by pread,
    which leaves f's position alone, so that two threads can read one file."""
    start, length = member[:2]
    if not (isinstance(shape, (list, tuple)) and len(shape) <= 32 and
            all(type(d) is int and 0 <= d < 2**62 for d in shape)):
        raise TapeFormatError(f"{where}: field {name!r}: bad shape {shape!r:.40}")
    try:
        dtype = np.dtype(dtype) if isinstance(dtype, str) and len(dtype) < 8 else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "uif":
        raise TapeFormatError(f"{where}: field {name!r}: not a numeric dtype")
    nbytes = _prod(shape) * dtype.itemsize
    hdr = _npy_header(dtype.str, tuple(shape))
    if fd is None:
        f.seek(start)
    if length != len(hdr) + nbytes or (f.read(len(hdr)) if fd is None else
                                       os.pread(fd, len(hdr), start)) != hdr:
        raise TapeFormatError(f"{where}: field {name!r}: the member is not a .npy array of "
                              f"dtype {dtype} and shape {tuple(shape)} (damaged or truncated)")
    try:
        if out is None:
            out = np.empty(shape, dtype)
    except MemoryError:
        raise MemoryError(f"{where}: cannot allocate {nbytes} bytes for member "
                          f"{name!r}") from None
    crc = zlib.crc32(hdr)
    at = start + len(hdr)
    for c in _chunks(memoryview(out.reshape(-1).view(np.uint8))) if nbytes else ():
        if (f.readinto(c) if fd is None else os.preadv(fd, [c], at)) != len(c):
            raise TapeFormatError(f"{where}: field {name!r} is truncated")
        crc = _crc32(c, crc)
        at += len(c)
    return out, crc


def _open(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source), "fastape data"
    path = str(source)
    try:
        return open(path, "rb"), path
    except OSError as e:
        raise e.__class__(e.errno, f"fastape.load: cannot open {path}: {e.strerror}") from None


def read(source):
    """(header, arrays, where) of a file (a path or its bytes): the header, its checksum
    and every array's dtype, shape and CRC-32 verified."""
    f, where = _open(source)
    with f:
        header, members = _read_header(f, where)
        arrays = _Arrays()
        views = _homes(header, header["arrays"], members, arrays.homes)
        _read_arrays(f, header["arrays"], members, views, arrays, where)
    return header, arrays, where


def _read_header(f, where):
    """(header, members) of an open file: the zip directory, the header and its
    checksum, the format version and registry fingerprint, and the list of arrays
    against the members. Reads only the directory and the header (O(1) in the size of
    the arrays)."""
    members = _members(f, where)
    if "header" not in members or "checksum" not in members:
        raise TapeFormatError(f"{where}: not a fastape file (no header member)")
    start, length = members["header"][:2]
    hlen = length - len(_npy_header("|u1", (0,)))
    if not 0 <= hlen <= 1 << 26:
        raise TapeFormatError(f"{where}: field 'header': not a uint8 JSON document")
    hbytes = _read_array(f, members["header"], "header", "|u1", [hlen], where)[0].tobytes()
    c = _read_array(f, members["checksum"], "checksum", "<u4", [1], where)[0]
    if int(c[0]) != zlib.crc32(hbytes):
        raise TapeFormatError(f"{where}: field 'checksum': the header's checksum does "
                              "not match (the file is corrupt)")
    try:
        header = json.loads(hbytes.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TapeFormatError(f"{where}: field 'header': not JSON ({e})") from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise TapeFormatError(f"{where}: field 'magic': not a fastape file")
    version = header.get("format_version")
    if type(version) is not int:
        raise TapeFormatError(f"{where}: field 'format_version': {version!r}")
    if version > FORMAT_VERSION:
        raise TapeFormatError(
            f"{where}: field 'format_version': the file has format version {version}, "
            f"written by fastape {header.get('fastape_version')!r}; this fastape "
            f"({_version()}) reads versions up to {FORMAT_VERSION}: upgrade fastape")
    if version < 1:
        raise TapeFormatError(f"{where}: field 'format_version': {version}")
    if header.get("registry") != _FINGERPRINT:
        raise TapeFormatError(
            f"{where}: field 'registry': the file was written by a fastape whose op "
            f"registry differs (fastape {header.get('fastape_version')!r}, fingerprint "
            f"{str(header.get('registry'))[:12]}..., this build {_FINGERPRINT[:12]}...): "
            "its opcodes mean other ops here")
    declared = header.get("arrays")
    if not isinstance(declared, dict) or set(declared) != set(members) - {"header",
                                                                         "checksum"}:
        raise TapeFormatError(f"{where}: field 'arrays': the header's list of arrays "
                              "differs from the file's members")
    for name, d in declared.items():
        if not (isinstance(d, list) and len(d) == 2):
            raise TapeFormatError(f"{where}: field {name!r}: bad entry {d!r:.60}")
    return header, members


#: bytes of members from which a file is read by two threads (each its own members)
_PARALLEL_FROM = 64 << 20


def _read_arrays(f, declared, members, views, arrays, where):
    """Every declared array into `arrays` (into views[name] where given), each CRC-32
    checked against the zip's. A large file on disk is read by two threads, the members
    split in two halves of about equal size: most of a large load is the kernel
    zeroing the fresh pages it reads into (clear_page: 47 % of a 10^8-node load's
    profile) and copying from the page cache, which the second core halves. Every
    member is read even after a bad one, so that the bad field refused is the first
    in the order of `declared`, as when they are read in turn."""
    names = list(declared)
    fd = None
    if sum(members[nm][1] for nm in names) >= _PARALLEL_FROM and len(names) > 1 \
            and os.cpu_count() and os.cpu_count() > 1 and hasattr(os, "preadv"):
        try:
            fd = f.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = None
    if fd is None:
        for name in names:
            _read_member(f, declared, members, views, arrays, where, name, None)
        return
    import threading
    halves, sizes = ([], []), [0, 0]
    for name in sorted(names, key=lambda nm: -members[nm][1]):     # largest first
        k = int(sizes[1] < sizes[0])
        halves[k].append(name)
        sizes[k] += members[name][1]
    errors = {}

    def read(half):
        for name in half:
            try:
                _read_member(f, declared, members, views, arrays, where, name, fd)
            except BaseException as e:          # re-raised below, in declared order
                errors[name] = e
    helper = threading.Thread(target=read, args=(halves[1],), name="fastape-load")
    helper.start()
    try:
        read(halves[0])
    finally:
        helper.join()
    if errors:
        raise errors[min(errors, key=names.index)]


def _read_member(f, declared, members, views, arrays, where, name, fd):
    d = declared[name]
    arrays[name], crc = _read_array(f, members[name], name, d[0], d[1], where,
                                    views.get(name), fd)
    if crc != members[name][2]:
        raise TapeFormatError(f"{where}: field {name!r}: checksum mismatch (the "
                              "file is corrupt)")


class _Arrays(dict):
    """A read file's arrays by member name; ``homes`` holds the tapes its records were
    read into (see _homes). A copy (``dict(arrays)``) has none: it is loaded by
    copying."""

    def __init__(self):
        super().__init__()
        self.homes = {}


def _homes(header, declared, members, homes):
    """Tapes allocated to read each tape's records straight into (no copy after
    validation): homes[k] = [tape, its views, adopted?]; returns name -> view. Only
    where every record member is exactly as long as its declared dtype and shape say
    (else the plain path reads, and refuses, it)."""
    from fastape import _tape
    from fastape._tape import Tape
    views = {}
    tapes = header.get("tapes")
    if not isinstance(tapes, list):
        return views
    for k in range(len(tapes)):
        names = [f"t{k}.{f}" for f in _TAPE_FIELDS]
        general = f"t{k}.off" in declared
        need = [n for n in names if general or n.split(".")[1] not in ("off", "poff", "P")]
        dims = {}
        for n in need:
            d = declared.get(n)
            if not (isinstance(d, list) and len(d) == 2 and isinstance(d[1], list)
                    and len(d[1]) == 1 and type(d[1][0]) is int and 0 <= d[1][0] < 2**40
                    and d[0] == np.dtype(_TAPE_FIELDS[n.split(".")[1]]).str
                    and members[n][1] == len(_npy_header(d[0], tuple(d[1])))
                    + d[1][0] * np.dtype(d[0]).itemsize):
                break
            dims[n.split(".")[1]] = d[1][0]
        else:
            if not dims["op"] == dims["a"] == dims["b"] == dims.get("off", dims["op"]) == \
                    dims.get("poff", dims["op"]):
                continue
            tape, v = Tape._allocated(dims["op"], dims["val"], dims["pool"], dims.get("P", 0),
                                      general)
            for x in v.values():
                if x.size:
                    _tape._advise_huge(x.view(np.uint8))
            homes[k] = [tape, {f"t{k}.{f}": x for f, x in v.items()}, False]
            views.update(homes[k][1])
    return views


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

#: the columns of a trace's guards array, one row per guard (see _compiled.Trace)
_GUARD_FIELDS = ("g_how", "g_x", "g_y", "g_off", "g_size", "g_sx", "g_sy")

_TAPE_FIELDS = {"op": np.uint8, "a": np.int32, "b": np.int32, "val": np.float64,
                "pool": np.float64, "off": np.int64, "poff": np.int64, "P": np.int64}


def _bad(where, field, i, msg):
    at = "" if i is None else f" at node {int(i)}"
    return TapeFormatError(f"{where}: field {field!r}{at}: {msg}")


def _first(mask):
    return int(np.flatnonzero(mask)[0])


def _record_flags():
    """Per opcode, what its a and b must be (the F_ flags of _format_check.pxi)."""
    leaf, b_node, b_is_a, b_pool, struct, elem = 1, 2, 4, 8, 16, 32
    flags = np.zeros(NUM_OPS, np.uint8)
    node_b = {_CODES[s.name] for s in registry.STRUCTURAL if s.b == "node"}
    for code in range(NUM_OPS):
        kind = int(_KIND[code])
        flags[code] = {0: leaf, 1: b_is_a | elem, 2: b_pool | elem, 3: b_node | elem,
                       4: struct}[kind]
        if code in node_b:
            flags[code] |= b_node
        if code == _CODES["GATHER1"]:
            flags[code] |= b_pool
    return flags


_RECORD_FLAGS = _record_flags()


def _records_error(code, i, op, a, b, npool, where):
    """The TapeFormatError of _check_records' (code, node)."""
    o = int(op[i])
    if code == 1:
        return _bad(where, "op", i, f"opcode {o} is unknown to this build ({NUM_OPS} ops)")
    nm, ai, bi = _NAMES[o], int(a[i]), int(b[i])
    return {
        2: lambda: _bad(where, "a", i, f"a leaf ({nm}) has parents {ai}, {bi}; leaves have "
                        "-1"),
        3: lambda: _bad(where, "a", i, f"parent id {ai} of {nm} is not below the node's "
                        "own id"),
        4: lambda: _bad(where, "b", i, f"parent id {bi} of {nm} is not below the node's "
                        "own id"),
        5: lambda: _bad(where, "b", i, f"a unary op's b ({bi}) must repeat its a ({ai})"),
        6: lambda: _bad(where, "b", i, f"immediate index {bi} is outside the pool of "
                        f"{npool}"),
        7: lambda: _bad(where, "b", i, f"{nm} has no second parent; b must be -1"),
        8: lambda: _bad(where, "op", i, f"{nm} in the scalar layout (it needs the general "
                        "layout's parameters)"),
    }[code]()


def _layout_error(code, i, op, a, b, off, poff, P, nval, where):
    """The TapeFormatError of _check_layout's (code, node)."""
    nP = P.shape[0]
    if code == 19:
        return _bad(where, "val", None, f"the nodes' sizes do not add up to the {nval} "
                    "values of the value arena")
    if code == 20:
        return _bad(where, "P", None, f"{nP} parameters but no node has a struct")
    nm = _NAMES[int(op[i])]

    def size(j):
        return int(off[j + 1] - off[j])
    return {
        10: lambda: _bad(where, "poff", i, f"parameter offset {int(poff[i])} outside the "
                         f"parameter arena of {nP}"),
        11: lambda: _bad(where, "poff", i, "parameter structs must follow each other in "
                         "node order from 0"),
        12: lambda: _bad(where, "P", i, f"negative size {int(P[poff[i]])}"),
        13: lambda: _bad(where, "poff", i, f"{nm} has no parameter struct"),
        14: lambda: _bad(where, "P", i, f"{nm} has a struct of more than one field; "
                         "elementwise ops and leaves have 1 (their size)"),
        15: lambda: _bad(where, "off", i, f"value offset {int(off[i])} out of place (the "
                         "nodes' values follow each other)"),
        16: lambda: _bad(where, "val", i, f"the nodes' sizes up to this one exceed the "
                         f"value arena of {nval}"),
        17: lambda: _bad(where, "a", i, f"{nm} reads a parent of size {size(int(a[i]))} "
                         "that is neither 1 nor its own size"),
        18: lambda: _bad(where, "b", i, f"{nm} reads a parent of size {size(int(b[i]))} "
                         "that is neither 1 nor its own size"),
    }[code]()


def _required_work(arrays):
    """Doubles of scratch the sweeps of these records need (LU pivots, solves,
    determinant adjoints), from the nodes' own parameters."""
    if "off" not in arrays:
        return 0
    op, poff, P = arrays["op"], arrays["poff"], arrays["P"]
    need = 0
    for name, f in (("LU", lambda n, r: n), ("SOLVE", lambda n, r: n * r),
                    ("DET", lambda n, r: n * n + 2 * n), ("LOGDET", lambda n, r: n * n + 2 * n)):
        for i in np.flatnonzero(op == _CODES[name]):
            m = int(poff[i])
            n = int(P[m + 1])
            r = int(P[m + 2]) if name == "SOLVE" else 0
            need = max(need, f(n, r))
    return need


def validate_tape(arrays, info, where, nrules):
    """Check tape records (dict of arrays: the keys of Tape.export) before any sweep
    reads them; returns (sizes, slot starts) of the nodes. Raises TapeFormatError."""
    if not isinstance(info, dict) or type(info.get("n")) is not int or \
            type(info.get("general")) is not bool:
        raise TapeFormatError(f"{where}: field 'tapes': bad entry {info!r:.80}")
    n = info["n"]
    general = info["general"]
    need = ["op", "a", "b", "val", "pool"] + (["off", "poff", "P"] if general else [])
    for name in need:
        a = arrays.get(name)
        if a is None:
            raise _bad(where, name, None, "missing")
        if a.dtype != _TAPE_FIELDS[name] or a.ndim != 1:
            raise _bad(where, name, None, f"dtype {a.dtype}, {a.ndim} dimensions; "
                       f"expected a vector of {np.dtype(_TAPE_FIELDS[name])}")
        if name in ("op", "a", "b", "off", "poff") and a.shape[0] != n:
            raise _bad(where, name, None, f"{a.shape[0]} entries for {n} nodes")
    if n > 2**31 - 2:
        raise _bad(where, "op", None, f"{n} nodes; a tape holds at most 2**31 - 2")
    from fastape import _tape
    op = np.asarray(arrays["op"])
    a = np.asarray(arrays["a"])
    b = np.asarray(arrays["b"])
    nval = arrays["val"].shape[0]
    npool = arrays["pool"].shape[0]
    # one pass in C (_format_check.pxi): numpy's dozen passes cost most of a load
    code, i = _tape._check_records(op, a, b, _RECORD_FLAGS, npool, general)
    if code:
        raise _records_error(code, i, op, a, b, npool, where)
    if not general:
        if nval != n:
            raise _bad(where, "val", None, f"{nval} values for {n} scalar nodes")
        return None, None           # sizes 1, offsets the node ids
    off = np.asarray(arrays["off"])
    poff = np.asarray(arrays["poff"])
    P = np.asarray(arrays["P"])
    code, i = _tape._check_layout(op, a, b, off, poff, P, _RECORD_FLAGS, nval)
    if code:
        raise _layout_error(code, i, op, a, b, off, poff, P, nval, where)
    size = np.diff(off, append=nval)
    kind = _KIND[op]
    has = poff >= 0
    span = np.zeros(n, np.int64)
    span[has] = np.diff(np.append(poff[has], P.shape[0]))
    pool = np.asarray(arrays["pool"])
    val = np.asarray(arrays["val"])
    for i in np.flatnonzero(kind == 4):
        _check_struct(int(i), _NAMES[int(op[i])], int(a[i]), int(b[i]), size, op,
                      P, int(poff[i]), int(span[i]), pool, nrules, where, val, off)
    return size, off


def _check_struct(i, name, a, b, size, op, P, m, span, pool, nrules, where, val, off):
    """The parameter struct P[m : m + span] of structural node i (op `name`): its
    length and every field a kernel uses as a count, an offset or a node id."""
    def fail(msg):
        raise _bad(where, "P", i, f"{name}: {msg}")

    def need(length):
        if span != length:
            fail(f"struct of {span} fields, expected {length}")

    def node(j, what):
        if not 0 <= j < i:
            fail(f"{what} {j} is not a node below {i}")
        return j

    F = [int(x) for x in P[m:m + min(span, 8)]]     # the fixed fields
    sz = F[0]
    sa = int(size[a])
    if name == "GATHER1":
        need(1)
        k = pool[b]
        if sz != 1 or not (k == np.floor(k) and 0 <= k < sa):
            fail(f"index {k} outside a parent of size {sa}")
    elif name == "GATHER":
        need(1 + sz)
        idx = P[m + 1:m + 1 + sz]
        if idx.size and (idx.min() < 0 or idx.max() >= sa):
            fail(f"an index is outside a parent of size {sa}")
    elif name == "STRIDED":
        need(3)
        start, step = F[1], F[2]
        last = start + (sz - 1) * step
        if sz and not (0 <= start < sa and 0 <= last < sa):
            fail(f"positions {start}..{last} outside a parent of size {sa}")
    elif name == "BROADCAST":
        if span < 2:
            fail("struct too short")
        nd = F[1]
        if not 0 <= nd <= 64:
            fail(f"{nd} dimensions (at most 64)")
        need(2 + 2 * nd)
        dims = [int(x) for x in P[m + 2:m + 2 + nd]]
        strides = [int(x) for x in P[m + 2 + nd:m + 2 + 2 * nd]]
        if min(dims + [0]) < 0 or min(strides + [0]) < 0 or _prod(dims) != sz:
            fail(f"shape {dims} and strides {strides} for size {sz}")
        if sz and sum((d - 1) * s for d, s in zip(dims, strides)) >= sa:
            fail(f"reads beyond a parent of size {sa}")
    elif name in ("SUM", "PROD", "AMAX", "AMIN", "CUMSUM", "CUMPROD", "NORM"):
        need(4)
        outer, cnt, inner = F[1], F[2], F[3]
        if min(outer, cnt, inner) < 0:
            fail(f"negative extent in ({outer}, {cnt}, {inner})")
        cum = name in ("CUMSUM", "CUMPROD")
        if _prod([outer, cnt, inner]) != sa or sz != _prod([outer, inner] + ([cnt] if cum
                                                                             else [])):
            fail(f"({outer}, {cnt}, {inner}) does not fit size {sz} from a parent of {sa}")
        if name in ("AMAX", "AMIN") and cnt == 0 and sz:
            fail("a maximum or minimum over an empty axis")
        if name == "NORM" and max(cnt, inner) > INT_MAX:
            fail("a dimension exceeds BLAS's 32-bit limit")
    elif name == "DOT":
        need(2)
        node(b, "second parent")
        if sz != 1 or F[1] != sa or F[1] != int(size[b]):
            fail(f"length {F[1]} for vectors of sizes {sa}, {int(size[b])}")
    elif name == "WHERE":
        need(2)
        c = node(F[1], "condition node")
        for j, what in ((a, "x"), (b, "y")):
            if int(size[j]) not in (1, sz):
                fail(f"{what} of size {int(size[j])} for a result of {sz}")
        if int(size[c]) != sz:
            fail(f"condition of size {int(size[c])} for a result of {sz}")
    elif name == "CONCAT":
        if span < 5:
            fail("struct too short")
        outer, inner, total, nparts = F[1], F[2], F[3], F[4]
        if nparts < 1 or min(outer, inner, total) < 0:
            fail(f"bad header ({outer}, {inner}, {total}, {nparts} parts)")
        need(5 + 3 * nparts)
        if sz != _prod([outer, total, inner]):
            fail(f"size {sz} is not {outer}·{total}·{inner}")
        parts = P[m + 5:m + 5 + 3 * nparts].reshape(nparts, 3)
        if int(parts[0, 0]) != a:
            fail(f"the first part ({int(parts[0, 0])}) must be the node's a ({a})")
        for q, (j, st, ln) in enumerate(parts.tolist()):
            node(j, f"part {q}")
            if not (0 <= st and 0 <= ln and st + ln <= total) or \
                    int(size[j]) != _prod([outer, ln, inner]):
                fail(f"part {q} (start {st}, length {ln}, size {int(size[j])}) does not "
                     f"fit ({outer}, {total}, {inner})")
    elif name == "MATMUL":
        need(8)
        node(b, "second parent")
        rows, k, cols, batch, sA, sB, flags = F[1:8]
        sb = int(size[b])
        if min(rows, k, cols, batch, sA, sB) < 0 or not 0 <= flags < 16 or \
                max(rows, k, cols, rows * k, k * cols, rows * cols) > INT_MAX or \
                sz != _prod([batch, rows, cols]):
            fail(f"rows {rows}, k {k}, cols {cols}, batch {batch}, strides {sA}, {sB}, "
                 f"flags {flags} for size {sz}")
        if batch and ((batch - 1) * sA + rows * k > sa or (batch - 1) * sB + k * cols > sb):
            fail(f"reads beyond its factors of sizes {sa} and {sb}")
        # 4 and 8: that factor is a constant of finite values (its sweeps skip the scan
        # for inf and NaN), which must hold, or a zero multiplier times inf gives NaN
        for bit, j, what in ((4, a, "first"), (8, b, "second")):
            if flags & bit and not (_NAMES[int(op[j])] == "CONSTANT" and np.all(np.isfinite(
                    val[off[j]:off[j] + int(size[j])]))):
                fail(f"flags {flags} mark the {what} factor a finite constant, and it is not")
    elif name == "LU":
        need(2)
        nn = F[1]
        if nn < 0 or nn * nn > INT_MAX or sz != nn * nn + nn or sa != nn * nn:
            fail(f"n {nn} for size {sz} from a parent of size {sa}")
    elif name in ("SOLVE", "DET", "LOGDET"):
        need(3 if name == "SOLVE" else 2)
        if op[a] != _CODES["LU"]:
            fail(f"its first parent (node {a}) is not an LU node")
        nn = F[1]
        if nn < 0 or sa != nn * nn + nn:
            fail(f"n {nn} for an LU node of size {sa}")
        if name == "SOLVE":
            node(b, "second parent")
            r = F[2]
            if r < 0 or sz != nn * r or int(size[b]) != nn * r or nn * r > INT_MAX:
                fail(f"n {nn}, r {r} for size {sz} and a right side of {int(size[b])}")
        elif sz != 1:
            fail(f"size {sz}, expected 1")
    elif name == "CALLBACK":
        if span < 3:
            fail("struct too short")
        slot, npar = F[1], F[2]
        need(3 + npar)
        if not 0 <= slot < nrules:
            fail(f"rule slot {slot}, the file names {nrules} rule(s)")
        parents = P[m + 3:m + 3 + npar]
        if npar < 1 or int(parents[0]) != a:
            fail("its first parent must be the node's a")
        for q, j in enumerate(parents.tolist()):
            node(j, f"parent {q}")
    else:                           # pragma: no cover - a new structural op
        fail("this build's loader does not know its parameters")


def _prod(xs):
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _tape_arrays(arrays, k):
    prefix = f"t{k}."
    return {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}


def _rules_for(callbacks, names, where):
    """The rule objects for the CALLBACK slots named `names`, from `callbacks` (a
    sequence in slot order, or a mapping from rule name to rule)."""
    if not names:
        return []
    if callbacks is None:
        raise TapeFormatError(
            f"{where}: it holds {len(names)} custom rule(s) ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}), which a file does not save (they are "
            "code): pass callbacks= with the rule objects (Function.rules of the original "
            "function, in order) to load it")
    if isinstance(callbacks, dict):
        try:
            rules = [callbacks[nm] for nm in names]
        except KeyError as e:
            raise TapeFormatError(f"{where}: callbacks= has no rule named {e}") from None
    else:
        rules = list(callbacks)
        if len(rules) != len(names):
            raise TapeFormatError(f"{where}: {len(names)} custom rule(s) needed, "
                                  f"callbacks= gives {len(rules)}")
    for r, nm in zip(rules, names):
        if not all(callable(getattr(r, m, None)) for m in ("forward", "backward", "tangent")):
            raise TypeError(f"fastape.load: the rule for {nm!r} has no forward, backward "
                            "and tangent methods")
    return rules


def _load_tape(arrays, info, k, rules, where):
    from fastape._tape import Tape
    names = info.get("rules") if isinstance(info, dict) else None
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise TapeFormatError(f"{where}: field 'tapes': bad rule names")
    t_arrays = _tape_arrays(arrays, k)
    size, off = validate_tape(t_arrays, info, f"{where}: tape {k}", len(names))
    home = getattr(arrays, "homes", {}).get(k)
    prefix = len(f"t{k}.")
    # the records were read into a tape: it is adopted (once) if they are exactly what
    # was validated, else (arrays replaced since, as the fuzzer does) copied as usual
    if home is not None and not home[2] and len(home[1]) == len(t_arrays) and \
            all(t_arrays.get(n[prefix:]) is x for n, x in home[1].items()):
        home[2] = True
        tape = home[0]
        tape._adopt(_required_work(t_arrays), list(rules))
        for n in home[1]:           # views of the tape's memory: never read again
            arrays[n] = None
    else:
        tape = Tape._from_buffers({n: np.ascontiguousarray(x) for n, x in t_arrays.items()},
                                  _required_work(t_arrays), list(rules))
    return tape, size, off


def _split_rules(header, rules, callbacks, where):
    """Per tape, its rule objects."""
    tapes = header.get("tapes")
    if not isinstance(tapes, list) or not tapes or \
            not all(isinstance(t, dict) and isinstance(t.get("rules"), list) for t in tapes):
        raise TapeFormatError(f"{where}: field 'tapes' is missing or malformed")
    names = [nm for t in tapes for nm in t["rules"]]
    if rules is None:
        rules = _rules_for(callbacks, names, where)
    out, q = [], 0
    for t in tapes:
        out.append(rules[q:q + len(t["rules"])])
        q += len(t["rules"])
    return tapes, out


def load_tape(source, callbacks=None, mmap=False, _rules=None, _read=None):
    if mmap and _read is None and _rules is None:
        tape = _load_deferred(source, callbacks)
        if tape is not None:
            return tape
    header, arrays, where = _read or read(source)
    info, rules = _the_tape(header, _rules, callbacks, where)
    return _load_tape(arrays, info, 0, rules, where)[0]


def _the_tape(header, rules, callbacks, where):
    """(the tape's entry, its rules) of a tape file's header; TapeFormatError for a
    function's file or a tape file of more or fewer than one tape."""
    if header.get("kind") != "tape":
        raise TapeFormatError(f"{where}: field 'kind': {header.get('kind')!r}; "
                              "Tape.load reads tapes (fastape.load reads both)")
    tapes, rules = _split_rules(header, rules, callbacks, where)
    if len(tapes) != 1:
        raise TapeFormatError(f"{where}: field 'tapes': a tape file holds one tape")
    return tapes[0], rules[0]


def _load_deferred(source, callbacks):
    """Tape.load(..., mmap=True): the tape of a file whose directory, header, checksum
    of the header, version, registry and list of arrays are checked now (O(1) in the
    size of the records) and whose records are read into it, checksummed and validated
    at its first use (_Deferred); None when its records cannot be read straight into a
    tape (the eager load then reads and refuses them)."""
    f, where = _open(source)
    try:
        header, members = _read_header(f, where)
        info, tape_rules = _the_tape(header, None, callbacks, where)
        declared = header["arrays"]
        homes = {}
        views = _homes(header, declared, members, homes)
        if 0 not in homes or set(views) != set(declared) or type(info.get("n")) is not int \
                or info["n"] != declared["t0.op"][1][0] or \
                info.get("general") is not ("t0.off" in declared):
            f.close()               # the eager load reads and refuses it
            return None
        tape = homes[0][0]
        tape._defer(_Deferred(f, header, members, views, tape_rules, where))
        return tape
    except BaseException:
        f.close()
        raise


class _HeldFile:
    """What an mmap=True load keeps for the first use: the file, open since the load,
    its checked header and member directory, and the error of a first use that failed
    (raised again at every later use); closed once read, or when dropped unread."""

    def __init__(self, f, header, members, where):
        import threading
        self.f, self.header, self.members, self.where = f, header, members, where
        self.error = None
        self.lock = threading.Lock()

    def __del__(self):
        f = getattr(self, "f", None)
        if f is not None:
            f.close()


class _Deferred(_HeldFile):
    """The first use of a tape loaded with mmap=True (Tape._check calls it): its
    records are read from the file held open since the load, checksummed and validated
    exactly as an eager load does them, then the tape is adopted; a file that fails
    raises TapeFormatError, at this use and every later one (the tape is never
    swept). It holds the tape's views, not the tape (which holds it): dropping an
    unused tape frees it at once, not at the next cyclic collection."""

    def __init__(self, f, header, members, views, rules, where):
        super().__init__(f, header, members, where)
        self.views, self.rules = views, rules

    def __call__(self, tape):
        with self.lock:
            if self.error is not None:
                raise TapeFormatError(self.error)
            if self.f is None:              # loaded by another thread meanwhile
                return
            try:
                arrays = _Arrays()
                arrays.homes = {0: [tape, self.views, False]}
                _read_arrays(self.f, self.header["arrays"], self.members, self.views,
                             arrays, self.where)
                _load_tape(arrays, self.header["tapes"][0], 0, self.rules, self.where)
            except TapeFormatError as e:
                self.error = f"{e} (read at the tape's first use: it was loaded with " \
                    "mmap=True)"
                raise TapeFormatError(self.error) from None
            finally:
                self.f.close()
                self.f = self.views = None


def _int_vector(arrays, name, where, length=None):
    a = arrays.get(name)
    if a is None or a.dtype != np.int64 or a.ndim != 1 or (length is not None and
                                                          a.shape[0] != length):
        raise TapeFormatError(f"{where}: field {name!r} is missing or not an int64 vector"
                              + ("" if length is None else f" of {length}"))
    return np.asarray(a)


def load_function(source, fun=None, callbacks=None, mmap=False, _rules=None, _read=None,
                  _into=None):
    from fastape._compiled import Function
    if mmap and _read is None and _rules is None:
        return _load_function_deferred(source, fun, callbacks)
    from fastape._tree import normalize_argnums
    header, arrays, where = _read or read(source)
    if header.get("kind") != "function":
        raise TapeFormatError(f"{where}: field 'kind': {header.get('kind')!r}, not a "
                              "compiled function")
    meta = header.get("function")
    if not isinstance(meta, dict):
        raise TapeFormatError(f"{where}: field 'function' is missing")
    for field, types in (("name", str), ("nargs", int), ("retrace", bool),
                         ("max_traces", int), ("last", int), ("traces", list)):
        if type(meta.get(field)) is not types:
            raise TapeFormatError(f"{where}: field 'function.{field}': {meta.get(field)!r:.60}")
    treedef = _tree_from_json(meta.get("args"), where)
    if treedef.is_leaf or treedef._key is None or treedef._key[0] is not tuple or \
            len(treedef._key[2]) != meta["nargs"] or meta["nargs"] < 1:
        raise TapeFormatError(f"{where}: field 'function.args': not a tuple of "
                              f"{meta['nargs']} arguments")
    argnums = meta.get("argnums")
    try:
        if not (type(argnums) is int or (isinstance(argnums, list) and
                                         all(type(x) is int for x in argnums))):
            raise TypeError(f"argnums {argnums!r}")
        normalize_argnums(argnums if type(argnums) is int else tuple(argnums),
                          meta["nargs"], "load")
    except (TypeError, ValueError) as e:
        raise TapeFormatError(f"{where}: field 'function.argnums': {e}") from None
    shapes = treedef.leaf_shapes
    flat = arrays.get("example")
    counts = [_prod(sh) for sh in shapes]
    if flat is None or flat.dtype != np.float64 or flat.shape != (sum(counts),):
        raise TapeFormatError(f"{where}: field 'example': expected {sum(counts)} float64 "
                              "values (the example arguments' leaves)")
    example, q = [], 0
    for shape, c in zip(shapes, counts):
        x = np.array(flat[q:q + c]).reshape(shape)
        example.append(float(x) if shape == () else x)
        q += c
    tapes, rules = _split_rules(header, _rules, callbacks, where)
    trs = meta["traces"]
    if len(trs) != len(tapes) or not 1 <= len(trs) <= max(meta["max_traces"], 1) or \
            not 1 <= meta["max_traces"] <= INT_MAX or not 0 <= meta["last"] < len(trs):
        raise TapeFormatError(f"{where}: field 'function.traces': {len(trs)} traces for "
                              f"{len(tapes)} tapes, max_traces {meta['max_traces']}, "
                              f"last {meta['last']}")
    built = []
    for k, (info, tr) in enumerate(zip(tapes, trs)):
        tape, size, off = _load_tape(arrays, info, k, rules[k], where)
        d = _check_trace(arrays, tr, k, tape, size, off, shapes, f"{where}: trace {k}")
        built.append((tape, d))
    return Function._from_state(meta, fun, treedef, example, built, _into)


def _load_function_deferred(source, fun, callbacks):
    """fastape.load(..., mmap=True) of a function's file: the directory, the header,
    its checksum, version, registry and list of arrays, and the custom rules it names,
    checked now (O(1) in the size of the traces); everything else read and validated at
    the function's first use (_DeferredFunction), exactly as an eager load does."""
    f, where = _open(source)
    try:
        header, members = _read_header(f, where)
        if header.get("kind") != "function":
            raise TapeFormatError(f"{where}: field 'kind': {header.get('kind')!r}, not a "
                                  "compiled function")
        rules = _split_rules(header, None, callbacks, where)[1]
        cls = _mapped_function_class()
        G = cls.__new__(cls)
        G._deferred = _DeferredFunction(f, header, members, where, fun,
                                        [r for rs in rules for r in rs])
        return G
    except BaseException:
        f.close()
        raise


class _DeferredFunction(_HeldFile):
    """The first use of a function loaded with mmap=True (any method or attribute of
    it, through _MappedFunction): every member read from the file held open since the
    load (the tapes' records straight into their tapes), checksummed and validated, and
    the function built in place; a file that fails raises TapeFormatError, at this use
    and every later one (nothing of it is ever swept)."""

    def __init__(self, f, header, members, where, fun, rules):
        super().__init__(f, header, members, where)
        self.fun, self.rules = fun, rules

    def __call__(self, G):
        with self.lock:
            if self.error is not None:
                raise self.error[0](self.error[1])
            if self.f is None:              # loaded by another thread meanwhile
                return
            try:
                arrays = _Arrays()
                views = _homes(self.header, self.header["arrays"], self.members,
                               arrays.homes)
                _read_arrays(self.f, self.header["arrays"], self.members, views, arrays,
                             self.where)
                load_function(None, fun=self.fun, _rules=self.rules,
                              _read=(self.header, arrays, self.where), _into=G)
            except BaseException as e:
                # any failure (a MemoryError too) leaves G unbuilt, perhaps half: it
                # raises at every later use, never reaching Function's methods
                cls = e.__class__ if isinstance(e, (TapeFormatError, MemoryError,
                                                    KeyboardInterrupt)) else TapeFormatError
                self.error = (cls, f"{e} (read at the function's first use: it was "
                              "loaded with mmap=True)")
                raise cls(self.error[1]) from (None if cls is e.__class__ else e)
            finally:
                self.f.close()
                self.f = None
                self.header = self.members = None


@functools.cache
def _mapped_function_class():
    """The class of a function loaded with mmap=True: a Function whose every method and
    attribute (those of Function, derived from its class, so a new one cannot be
    forgotten) first builds it from its file (_DeferredFunction, once). Its compiled
    state is empty until then, and nothing reads it but Function's own methods."""
    from fastape._compiled import Function

    def ready(self):
        d = self._deferred
        if d is not None:
            d(self)
            self._deferred = None

    def method(name, m):
        def wrapper(self, *args, **kwargs):
            if self._deferred is not None:      # (inline: ~0.3 µs a call after it)
                ready(self)
            return m(self, *args, **kwargs)
        wrapper.__name__ = wrapper.__qualname__ = name
        wrapper.__doc__ = getattr(m, "__doc__", None)
        return wrapper

    def attribute(name, d):
        def get(self):
            ready(self)
            return d.__get__(self, Function)

        def put(self, value):
            ready(self)
            d.__set__(self, value)
        return property(get, put, doc=getattr(d, "__doc__", None))

    members = {"__slots__": ("_deferred",), "__module__": Function.__module__,
               "__doc__": Function.__doc__}
    for name, d in vars(Function).items():
        if name in ("__new__", "__init__", "__doc__", "__pyx_vtable__") or \
                isinstance(d, (staticmethod, classmethod)):
            continue
        if hasattr(d, "__set__"):                   # properties and attributes
            members[name] = attribute(name, d)
        elif callable(d):
            members[name] = method(name, d)
    return type("Function", (Function,), members)


class _NodeIds:
    """off of the scalar layout: node i's value is slot i."""

    def __getitem__(self, k):
        return np.arange(k.start, k.stop) if isinstance(k, slice) else k


def _check_trace(arrays, tr, k, tape, size, off, shapes, where):
    if not isinstance(tr, dict) or type(tr.get("output")) is not int or \
            type(tr.get("grouped")) is not bool or not isinstance(tr.get("out_shape"), list):
        raise TapeFormatError(f"{where}: bad entry {tr!r:.80}")
    n = len(tape)
    opc = tape.opcodes()
    if size is None:                # the scalar layout: sizes 1, offsets the node ids
        size, off, nval = np.broadcast_to(np.int8(1), (n,)), _NodeIds(), n
    else:
        nval = int(size.sum())
    inputs = _int_vector(arrays, f"r{k}.inputs", where, len(shapes))
    for q, (j, shape) in enumerate(zip(inputs.tolist(), shapes)):
        m = _prod(shape)
        ok = 0 <= j < n and opc[j] == INPUT and (
            size[j] == m or (size[j] == 1 and m > 1 and j + m <= n and
                             (opc[j:j + m] == INPUT).all() and (size[j:j + m] == 1).all() and
                             (np.diff(off[j:j + m]) == 1).all()))
        if not ok:
            raise TapeFormatError(f"{where}: field 'inputs' entry {q}: node {j} is not an "
                                  f"input of {m} value(s)")
    out = tr["output"]
    shape_ok = all(type(d) is int and d >= 0 for d in tr["out_shape"])
    outs = arrays.get(f"r{k}.outs")
    if outs is not None and shape_ok:
        outs = _int_vector(arrays, f"r{k}.outs", where, _prod(tr["out_shape"]))
        if not tape.scalar_layout or outs.shape[0] < 2 or (outs < 0).any() or \
                (outs >= n).any() or (np.asarray(size)[outs] != 1).any() or out != outs.max():
            raise TapeFormatError(f"{where}: field 'outs': the output's nodes must be "
                                  f"scalar nodes of a scalar-layout tape of {n} nodes, their "
                                  f"maximum the output node ({out})")
    elif not 0 <= out < n or not shape_ok or _prod(tr["out_shape"]) != size[out]:
        raise TapeFormatError(f"{where}: field 'output': node {out} with shape "
                              f"{tr['out_shape']}")
    if tr["grouped"] and not tape.scalar_layout:
        raise TapeFormatError(f"{where}: field 'grouped': a grouped trace must be in the "
                              "scalar layout")
    guards = arrays.get(f"r{k}.guards")
    if guards is None or guards.dtype != np.int64 or guards.ndim != 2 or \
            guards.shape[1] != len(_GUARD_FIELDS):
        raise TapeFormatError(f"{where}: field 'guards' is missing or not an int64 array of "
                              f"{len(_GUARD_FIELDS)} columns")
    guards = np.asarray(guards)
    ng = guards.shape[0]
    expect = arrays.get(f"r{k}.expect")
    if expect is None or expect.dtype != np.float64 or expect.ndim != 1:
        raise TapeFormatError(f"{where}: field 'expect' is missing or not a float64 vector")
    for q in range(ng):
        hw, x, y, go, gs, sx, sy = guards[q].tolist()
        ok = 0 <= hw < _CMP_COUNT and 0 <= x < n and 0 <= y < n and gs >= 0 and \
            sx in (0, 1) and sy in (0, 1) and 0 <= go and go + gs <= expect.shape[0]
        if ok and gs:
            ok = int(off[x]) + (gs - 1) * sx < nval and int(off[y]) + (gs - 1) * sy < nval
        if not ok:
            raise TapeFormatError(f"{where}: guard {q}: comparison {hw} of nodes {x}, {y}, "
                                  f"{gs} value(s) at {go}, strides {sx}, {sy} does not fit "
                                  "the tape")
    g = {name: np.ascontiguousarray(guards[:, j]) for j, name in enumerate(_GUARD_FIELDS)}
    return {"inputs": inputs, "output": out, "out_shape": tr["out_shape"], "outs": outs,
            "grouped": tr["grouped"], **g, "g_expect": np.ascontiguousarray(expect)}


def load(source, fun=None, callbacks=None, mmap=False):
    """Read a :class:`Tape` or a compiled :class:`Function` saved by their ``save``
    method (``source``: a path, or the file's bytes).

    Everything is validated before it is returned (see ``fastape._format``): a
    corrupt, truncated or foreign file, or one of a newer format version, raises
    :class:`fastape.TapeFormatError` naming the first bad field. Loading runs no
    code: the file holds no pickle.

    ``fun``: the source function of a compiled function, which a file does not hold;
    given, the loaded function re-records when an input takes a branch none of its
    saved traces took (as the original did); without it such a call raises
    :class:`fastape.BranchChanged`, and so do the second-order paths that record the
    gradient (``hvp``/``hessian`` of a trace that is not a scalar tape).
    ``callbacks``: the custom rules (``custom_vjp``/``custom_jvp``) of a file that
    has CALLBACK nodes (the file names them): ``F.rules`` of the saved function, as a
    list in that order or a dict by rule name. ``mmap=True`` defers a tape file's
    records to the tape's first use, and a compiled function's traces to the
    function's first use (an O(1) load: see ``fastape._format``).

    >>> import numpy as np, fastape as ft, tempfile, os
    >>> F = ft.compile(lambda x: ft.sum(x ** 2), np.ones(3))
    >>> path = os.path.join(tempfile.mkdtemp(), "f.npz")
    >>> F.save(path)
    >>> G = ft.load(path)
    >>> G.grad(np.array([1.0, 2.0, 3.0]))
    array([2., 4., 6.])
    """
    if mmap:
        f, where = _open(source)
        with f:
            kind = _read_header(f, where)[0].get("kind")
        if kind == "tape" and fun is None:
            return load_tape(source, callbacks=callbacks, mmap=True)
        if kind == "function":
            return load_function(source, fun=fun, callbacks=callbacks, mmap=True)
    return from_parts(read(source), fun=fun, callbacks=callbacks)


def from_parts(parts, fun=None, callbacks=None, _rules=None):
    """The tape or function of a read file's (header, arrays, where), validated."""
    kind = parts[0].get("kind")
    if kind == "tape":
        if fun is not None:
            raise TypeError(f"fastape.load: {parts[2]} holds a tape; fun= is for compiled "
                            "functions")
        return load_tape(None, callbacks=callbacks, _rules=_rules, _read=parts)
    if kind == "function":
        return load_function(None, fun=fun, callbacks=callbacks, _rules=_rules, _read=parts)
    raise TapeFormatError(f"{parts[2]}: field 'kind': {kind!r}")


# ---------------------------------------------------------------------------
# pickling: the same format, with what a file cannot hold pickled beside it
# ---------------------------------------------------------------------------

def _to_bytes(header, arrays):
    buf = io.BytesIO()
    _write(buf, header, arrays)
    return buf.getvalue()


def _by_name(module, qualname):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _RulePickler(pickle.Pickler):
    """Pickles the rule objects of CALLBACK nodes. A custom function
    (``@custom_vjp def f``) goes by reference to the module attribute it is, as a
    plain function would: pickled by value it would hold the undecorated ``f``, which
    pickle cannot find under its own name (the name holds the decorated one)."""

    def reducer_override(self, obj):
        from fastape.custom import _Custom
        if isinstance(obj, _Custom):
            module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
            try:
                found = _by_name(module, qual) if module and "<" not in qual else None
            except (ImportError, AttributeError):
                found = None
            if found is obj:
                return _by_name, (module, qual)
        return NotImplemented


def _pickled_rules(rules):
    buf = io.BytesIO()
    _RulePickler(buf).dump(list(rules))
    return buf.getvalue()


def tape_reduce(tape):
    arrays, rules = {}, []
    info = _tape_parts(tape, 0, arrays, rules)
    return _tape_from_pickle, (_to_bytes({"kind": "tape", "tapes": [info]}, arrays),
                               _pickled_rules(rules))


def _tape_from_pickle(data, rules):
    return load_tape(data, _rules=pickle.loads(rules))


def function_reduce(F):
    header, arrays, rules = _function_parts(F)
    fun = F.fun if F.retrace else None
    if fun is not None:
        try:
            pickle.dumps(fun)
        except Exception as e:
            raise TypeError(
                f"pickle: compiled {getattr(fun, '__qualname__', 'function')} keeps its "
                f"source function by reference, to re-record "
                f"when an input takes another branch, and that function cannot be pickled "
                f"({type(e).__name__}: {e}); define it at module level, or compile with "
                "retrace=False to pickle the recorded traces without it") from None
    return _function_from_pickle, (_to_bytes(header, arrays), fun, _pickled_rules(rules))


def _function_from_pickle(data, fun, rules):
    return load_function(data, fun=fun, _rules=pickle.loads(rules))


def deepcopy_function(F):
    """copy.deepcopy of a compiled function: through the format, the source function
    and custom rules kept by reference (they need not be picklable)."""
    header, arrays, rules = _function_parts(F)
    return load_function(_to_bytes(header, arrays), fun=F.fun, _rules=rules)
