# Threads for large arrays (issue 14, item 3), included into _tape.pyx (through
# _elementwise.pxi) and _compiled.pyx (through _fused.pxi).
#
# How many: the OpenMP convention. A sweep asks omp_get_max_threads() of the thread
# that runs it, which OMP_NUM_THREADS sets at start-up and omp_set_num_threads (what
# threadpoolctl.threadpool_limits(n, user_api="openmp") calls) changes later; inside a
# parallel region (someone else's OpenMP code calling fastape) it is 1. grad_batch's
# workers set it to 1 on their own threads (the batch is the parallelism there).
# BLAS: a sweep runs its nodes one after another, so a matrix product (OpenBLAS's own
# threads) never runs while fastape's threads do; the two counts never multiply.
#
# fork: libgomp's threads do not survive it, and a forked child that starts a team its
# parent had started waits for them for ever; a child forked after this module loaded
# (multiprocessing's "fork") therefore runs every sweep on one thread, as PyTorch's
# intra-op threads do (spawned and forkserver processes start afresh).
#
# Built without OpenMP (setup.py probes the compiler; FASTAPE_OPENMP=0), _OPENMP is
# undefined, the count is always 1 and prange compiles to a serial loop: the same
# results, serially.
from cython.parallel cimport parallel, prange, threadid

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #include <pthread.h>
    static int fastape_forked = 0;
    static void fastape_in_child(void) { fastape_forked = 1; }
    static int fastape_watch_fork(void) { return pthread_atfork(NULL, NULL, fastape_in_child); }
    static int fastape_max_threads(void)
    {
        return fastape_forked || omp_in_parallel() ? 1 : omp_get_max_threads();
    }
    static void fastape_set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }
    #define FASTAPE_OPENMP 1
    #else
    static int fastape_watch_fork(void) { return 0; }
    static int fastape_max_threads(void) { return 1; }
    static void fastape_set_threads(int n) { (void)n; }
    #define FASTAPE_OPENMP 0
    #endif
    """
    int fastape_max_threads() noexcept nogil
    void fastape_set_threads(int n) noexcept nogil
    int fastape_watch_fork() noexcept nogil
    bint FASTAPE_OPENMP


fastape_watch_fork()


# Elements of an unfused elementwise kernel (and of a SUM) per thread, at least: below,
# starting the team costs more than the split saves (see README, Threads).
cdef i64 PAR_MIN = 65536
