"""Build the compiled core: Cython -> C in build/ (never in src/), then the extensions.

Cython directives are set once here. FASTAPE_DEBUG=1 turns bounds checks,
wraparound and -O0 -g back on for debugging. FASTAPE_ASAN=1 builds with
AddressSanitizer (-fsanitize=address -O1 -g), keeping the release directives so that
it checks the kernels as shipped; FASTAPE_BUILD_DIR (default build) moves the
generated Cython and C elsewhere, so such a build does not share build/ (.ci/asan).
"""
import importlib.util
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

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
# -fno-trapping-math lets it evaluate both arms of a select (λ = 0 ? 0 : ∂f·λ), so
# the reverse array loops vectorise (41 of them instead of 3). Neither changes any
# IEEE result: no reassociation, no contraction; only the floating-point exception
# flags, which fastape never reads, may differ.
# -g0: Python's own CFLAGS carry -g, which release builds do not need (smaller
# objects, a quicker link); FASTAPE_DEBUG=1 keeps the debug information.
cflags = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno", "-fno-trapping-math", "-g0"]
# -O1 (last, so it wins over -O3; FASTAPE_DEBUG's -O0 is kept) keeps ASan's reports
# readable and its run a few times the release one; the frame pointer gives full stacks.
ldflags = []
if ASAN:
    asan = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"] + ([] if DEBUG else ["-O1"])
    cflags += asan
    ldflags += asan

MODULES = ["_ops", "_tape", "_compiled"]

# The op table and the structural dispatch are generated from the op registry
# (src/fastape/registry.py) into build/gen (FASTAPE_BUILD_DIR/gen) on every build, so
# they cannot go stale; the generator imports nothing but the standard library.
_spec = importlib.util.spec_from_file_location("_fastape_codegen", "src/fastape/_codegen.py")
_codegen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_codegen)
GENERATED = str(_codegen.write_build(f"{BUILD}/gen"))

extensions = [
    Extension(f"fastape.{name}", [f"src/fastape/{name}.pyx"], extra_compile_args=cflags,
              extra_link_args=ldflags)
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        build_dir=f"{BUILD}/cython",
        compiler_directives=directives,
        include_path=["src", GENERATED, "src/fastape"],
    ),
)
