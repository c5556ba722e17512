"""Three objectives written in plain numpy, as users write them (issue 13): they
differentiate with fastape unchanged, and, given ``xp = autograd.numpy``, with
autograd too. ``torch_*`` are the same functions in PyTorch.

    gmm_objective   the Gaussian mixture log-likelihood of ADBench/GradBench: lower
                    triangular inverse-covariance factors assembled from a parameter
                    vector, a log-sum-exp over components, an einsum, the Wishart
                    prior and a multivariate log-gamma constant
    lstm_objective  a diagonal LSTM (ADBench's "d-LSTM"): a few layers, a sequence of
                    characters, log-softmax prediction loss
    mvn_objective   a multivariate normal log-likelihood with a Cholesky factor:
                    ``L = cholesky(S)``, triangular solves, log det from diag(L)

Each ``*_problem(...)`` returns ``(params, data)``; the objective is
``f(*params, *data)``, differentiated in the params.
"""

import math

import numpy as np
import scipy.linalg
import scipy.special


def _logsumexp(xp, x, axis):
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.log(xp.sum(xp.exp(x - m), axis=axis)) + xp.squeeze(m, axis=axis)


# -- Gaussian mixture model (ADBench) ------------------------------------------------

def gmm_problem(d=5, k=8, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    alphas = rng.standard_normal(k)
    means = rng.standard_normal((k, d))
    icf = 0.1 * rng.standard_normal((k, d + d * (d - 1) // 2))
    x = rng.standard_normal((n, d))
    return (alphas, means, icf), (x, 1.0, 0)


def _tril_index(d):
    """Where each entry of a d x d lower triangular factor comes from, in the row
    [exp(diag) (d), off-diagonal (d(d-1)/2), 0]: a constant gather index."""
    idx = np.full((d, d), d + d * (d - 1) // 2)          # the 0 at the end
    np.fill_diagonal(idx, np.arange(d))
    rows, cols = np.tril_indices(d, -1)
    order = np.argsort(cols * d + rows, kind="stable")   # ADBench fills column by column
    idx[rows[order], cols[order]] = d + np.arange(len(rows))
    return idx.reshape(-1)


def gmm_objective(alphas, means, icf, x, wishart_gamma, wishart_m, xp=np):
    n, d = x.shape
    k = alphas.shape[0]
    qdiag = xp.exp(icf[:, :d])
    packed = xp.concatenate([qdiag, icf[:, d:], xp.zeros((k, 1))], axis=1)
    Q = xp.reshape(packed[:, _tril_index(d)], (k, d, d))
    sum_qs = xp.sum(icf[:, :d], axis=1)
    xc = x[:, None, :] - means[None, :, :]                          # n, k, d
    Qxc = xp.einsum("kij,nkj->nki", Q, xc)
    main = alphas[None, :] + sum_qs[None, :] - 0.5 * xp.sum(Qxc * Qxc, axis=2)
    slse = xp.sum(_logsumexp(xp, main, 1))
    lse_alphas = _logsumexp(xp, alphas, 0)
    frob = xp.sum(qdiag * qdiag) + xp.sum(icf[:, d:] * icf[:, d:])
    m = wishart_m + d + 1                                   # the Wishart prior's constant
    C = m * d * (math.log(wishart_gamma) - 0.5 * math.log(2)) - \
        scipy.special.multigammaln(0.5 * m, d)
    prior = 0.5 * wishart_gamma ** 2 * frob - wishart_m * xp.sum(sum_qs) - k * C
    c = -n * d * 0.5 * math.log(2 * math.pi)
    return c + slse - n * lse_alphas + prior


# -- diagonal LSTM (ADBench d-LSTM) ------------------------------------------------

def lstm_problem(layers=2, chars=16, seq=20, seed=0):
    rng = np.random.default_rng(seed)
    main = 0.3 * rng.standard_normal((layers, 2, 4, chars))   # (weight, bias) x 4 gates
    extra = 0.3 * rng.standard_normal((3, chars))            # in/out weights and bias
    state = 0.3 * rng.standard_normal((layers, 2, chars))    # hidden and cell
    seq_ = np.eye(chars)[rng.integers(0, chars, seq)]
    return (main, extra), (state, seq_)


def _sigmoid(xp, x):
    return 1.0 / (1.0 + xp.exp(-x))


def lstm_objective(main, extra, state, sequence, xp=np):
    hidden = [state[i, 0] for i in range(state.shape[0])]
    cell = [state[i, 1] for i in range(state.shape[0])]
    total = 0.0
    count = 0
    for t in range(sequence.shape[0] - 1):
        x = sequence[t] * extra[0]
        for i in range(main.shape[0]):
            w, b = main[i, 0], main[i, 1]
            forget = _sigmoid(xp, x * w[0] + b[0])
            ingate = _sigmoid(xp, hidden[i] * w[1] + b[1])
            outgate = _sigmoid(xp, x * w[2] + b[2])
            change = xp.tanh(hidden[i] * w[3] + b[3])
            cell[i] = cell[i] * forget + ingate * change
            hidden[i] = outgate * xp.tanh(cell[i])
            x = hidden[i]
        ypred = x * extra[1] + extra[2]
        lse = ypred - _logsumexp(xp, ypred, 0)
        total = total + xp.sum(sequence[t + 1] * lse)
        count += sequence.shape[1]
    return -total / count


# -- multivariate normal with a Cholesky factor ---------------------------------------

def mvn_problem(d=30, n=500, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    mu = rng.standard_normal(d)
    x = rng.standard_normal((n, d)) @ A.T + mu
    return (mu, A), (x,)


def mvn_objective(mu, A, x, xp=np):
    """Σ_i log N(x_i; mu, S) with S = A Aᵀ + I: the Cholesky factor, one triangular
    solve for all samples, log det S = 2 Σ log diag L."""
    n, d = x.shape
    S = A @ A.T + np.eye(d)
    L = xp.linalg.cholesky(S)
    r = x - mu
    z = xp.linalg.solve(L, r.T)                 # L z = rᵀ (L is triangular)
    logdet = 2.0 * xp.sum(xp.log(xp.diagonal(L, 0, -1, -2)))   # (axes autograd accepts)
    return -0.5 * xp.sum(z * z) - 0.5 * n * logdet - 0.5 * n * d * math.log(2 * math.pi)


# -- PyTorch versions --------------------------------------------------------------------

def torch_gmm(alphas, means, icf, x, wishart_gamma, wishart_m):
    """gmm_objective in PyTorch, its constants included (the same value)."""
    import torch
    n, d = x.shape
    k = alphas.shape[0]
    qdiag = torch.exp(icf[:, :d])
    packed = torch.cat([qdiag, icf[:, d:], torch.zeros((k, 1), dtype=icf.dtype)], dim=1)
    Q = packed[:, torch.as_tensor(_tril_index(d))].reshape(k, d, d)
    sum_qs = icf[:, :d].sum(1)
    xc = x[:, None, :] - means[None, :, :]
    Qxc = torch.einsum("kij,nkj->nki", Q, xc)
    main = alphas[None, :] + sum_qs[None, :] - 0.5 * (Qxc * Qxc).sum(2)
    slse = torch.logsumexp(main, 1).sum()
    frob = (qdiag * qdiag).sum() + (icf[:, d:] ** 2).sum()
    m = wishart_m + d + 1                                   # the Wishart prior's constant
    C = m * d * (math.log(wishart_gamma) - 0.5 * math.log(2)) - \
        scipy.special.multigammaln(0.5 * m, d)
    prior = 0.5 * wishart_gamma ** 2 * frob - wishart_m * sum_qs.sum() - k * C
    c = -n * d * 0.5 * math.log(2 * math.pi)
    return c + slse - n * torch.logsumexp(alphas, 0) + prior


def torch_lstm(main, extra, state, sequence):
    import torch
    hidden = [state[i, 0] for i in range(state.shape[0])]
    cell = [state[i, 1] for i in range(state.shape[0])]
    total = 0.0
    for t in range(sequence.shape[0] - 1):
        x = sequence[t] * extra[0]
        for i in range(main.shape[0]):
            w, b = main[i, 0], main[i, 1]
            forget = torch.sigmoid(x * w[0] + b[0])
            ingate = torch.sigmoid(hidden[i] * w[1] + b[1])
            outgate = torch.sigmoid(x * w[2] + b[2])
            change = torch.tanh(hidden[i] * w[3] + b[3])
            cell[i] = cell[i] * forget + ingate * change
            hidden[i] = outgate * torch.tanh(cell[i])
            x = hidden[i]
        ypred = x * extra[1] + extra[2]
        total = total + (sequence[t + 1] * (ypred - torch.logsumexp(ypred, 0))).sum()
    return -total / ((sequence.shape[0] - 1) * sequence.shape[1])


def torch_mvn(mu, A, x):
    import torch
    n, d = x.shape
    S = A @ A.T + torch.eye(d, dtype=A.dtype)
    L = torch.linalg.cholesky(S)
    z = torch.linalg.solve_triangular(L, (x - mu).T, upper=False)
    logdet = 2.0 * torch.log(torch.diagonal(L)).sum()
    return -0.5 * (z * z).sum() - 0.5 * n * logdet - 0.5 * n * d * math.log(2 * math.pi)


# -- hand-written numpy gradients ---------------------------------------------------------
#
# Value and gradient of each objective derived by hand and written in plain numpy, as a
# user without an AD tool would write them: the baseline issue 13 times the tools
# against. Each returns (value, gradients in the params' order);
# tests/test_objectives.py checks them against fastape's gradient and central
# differences.

def _softmax(a, axis):
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def gmm_value_and_grad(alphas, means, icf, x, wishart_gamma, wishart_m):
    """gmm_objective and its gradient in (alphas, means, icf). Per component k the
    data in the (k, n, d) layout: Qxc_k = (x - means_k) Q_kᵀ, so that every product
    is one batched matmul of d x d factors."""
    n, d = x.shape
    k = alphas.shape[0]
    qdiag = np.exp(icf[:, :d])
    rows, cols = np.tril_indices(d, -1)
    order = np.argsort(cols * d + rows, kind="stable")       # ADBench's column order
    rows, cols = rows[order], cols[order]
    Q = np.zeros((k, d, d))
    Q[:, np.arange(d), np.arange(d)] = qdiag
    Q[:, rows, cols] = icf[:, d:]
    sum_qs = np.sum(icf[:, :d], axis=1)
    xc = x[None, :, :] - means[:, None, :]                    # k, n, d
    Qxc = xc @ Q.transpose(0, 2, 1)                            # k, n, d
    main = alphas[:, None] + sum_qs[:, None] - 0.5 * np.sum(Qxc * Qxc, axis=2)   # k, n
    mmax = np.max(main, axis=0)
    slse = np.sum(np.log(np.sum(np.exp(main - mmax), axis=0)) + mmax)
    amax = np.max(alphas)
    lse_alphas = np.log(np.sum(np.exp(alphas - amax))) + amax
    frob = np.sum(qdiag * qdiag) + np.sum(icf[:, d:] * icf[:, d:])
    m = wishart_m + d + 1
    C = m * d * (math.log(wishart_gamma) - 0.5 * math.log(2)) - \
        scipy.special.multigammaln(0.5 * m, d)
    prior = 0.5 * wishart_gamma ** 2 * frob - wishart_m * np.sum(sum_qs) - k * C
    c = -n * d * 0.5 * math.log(2 * math.pi)
    value = c + slse - n * lse_alphas + prior
    # reverse: W = ∂slse/∂main (a softmax over components), then main's three terms
    W = _softmax(main, 0)                                     # k, n
    wsum = np.sum(W, axis=1)
    g_alphas = wsum - n * _softmax(alphas, 0)
    G = -W[:, :, None] * Qxc                                  # ∂/∂Qxc: k, n, d
    g_Q = G.transpose(0, 2, 1) @ xc                           # Σ_n G_ni xc_nj: k, d, d
    g_means = -np.sum(G @ Q, axis=1)                          # -Σ_n (Q_kᵀ G_n)
    g_icf = np.empty_like(icf)
    g_icf[:, :d] = (g_Q[:, np.arange(d), np.arange(d)] + wishart_gamma ** 2 * qdiag) * qdiag \
        + (wsum - wishart_m)[:, None]
    g_icf[:, d:] = g_Q[:, rows, cols] + wishart_gamma ** 2 * icf[:, d:]
    return value, (g_alphas, g_means, g_icf)


def lstm_value_and_grad(main, extra, state, sequence):
    """lstm_objective and its gradient in (main, extra): the forward loop keeps each
    step's gates, the reverse loop runs the time steps and layers backwards with the
    multipliers of every layer's hidden and cell state carried from step t + 1 to t."""
    layers, steps, chars = main.shape[0], sequence.shape[0] - 1, sequence.shape[1]
    hidden = [state[i, 0].copy() for i in range(layers)]
    cell = [state[i, 1].copy() for i in range(layers)]
    tape = []           # per step: per layer (x, h, c, f, ig, o, ch, tanh c'), ypred, top
    total = 0.0
    for t in range(steps):
        x = sequence[t] * extra[0]
        saved = []
        for i in range(layers):
            w, b = main[i, 0], main[i, 1]
            f = 1.0 / (1.0 + np.exp(-(x * w[0] + b[0])))
            ig = 1.0 / (1.0 + np.exp(-(hidden[i] * w[1] + b[1])))
            o = 1.0 / (1.0 + np.exp(-(x * w[2] + b[2])))
            ch = np.tanh(hidden[i] * w[3] + b[3])
            c_new = cell[i] * f + ig * ch
            tc = np.tanh(c_new)
            saved.append((x, hidden[i], cell[i], f, ig, o, ch, tc))
            cell[i] = c_new
            hidden[i] = o * tc
            x = hidden[i]
        ypred = x * extra[1] + extra[2]
        ymax = np.max(ypred)
        lse = ypred - (np.log(np.sum(np.exp(ypred - ymax))) + ymax)
        total += np.sum(sequence[t + 1] * lse)
        tape.append((saved, ypred, x))
    count = steps * chars
    value = -total / count
    g_main = np.zeros_like(main)
    g_extra = np.zeros_like(extra)
    dh = [np.zeros(chars) for _ in range(layers)]     # ∂/∂hidden[i], ∂/∂cell[i] from t + 1
    dc = [np.zeros(chars) for _ in range(layers)]
    for t in range(steps - 1, -1, -1):
        saved, ypred, top = tape[t]
        g_lse = -sequence[t + 1] / count
        dy = g_lse - _softmax(ypred, 0) * np.sum(g_lse)
        g_extra[1] += dy * top
        g_extra[2] += dy
        dx = dy * extra[1]
        for i in range(layers - 1, -1, -1):
            x, h, c, f, ig, o, ch, tc = saved[i]
            w = main[i, 0]
            dh_new = dx + dh[i]
            dc_new = dc[i] + dh_new * o * (1.0 - tc * tc)
            pre = np.stack([dc_new * c * f * (1.0 - f),          # forget
                            dc_new * ch * ig * (1.0 - ig),       # ingate
                            dh_new * tc * o * (1.0 - o),         # outgate
                            dc_new * ig * (1.0 - ch * ch)])      # change
            g_main[i, 0] += pre * np.stack([x, h, x, h])
            g_main[i, 1] += pre
            dc[i] = dc_new * f
            dh[i] = pre[1] * w[1] + pre[3] * w[3]
            dx = pre[0] * w[0] + pre[2] * w[2]
        g_extra[0] += dx * sequence[t]
    return value, (g_main, g_extra)


def mvn_value_and_grad(mu, A, x):
    """mvn_objective and its gradient in (mu, A): with S = A Aᵀ + I, r_i = x_i - mu and
    Y = S⁻¹ Rᵀ (two triangular solves with the Cholesky factor), ∂/∂mu = Σ_i (S⁻¹ r_i) and
    ∂/∂S = ½ (Y Yᵀ - n S⁻¹), so ∂/∂A = (Y Yᵀ - n S⁻¹) A."""
    n, d = x.shape
    S = A @ A.T + np.eye(d)
    L = np.linalg.cholesky(S)
    r = x - mu
    z = scipy.linalg.solve_triangular(L, r.T, lower=True)
    logdet = 2.0 * np.sum(np.log(np.diagonal(L)))
    value = -0.5 * np.sum(z * z) - 0.5 * n * logdet - 0.5 * n * d * math.log(2 * math.pi)
    Y = scipy.linalg.solve_triangular(L, z, lower=True, trans="T")       # S⁻¹ rᵀ
    Linv = scipy.linalg.solve_triangular(L, np.eye(d), lower=True)
    g_S2 = Y @ Y.T - n * (Linv.T @ Linv)                                  # 2 ∂/∂S
    return value, (np.sum(Y, axis=1), g_S2 @ A)
