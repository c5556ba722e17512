/* A hand-written C switch-loop interpreter over fastape's scalar tape layout.
 *
 * It is the "practical limit" baseline of benchmarks/bench_tape.py: what a
 * competent C programmer writes for a Wengert-list interpreter, a switch in a
 * loop compiled with -O3, nothing artificially slow or fast.
 *
 * The layout is exactly what fastape's Tape.export() returns for a tape whose
 * nodes are all scalars:
 *
 *     op[i]    uint8    opcode of node i (INPUT = 0 / CONSTANT = 1 are leaves)
 *     a[i]     int32    first parent
 *     b[i]     int32    second parent; for the *_K ops an index into pool (the
 *                       second operand is pool[b[i]]); for other unary ops b == a
 *     val[i]   float64  value of node i
 *     pool[]   float64  immediates of the *_K ops
 *
 * Opcode numbers are not written here: benchmarks/c_interp.py generates
 * fastape_ops.h (#define OP_<NAME> <number>) from fastape._ops.Op at build
 * time, so this file stays in sync with the enum.
 *
 * Semantics follow fastape/_ops.pxd (value and local partials per op); the
 * reverse sweep seeds adj[out] = 1, skips nodes whose multiplier is exactly 0
 * and adds d0*w (d1*w) to the first (second) parent's multiplier. Where a
 * partial is a function of the node's own value (exp, sqrt, tanh, ...) it
 * reads val[i] instead of recomputing it, as one would write it by hand.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastape_ops.h"

/* 1 if the interpreter implements opcode o (leaves included), else 0. */
int ci_supported(int o)
{
    switch (o) {
    case OP_INPUT: case OP_CONSTANT:
    case OP_NEG: case OP_ABS: case OP_EXP: case OP_LOG: case OP_SQRT:
    case OP_SQUARE: case OP_RECIPROCAL: case OP_SIN: case OP_COS: case OP_TANH:
    case OP_COPY:
    case OP_ADD_K: case OP_MUL_K: case OP_RSUB_K: case OP_DIV_K: case OP_RDIV_K:
    case OP_POW_K:
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV:
        return 1;
    default:
        return 0;
    }
}

/* Index of the first node the interpreter cannot run, or -1. */
int64_t ci_check(int64_t n, const uint8_t *op)
{
    for (int64_t i = 0; i < n; i++)
        if (!ci_supported(op[i]))
            return i;
    return -1;
}

/* Forward sweep: recompute val[i] for every non-leaf node, in tape order. */
void ci_forward(int64_t n, const uint8_t *restrict op, const int32_t *restrict a,
                const int32_t *restrict b, double *restrict val,
                const double *restrict pool)
{
    for (int64_t i = 0; i < n; i++) {
        double x, k;
        switch (op[i]) {
        case OP_INPUT:
        case OP_CONSTANT:
            break;
        case OP_NEG:        val[i] = -val[a[i]]; break;
        case OP_ABS:        val[i] = fabs(val[a[i]]); break;
        case OP_EXP:        val[i] = exp(val[a[i]]); break;
        case OP_LOG:        val[i] = log(val[a[i]]); break;
        case OP_SQRT:       val[i] = sqrt(val[a[i]]); break;
        case OP_SQUARE:     x = val[a[i]]; val[i] = x * x; break;
        case OP_RECIPROCAL: val[i] = 1.0 / val[a[i]]; break;
        case OP_SIN:        val[i] = sin(val[a[i]]); break;
        case OP_COS:        val[i] = cos(val[a[i]]); break;
        case OP_TANH:       val[i] = tanh(val[a[i]]); break;
        case OP_COPY:       val[i] = val[a[i]]; break;
        case OP_ADD_K:      val[i] = val[a[i]] + pool[b[i]]; break;
        case OP_MUL_K:      val[i] = val[a[i]] * pool[b[i]]; break;
        case OP_RSUB_K:     val[i] = pool[b[i]] - val[a[i]]; break;
        case OP_DIV_K:      val[i] = val[a[i]] / pool[b[i]]; break;
        case OP_RDIV_K:     val[i] = pool[b[i]] / val[a[i]]; break;
        case OP_POW_K:
            x = val[a[i]];
            k = pool[b[i]];
            val[i] = (k == 2.0) ? x * x : pow(x, k);
            break;
        case OP_ADD:        val[i] = val[a[i]] + val[b[i]]; break;
        case OP_SUB:        val[i] = val[a[i]] - val[b[i]]; break;
        case OP_MUL:        val[i] = val[a[i]] * val[b[i]]; break;
        case OP_DIV:        val[i] = val[a[i]] / val[b[i]]; break;
        default:            val[i] = NAN; break;
        }
    }
}

