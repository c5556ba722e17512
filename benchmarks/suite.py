"""fastape's benchmark suite, from a checkout: ``python benchmarks/suite.py [--full] [--plot]``.

A thin entry: the suite is ``fastape._bench``, shipped in the package, so this and
``python -m fastape bench`` run the same code (with ``PYTHONPATH=src`` for a checkout
built in place). Its workloads and method: ``benchmarks/README.md``.
"""

import sys

from fastape._bench import main

if __name__ == "__main__":
    sys.exit(main())
