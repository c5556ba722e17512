"""Build the compiled core: Cython -> C in build/ (never in src/), then the extensions.

Cython directives are set once here. FASTAPE_DEBUG=1 turns bounds checks,
wraparound and -O0 -g back on for debugging. FASTAPE_ASAN=1 builds with
AddressSanitizer (-fsanitize=address -O1 -g), keeping the release directives so that
it checks the kernels as shipped; FASTAPE_BUILD_DIR (default build) moves the
generated Cython and C elsewhere, so such a build does not share build/ (.ci/asan).

Build time (issue 17): the extensions compile in parallel, one per usable core, also
when pip runs this file without -j; and a module is cythonized again only when what its
C depends on changed, judged by content (a stamp beside its .c), not by timestamps,
because pip's isolated build environment installs numpy's and scipy's .pxd files afresh,
with new timestamps, on every `pip install .`, which made Cython regenerate, and gcc
recompile, every module every time.

OpenMP (issue 14, threads for large arrays): the compiler is probed once per build
(BuildExt._openmp_flags) and -fopenmp added when it compiles and links with it; a
compiler without OpenMP, or FASTAPE_OPENMP=0, builds the same C serial.
"""
import hashlib
import importlib.util
import os
from pathlib import Path

import Cython
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTAPE_DEBUG", "") not in ("", "0")
ASAN = os.environ.get("FASTAPE_ASAN", "") not in ("", "0")
BUILD = os.environ.get("FASTAPE_BUILD_DIR", "") or "build"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
# -fno-math-errno lets the compiler drop libm calls whose results a sweep does not use;
# -ffp-contract=off keeps a*b + c two roundings in the AVX-512 clones of the array
# kernels (target_clones, _elementwise.pxi), where GCC would otherwise fuse it into an
# FMA: every clone then computes the baseline SSE2 loop's bits;
# -fno-trapping-math lets it evaluate both arms of a select (λ = 0 ? 0 : ∂f·λ), so
# the reverse array loops vectorise (41 of them instead of 3). Neither changes any
# IEEE result: no reassociation, no contraction; only the floating-point exception
# flags, which fastape never reads, may differ.
# -g0: Python's own CFLAGS carry -g, which release builds do not need (smaller
# objects, a quicker link); FASTAPE_DEBUG=1 keeps the debug information.
cflags = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno", "-fno-trapping-math",
                                      "-ffp-contract=off", "-g0"]
# -O1 (last, so it wins over -O3; FASTAPE_DEBUG's -O0 is kept) keeps ASan's reports
# readable and its run a few times the release one; the frame pointer gives full stacks.
ldflags = []
if ASAN:
    asan = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"] + ([] if DEBUG else ["-O1"])
    cflags += asan
    ldflags += asan

# longest compile first: a parallel build starts it at once (gcc: _tape ~35 s, _compiled
# ~23 s, _ops ~9 s here)
MODULES = ["_tape", "_compiled", "_ops", "_sparsity"]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

# The op table and the structural dispatch are generated from the op registry
# (src/fastape/registry.py) into build/gen (FASTAPE_BUILD_DIR/gen) on every build, so
# they cannot go stale; the generator imports nothing but the standard library.
_spec = importlib.util.spec_from_file_location("_fastape_codegen", "src/fastape/_codegen.py")
_codegen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_codegen)
GENERATED = str(_codegen.write_build(f"{BUILD}/gen"))

SRC = Path("src/fastape")


def _stamp(name):
    """What the module's C depends on, by content: its .pyx, every .pxd/.pxi of the
    package and of the generated tree (more than it includes: safe), the Cython,
    numpy and scipy versions (their .pxd files), the directives and the C flags."""
    import numpy
    import scipy

    h = hashlib.sha256()
    files = [SRC / f"{name}.pyx"] + sorted(SRC.glob("*.pxd")) + sorted(SRC.glob("*.pxi")) \
        + sorted(Path(GENERATED).glob("*.pxi"))
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(repr((Cython.__version__, numpy.__version__, scipy.__version__,
                   sorted(directives.items()), cflags, ldflags)).encode())
    return h.hexdigest()


def _extension(name, sources):
    return Extension(f"fastape.{name}", sources, extra_compile_args=cflags,
                     extra_link_args=ldflags)


def extensions():
    """The extensions; the ones whose stamp changed are cythonized (in parallel), the
    others built from the C already generated (so gcc, too, finds them up to date)."""
    ready, stale, stamps = [], [], {}
    for name in MODULES:
        c = Path(BUILD, "cython", "src", "fastape", f"{name}.c")
        stamps[name] = (c.with_suffix(".c.stamp"), _stamp(name))
        stamp, digest = stamps[name]
        if c.is_file() and stamp.is_file() and stamp.read_text() == digest:
            ready.append(_extension(name, [str(c)]))
        else:
            stale.append(_extension(name, [str(SRC / f"{name}.pyx")]))
    done = cythonize(stale, build_dir=f"{BUILD}/cython", compiler_directives=directives,
                     include_path=["src", GENERATED, "src/fastape"], force=True,
                     nthreads=min(CORES, len(stale)) if len(stale) > 1 else 0) if stale else []
    for ext in stale:
        stamp, digest = stamps[ext.name.split(".")[-1]]
        stamp.write_text(digest)
    order = {f"fastape.{n}": i for i, n in enumerate(MODULES)}
    return sorted(ready + done, key=lambda e: order[e.name])


OPENMP = os.environ.get("FASTAPE_OPENMP", "1") not in ("", "0")


def _openmp_flags(compiler):
    """["-fopenmp"] when this compiler compiles and links an OpenMP program with it, else
    [] (the kernels then build serial: their OpenMP code is under #ifdef _OPENMP). One
    tiny compile and link, a fraction of a second."""
    import tempfile

    if not OPENMP or compiler.compiler_type not in ("unix", "mingw32"):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "omp.c")
        src.write_text("#include <omp.h>\nint main(void) { int n = 0;\n"
                       "#pragma omp parallel reduction(+:n)\nn += omp_get_num_threads() > 0;\n"
                       "return n > 0 ? 0 : 1; }\n")
        try:
            objs = compiler.compile([str(src)], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, "omp", output_dir=tmp, extra_postargs=["-fopenmp"])
        except Exception:       # CompileError, LinkError: no OpenMP here
            print("fastape: the C compiler has no OpenMP (-fopenmp): building serial kernels")
            return []
    return ["-fopenmp"]


class BuildExt(build_ext):
    """build_ext with one job per usable core unless -j/--parallel says otherwise, and
    OpenMP (threads for large arrays, _threads.pxi) when the compiler has it."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = CORES

    def build_extensions(self):
        omp = _openmp_flags(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + omp
            ext.extra_link_args = list(ext.extra_link_args) + omp
        super().build_extensions()


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