/* Reverse sweep: adj = 0, adj[out] = 1, then nodes out..0 in reverse order. */
void ci_reverse(int64_t n, int64_t out, const uint8_t *restrict op,
                const int32_t *restrict a, const int32_t *restrict b,
                const double *restrict val, const double *restrict pool,
                double *restrict adj)
{
    memset(adj, 0, (size_t)n * sizeof(double));
    adj[out] = 1.0;
    for (int64_t i = out; i >= 0; i--) {
        const double w = adj[i];
        double x, y, k, v;
        if (w == 0.0)
            continue;
        switch (op[i]) {
        case OP_INPUT:
        case OP_CONSTANT:
            break;
        case OP_NEG:        adj[a[i]] += -1.0 * w; break;
        case OP_ABS:
            x = val[a[i]];
            adj[a[i]] += (double)((x > 0) - (x < 0)) * w;
            break;
        case OP_EXP:        adj[a[i]] += val[i] * w; break;
        case OP_LOG:        adj[a[i]] += (1.0 / val[a[i]]) * w; break;
        case OP_SQRT:       adj[a[i]] += (0.5 / val[i]) * w; break;
        case OP_SQUARE:     adj[a[i]] += (2.0 * val[a[i]]) * w; break;
        case OP_RECIPROCAL: v = val[i]; adj[a[i]] += (-v * v) * w; break;
        case OP_SIN:        adj[a[i]] += cos(val[a[i]]) * w; break;
        case OP_COS:        adj[a[i]] += (-sin(val[a[i]])) * w; break;
        case OP_TANH:       v = val[i]; adj[a[i]] += (1.0 - v * v) * w; break;
        case OP_COPY:       adj[a[i]] += w; break;
        case OP_ADD_K:      adj[a[i]] += w; break;
        case OP_MUL_K:      adj[a[i]] += pool[b[i]] * w; break;
        case OP_RSUB_K:     adj[a[i]] += -1.0 * w; break;
        case OP_DIV_K:      adj[a[i]] += (1.0 / pool[b[i]]) * w; break;
        case OP_RDIV_K:     adj[a[i]] += (-val[i] / val[a[i]]) * w; break;
        case OP_POW_K:
            x = val[a[i]];
            k = pool[b[i]];
            if (k == 2.0)
                adj[a[i]] += (2.0 * x) * w;
            else
                adj[a[i]] += (k == 0.0 ? 0.0 : k * pow(x, k - 1.0)) * w;
            break;
        case OP_ADD:        adj[a[i]] += w; adj[b[i]] += w; break;
        case OP_SUB:        adj[a[i]] += w; adj[b[i]] += -1.0 * w; break;
        case OP_MUL:
            x = val[a[i]];
            y = val[b[i]];
            adj[a[i]] += y * w;
            adj[b[i]] += x * w;
            break;
        case OP_DIV:
            y = val[b[i]];
            adj[a[i]] += (1.0 / y) * w;
            adj[b[i]] += (-val[i] / y) * w;
            break;
        default:
            break;
        }
    }
}

/* Batched replay baseline: for rows r0..r1-1 of X (rows of d values), write the
   row into the d consecutive input nodes in0..in0+d-1, run both sweeps and copy
   the inputs' multipliers into the same row of G. Two threads running it on two
   halves of X, each with its own val and adj, show what the machine gives a
   2-thread batch of hand-written C. */
void ci_batch(int64_t n, int64_t out, const uint8_t *restrict op,
              const int32_t *restrict a, const int32_t *restrict b,
              double *restrict val, const double *restrict pool,
              double *restrict adj, int64_t in0, int64_t d,
              const double *restrict X, double *restrict G, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        memcpy(val + in0, X + r * d, (size_t)d * sizeof(double));
        ci_forward(n, op, a, b, val, pool);
        ci_reverse(n, out, op, a, b, val, pool, adj);
        memcpy(G + r * d, adj + in0, (size_t)d * sizeof(double));
    }
}
