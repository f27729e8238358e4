"""The pure math core against brute force on explicit (Kronecker) systems."""

import numpy as np
import pytest
import torch

from sklearn_slimtrain._memory import GramMemory
from sklearn_slimtrain._sgcv import sgcv_factors, sgcv_values
from sklearn_slimtrain._slimtik import (
    FINAL_GRID_SIZE,
    choose_ridge,
    global_candidates,
    matlab_candidates,
    select_ridge,
    slimtik_step,
    slimtik_update,
    symmetric_eigh,
    tikhonov_from_gram,
)
from sklearn_slimtrain._tridiagonal import slimtik_update_tridiagonal

D64 = torch.float64


def _problem(rng, b=6, p=5, t=3, r=2):
    A = rng.standard_normal((b, p))
    B = rng.standard_normal((b, t))
    W = rng.standard_normal((p, t))
    M = rng.standard_normal((r * b, p))  # memory blocks, stacked
    return A, B, W, M


def _bruteforce_step(A, B, W, M, S_prev, S):
    """Solve (3.7) as one stacked least-squares problem on vec(W) (Kronecker form)."""
    t = B.shape[1]
    I_t = np.eye(t)
    p = A.shape[1]
    # vec() stacks columns of the (t x p) matrix W^T; rows of the system are (sample, target)
    big_M = np.kron(M, I_t)
    big_A = np.kron(A, I_t)
    w_prev = W.reshape(-1)  # row-major (p, t) == vec of W^T columns
    lhs = np.vstack([big_M, big_A, np.sqrt(S) * np.eye(p * t)])
    rhs = np.concatenate([big_M @ w_prev, B.reshape(-1), S_prev / np.sqrt(S) * w_prev])
    w = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return w.reshape(p, t), big_A, big_M


def _bruteforce_gcv(A, B, W, M, S_prev, S):
    w, big_A, big_M = _bruteforce_step(A, B, W, M, S_prev, S)
    n = big_A.shape[0]
    T = np.linalg.inv(S * np.eye(big_A.shape[1]) + big_M.T @ big_M + big_A.T @ big_A)
    resid = big_A @ w.reshape(-1) - B.reshape(-1)
    return n * resid @ resid / (n - np.trace(big_A @ T @ big_A.T)) ** 2


def _kernel_gcv(A, B, W, M, S_prev, cands):
    At, Bt, Wt, Mt = (torch.tensor(v, dtype=D64) for v in (A, B, W, M))
    G = Mt.T @ Mt + At.T @ At
    evals, evecs = torch.linalg.eigh(G)
    R = Bt - At @ Wt
    U = At @ evecs
    H = U.T @ U
    f = sgcv_factors(evals, H, evecs.T @ (At.T @ R), evecs.T @ Wt, (R * R).sum(), At.shape[0])
    return sgcv_values(f, torch.tensor(S_prev, dtype=D64), torch.tensor(cands, dtype=D64)).numpy()


@pytest.mark.parametrize("shape", [(6, 5, 3, 2), (4, 7, 2, 0), (10, 3, 1, 1), (3, 4, 5, 3)])
def test_sgcv_matches_bruteforce_kronecker_gcv(shape):
    b, p, t, r = shape
    rng = np.random.default_rng(sum(shape))
    A, B, W, M = _problem(rng, b, p, t, r)
    S_prev = 0.3
    cands = np.logspace(-4, 2, 13)
    ours = _kernel_gcv(A, B, W, M, S_prev, cands)
    ref = np.array([_bruteforce_gcv(A, B, W, M, S_prev, s) for s in cands])
    np.testing.assert_allclose(ours, ref, rtol=1e-8)
    assert np.argmin(ours) == np.argmin(ref)


def test_sgcv_multitarget_counts_rows_and_trace_per_target():
    # With t identical targets the GCV value of the Kronecker system equals the
    # single-target value: rows b*t and trace t*tr(...) scale together.
    rng = np.random.default_rng(0)
    A, B, W, M = _problem(rng, 8, 4, 1, 1)
    cands = np.logspace(-3, 1, 5)
    one = _kernel_gcv(A, B, W, M, 0.1, cands)
    three = _kernel_gcv(A, np.repeat(B, 3, 1), np.repeat(W, 3, 1), M, 0.1, cands)
    np.testing.assert_allclose(three, one, rtol=1e-10)


# The math takes torch tensors or NumPy arrays (the solver's CPU path) and answers in kind.
LIBS = {"torch": lambda v: torch.tensor(v, dtype=D64), "numpy": lambda v: np.array(v, dtype=np.float64)}


def _numpy(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fixed", [0.05, None])
def test_slimtik_step_matches_stacked_least_squares(fixed, lib):
    rng = np.random.default_rng(3)
    A, B, W, M = _problem(rng, 5, 6, 2, 2)
    S_prev = 0.2
    At, Bt, Wt, Mt = (LIBS[lib](v) for v in (A, B, W, M))
    copies = [v.copy() for v in (A, B, W, M)]
    mem = Mt.T @ Mt
    res = slimtik_step(
        At, Bt, Wt, LIBS[lib](S_prev), mem,
        ridge_fixed=fixed, ridge_ref=LIBS[lib](S_prev), max_change=np.inf,
    )
    kind = torch.Tensor if lib == "torch" else np.ndarray
    assert isinstance(res.coef, kind) and isinstance(res.gram, kind)
    S = float(res.ridge)
    if fixed is not None:
        assert S == pytest.approx(S_prev + fixed)
    else:  # the chosen ridge is the brute-force GCV minimiser over the same grid
        cands = _numpy(global_candidates(mem + At.T @ At))
        ref = [_bruteforce_gcv(A, B, W, M, S_prev, s) for s in cands]
        assert S == pytest.approx(cands[int(np.argmin(ref))], rel=1e-12)
    w_ref, _, _ = _bruteforce_step(A, B, W, M, S_prev, S)
    np.testing.assert_allclose(_numpy(res.coef), w_ref, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(_numpy(res.gram), A.T @ A, rtol=1e-12)
    for before, after in zip(copies, (At, Bt, Wt, Mt)):
        np.testing.assert_array_equal(_numpy(after), before, err_msg="inputs must not be mutated")


@pytest.mark.parametrize("rule", ["global", "matlab"])
@pytest.mark.parametrize("memory", [True, False])
def test_numpy_and_torch_arrays_give_the_same_step(rule, memory):
    rng = np.random.default_rng(11)
    A, B, W, M = _problem(rng, 9, 5, 3, 2)
    mem = M.T @ M if memory else None
    R = B - A @ W
    args = (A.T @ A, A.T @ R, (R * R).sum(), A.shape[0], W, 0.4, mem)
    kw = dict(ridge_fixed=None, ridge_ref=0.4, max_change=0.5, rule=rule, batch=A)
    out = {}
    for lib, conv in LIBS.items():
        wrap = (lambda v, conv=conv: v if v is None or isinstance(v, int) else conv(v))
        out[lib] = slimtik_update(*(wrap(v) for v in args), **{k: wrap(v) if k in ("ridge_ref", "batch") else v
                                                                   for k, v in kw.items()})
    assert float(out["numpy"].ridge) == pytest.approx(float(out["torch"].ridge), rel=1e-12)
    np.testing.assert_allclose(out["numpy"].coef, out["torch"].coef.numpy(), rtol=1e-10, atol=1e-12)
    full = {lib: tikhonov_from_gram(conv(A.T @ A), conv(A.T @ B), conv((B * B).sum()), 9, ridge=None)
            for lib, conv in LIBS.items()}
    assert float(full["numpy"].ridge) == pytest.approx(float(full["torch"].ridge), rel=1e-12)
    np.testing.assert_allclose(full["numpy"].coef, full["torch"].coef.numpy(), rtol=1e-10, atol=1e-12)


def test_symmetric_eigh_on_nonfinite_numpy_raises_torch_error_or_returns_nonfinite():
    # The estimator catches one error type (torch's) for divergence, whichever library
    # solved, and checks the weights' finiteness after every epoch: NumPy's failure to
    # converge must arrive as torch's error, a partial NaN as a non-finite result.
    with pytest.raises(torch.linalg.LinAlgError):
        symmetric_eigh(np.full((3, 3), np.nan))
    G = np.eye(3)
    G[0, 1] = G[1, 0] = np.nan
    try:
        evals, _ = symmetric_eigh(G)
    except torch.linalg.LinAlgError:
        pass
    else:
        assert not np.isfinite(evals).all()
    evals, evecs = symmetric_eigh(np.diag([3.0, 1.0, 2.0]))
    np.testing.assert_allclose(evals, [1.0, 2.0, 3.0])
    assert isinstance(evecs, np.ndarray)


def test_bounded_step_clips_the_sgcv_minimiser():
    rng = np.random.default_rng(4)
    A, _, W, _M = _problem(rng, 12, 3, 1, 0)
    B = A @ W + 0.01 * rng.standard_normal((12, 1))  # informative data, far from the prior 0
    args = [torch.tensor(v, dtype=D64) for v in (A, B, np.zeros_like(W))]
    S_prev = torch.tensor(1e3, dtype=D64)  # far above any useful ridge for this problem
    kw = dict(ridge_fixed=None, ridge_ref=S_prev)
    free = slimtik_step(*args, S_prev, torch.zeros(3, 3, dtype=D64), max_change=np.inf, **kw)
    bounded = slimtik_step(*args, S_prev, torch.zeros(3, 3, dtype=D64), max_change=0.5, **kw)
    assert float(free.ridge) < 1e3 / 2
    assert float(bounded.ridge) == pytest.approx(1e3 / 2)  # at most a factor 2 down
    first = slimtik_step(*args, torch.tensor(0.0, dtype=D64), torch.zeros(3, 3, dtype=D64),
                         ridge_fixed=None, ridge_ref=torch.tensor(1e-9, dtype=D64), max_change=0.5)
    assert float(first.ridge) == pytest.approx(1.5e-9, rel=1e-12)  # moves up from ridge_ref, bounded


@pytest.mark.parametrize("lib", LIBS)
def test_matlab_candidates_window(lib):
    S = LIBS[lib](1e-2)
    c = matlab_candidates(S)
    assert c.shape == (61,)
    assert float(c.min()) == pytest.approx(0.5e-2) and float(c.max()) == pytest.approx(1.5e-2)
    tiny = matlab_candidates(LIBS[lib](1e-9))
    assert float(tiny.min()) >= 1e-7  # the published floor


@pytest.mark.parametrize("lib", LIBS)
def test_select_ridge_breaks_ties_towards_larger_ridge(lib):
    cands = LIBS[lib]([1e-6, 1e-4, 1e-2, 1.0])
    values = LIBS[lib]([1.0, 1.0, 1.0 + 1e-12, 2.0])
    assert float(select_ridge(values, cands)) == pytest.approx(1e-2)
    values = LIBS[lib]([float("nan"), 3.0, 2.0, 5.0])
    assert float(select_ridge(values, cands)) == pytest.approx(1e-2)
    # the tolerance is TIE_RTOL (sqrt(float64 eps)): 1e-9 apart is a tie, 1e-6 apart is not
    values = LIBS[lib]([1.0, 1.0 + 1e-9, 1.0 + 1e-6, 2.0])
    assert float(select_ridge(values, cands)) == pytest.approx(1e-4)
    assert float(select_ridge(values, cands, smallest=True)) == pytest.approx(1e-6)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("rule", ["global", "matlab"])
def test_a_step_without_any_finite_sgcv_value_is_all_tied(lib, rule):
    # all values inf (no candidate resolved: a blown-up network) or NaN: all tied, so the
    # global rule takes the largest ridge the bound allows (1.5 S, damping the head) and
    # the MATLAB rule its smallest candidate (S / 2, its ties go to the smaller ridge)
    G, prev, ref = LIBS[lib](np.diag([2.0, 1.0, 0.5])), LIBS[lib](0.3), LIBS[lib](0.1)
    for fill in (np.inf, np.nan):
        def values_at(cands, fill=fill):
            return cands * 0 + fill

        chosen = choose_ridge(values_at, G, prev, ref, max_change=0.5, rule=rule)
        assert float(chosen) == pytest.approx(0.45 if rule == "global" else 0.15)
    # no information in the batch (G = 0): S stays whatever the values
    zero = LIBS[lib](np.zeros((3, 3)))
    assert float(choose_ridge(lambda c: c * 0 + 1.0, zero, prev, ref, max_change=0.5, rule=rule)) == 0.3


def test_gram_memory_keeps_the_last_r_blocks():
    mem = GramMemory(2, 2, dtype=D64, device=torch.device("cpu"))
    assert torch.equal(mem.total(), torch.zeros(2, 2, dtype=D64))
    for k in (1.0, 2.0, 4.0):
        mem.push(k * torch.eye(2, dtype=D64))
    assert torch.allclose(mem.total(), 6.0 * torch.eye(2, dtype=D64))
    empty = GramMemory(0, 3, dtype=D64, device=torch.device("cpu"))
    empty.push(torch.eye(3, dtype=D64))
    assert torch.equal(empty.total(), torch.zeros(3, 3, dtype=D64))


def test_gram_memory_grows_with_the_batches_seen():
    # a depth meant as "unlimited" costs the blocks stored, not the depth
    mem = GramMemory(10**9, 3, dtype=D64, device=torch.device("cpu"))
    for k in range(1, 6):
        mem.push(k * torch.eye(3, dtype=D64))
    assert mem._buffer.shape == (5, 3, 3)
    assert torch.equal(mem.total(), 15.0 * torch.eye(3, dtype=D64))
    ring = GramMemory(3, 1, dtype=D64, device=torch.device("cpu"))
    for k in range(1, 8):  # keeps 5, 6, 7
        ring.push(torch.tensor([[float(k)]], dtype=D64))
        assert ring._buffer.shape[0] == min(k, 3)
    assert float(ring.total()) == 18.0


def test_unlimited_gram_memory_is_a_compensated_running_sum():
    # depth=None keeps every block as one sum: a (2, p, p) state whatever the number of
    # pushes, and Kahan's compensation keeps a float32 sum of 20,000 blocks at float32's
    # precision, where plain float32 accumulation drifts (checked below, so the test can fail)
    rng = np.random.default_rng(0)
    blocks = rng.uniform(0.0, 1.0, (20_000, 2, 2)) + np.array([[0.0, 1e-3], [1e-3, 0.0]])
    exact = blocks.sum(0)  # float64 reference (float32 inputs below, so rounded first)
    exact32 = blocks.astype(np.float32).astype(np.float64).sum(0)
    mem = GramMemory(None, 2, dtype=torch.float32, device=torch.device("cpu"))
    plain = torch.zeros(2, 2, dtype=torch.float32)
    for block in torch.from_numpy(blocks.astype(np.float32)):
        mem.push(block)
        plain += block
    assert mem._buffer.shape == (2, 2, 2) and mem.active
    err = np.abs(mem.total().double().numpy() - exact32).max() / np.abs(exact).max()
    drift = np.abs(plain.double().numpy() - exact32).max() / np.abs(exact).max()
    assert err < 2 * np.finfo(np.float32).eps < 8 * np.finfo(np.float32).eps < drift
    assert not GramMemory(0, 2, dtype=D64, device=torch.device("cpu")).active


# --------------------------------------------------------------- property tests
from hypothesis import given, settings
from hypothesis import strategies as st

# Issue 4's fuzz ranges: batch 1..64, width 1..64, targets 1..8, memory 0..10 blocks,
# feature scales 1e-8..1e8, duplicated (rank-deficient) columns.
FUZZ_EXAMPLES = 100  # cases per CI run (docs/reliability.md reports this number)


@st.composite
def _random_problem(draw):
    b = draw(st.integers(1, 64))
    p = draw(st.integers(1, 64))
    t = draw(st.integers(1, 8))
    r = draw(st.integers(0, 10))
    scale = 10.0 ** draw(st.integers(-8, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    dup = draw(st.booleans())
    rng = np.random.default_rng(seed)
    A, B, W, M = _problem(rng, b, p, t, r)
    if dup and p > 1:  # duplicated columns: rank-deficient features
        k = draw(st.integers(1, p - 1))
        A[:, -k:] = A[:, :k]
        M[:, -k:] = M[:, :k]
    return A * scale, B, W / scale, M * scale


def _dense_reference(A, B, W, M, S_prev, S):
    """The step (3.7) by a stacked float64 least-squares solve per target (SVD, no eigh),
    and its GCV value from the explicit influence matrix of the Kronecker system."""
    p = A.shape[1]
    lhs = np.vstack([M, A, np.sqrt(S) * np.eye(p)])
    rhs = np.vstack([M @ W, B, S_prev / np.sqrt(S) * W])
    w = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    T_At = np.linalg.solve(S * np.eye(p) + M.T @ M + A.T @ A, A.T)  # (S I + G)^{-1} A^T
    n, t = A.shape[0] * B.shape[1], B.shape[1]
    resid = A @ w - B
    gcv = n * (resid * resid).sum() / (n - t * np.trace(A @ T_At)) ** 2
    return w, gcv


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(_random_problem(), st.floats(1e-3, 1e2))
def test_step_and_sgcv_match_dense_reference_on_random_problems(problem, rel_ridge):
    A, B, W, M = problem
    G = M.T @ M + A.T @ A
    S_prev = rel_ridge * max(np.trace(G) / G.shape[0], 1e-300)
    S = 1.7 * S_prev
    At, Bt, Wt, Mt = (torch.tensor(v, dtype=D64) for v in (A, B, W, M))
    res = slimtik_step(At, Bt, Wt, torch.tensor(S_prev, dtype=D64), Mt.T @ Mt,
                       ridge_fixed=S - S_prev, ridge_ref=torch.tensor(S_prev, dtype=D64), max_change=0.5)
    assert torch.isfinite(res.coef).all()
    w_ref, gcv_ref = _dense_reference(A, B, W, M, S_prev, S)
    # cond(S I + G) <= 1 + ||G|| / S <= 1 + p * 1e3 here: float64 leaves >= 9 digits
    np.testing.assert_allclose(res.coef.numpy(), w_ref, rtol=1e-6, atol=1e-7 * np.abs(w_ref).max() + 1e-300)
    ours = _kernel_gcv(A, B, W, M, S_prev, np.array([S]))
    np.testing.assert_allclose(ours, [gcv_ref], rtol=1e-6)
    free = slimtik_step(At, Bt, Wt, torch.tensor(S_prev, dtype=D64), Mt.T @ Mt, ridge_fixed=None,
                        ridge_ref=torch.tensor(S_prev, dtype=D64), max_change=np.inf)
    assert torch.isfinite(free.coef).all() and float(free.ridge) > 0  # the sGCV head solve is finite too


def test_sgcv_ignores_residuals_below_their_rounding_error():
    # b < p and no memory: a tiny ridge interpolates the batch, and the residual (and the
    # denominator) of sGCV vanish to rounding noise.  Those candidates must not win:
    # they are inf, whichever way the noise falls (Gram-domain H or H = U^T U).
    rng = np.random.default_rng(7)
    A, B, W, M = _problem(rng, b=4, p=7, t=2, r=0)
    At, Bt, Wt = (torch.tensor(v, dtype=D64) for v in (A, B, W))
    G = At.T @ At
    evals, evecs = torch.linalg.eigh(G)
    R = Bt - At @ Wt
    cands = torch.tensor([1e-14, 1e-12, 1e-2, 1.0], dtype=D64)
    for H in (evecs.T @ G @ evecs, (At @ evecs).T @ (At @ evecs)):
        f = sgcv_factors(evals, H, evecs.T @ (At.T @ R), evecs.T @ Wt, (R * R).sum(), 4)
        values = sgcv_values(f, torch.tensor(0.0, dtype=D64), cands).numpy()
        assert np.isinf(values[:2]).all()
        ref = [_bruteforce_gcv(A, B, W, M, 0.0, s) for s in (1e-2, 1.0)]
        np.testing.assert_allclose(values[2:], ref, rtol=1e-6)


def _exact_gcv(A, B, S):
    """GCV of the Tikhonov head ``min ||A W - B||^2 + S ||W - 0||^2`` from the SVD of ``A`` (b x p, any shape)."""
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    c = U.T @ B
    b, t = B.shape
    outside = (B * B).sum() - (c * c).sum()  # the part of B that A cannot reach
    resid = outside + (((S / (s**2 + S))[:, None] * c) ** 2).sum()
    return b * t * resid / (b * t - t * (s**2 / (s**2 + S)).sum()) ** 2


@pytest.mark.parametrize("lib", ["torch", "numpy"])
@pytest.mark.parametrize("path", ["final head", "tridiagonal step"])
def test_gcv_ignores_denominators_below_their_rounding_error(lib, path):
    # A review's case: 40 rows, 61 weights (fewer rows than weights), a reference head that nearly
    # interpolates (the last slimTik iterate, for the final head), so the residual stays resolved
    # down to tiny ridges. There the eigenvalues that are zero in exact arithmetic, computed as
    # +-1e-15 d_max, made b - tau negative; squared, it read as a large denominator, and the GCV
    # chose 2.7e-11 where the exact minimiser is 0.17 (test R2 0.11 against 0.28).
    if path == "tridiagonal step" and lib == "torch":
        pytest.skip("the tridiagonal step is NumPy's (LAPACK's sytrd)")
    rng = np.random.default_rng(3)
    N, p, t = 40, 60, 3
    Z = rng.normal(size=(N, p))
    Y = Z[:, :2] @ rng.normal(size=(2, t)) + 0.3 * rng.normal(size=(N, t))
    A, B = np.c_[Z, np.ones(N)] / np.sqrt(N), (Y - Y.mean(0)) / np.sqrt(N)
    W0 = np.linalg.solve(A.T @ A + 1e-9 * np.eye(p + 1), A.T @ B)  # nearly interpolates
    R = B - A @ W0
    gram, cross, rnorm2 = A.T @ A, A.T @ R, (R * R).sum()
    if path == "final head":
        conv = LIBS[lib]
        chosen = float(tikhonov_from_gram(conv(gram), conv(cross), conv(np.asarray(rnorm2)), N, ridge=None,
                                          coef=conv(W0)).ridge)
        cands = np.asarray(global_candidates(gram, FINAL_GRID_SIZE))
    else:
        kwargs = dict(ridge_fixed=None, ridge_ref=np.asarray(1e-3), max_change=np.inf)
        chosen = float(slimtik_update_tridiagonal(gram, cross, np.asarray(rnorm2), N, W0, np.asarray(0.0),
                                                  **kwargs).ridge)
        cands = np.asarray(global_candidates(gram))
    exact = np.array([_exact_gcv(A, B, S) for S in cands])
    assert 0.05 < chosen < 0.5  # the exact minimiser is 0.17
    assert _exact_gcv(A, B, chosen) <= exact.min() * (1 + 1e-6)


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_sgcv_values_are_never_nan(lib):
    # select_ridge and the bounded step compare values: a NaN (a diverged batch, a NaN
    # ridge) must read as "no information" (inf), never win or poison the minimum.
    rng = np.random.default_rng(8)
    A, B, W, _ = _problem(rng, b=6, p=4, t=2, r=0)
    conv = LIBS[lib]
    G = A.T @ A
    evals, evecs = np.linalg.eigh(G)
    R = B - A @ W
    args = [conv(v) for v in (evals, evecs.T @ G @ evecs, evecs.T @ (A.T @ R), evecs.T @ W)]
    cands = conv(np.logspace(-6, 2, 9))
    clean = sgcv_values(sgcv_factors(*args, conv(np.asarray((R * R).sum())), 6), conv(np.asarray(0.5)), cands)
    assert np.isfinite(np.asarray(clean)).all()
    for rnorm2, ridge_prev in ((np.nan, 0.5), ((R * R).sum(), np.nan), (np.inf, 0.5)):
        f = sgcv_factors(*args, conv(np.asarray(rnorm2)), 6)
        values = np.asarray(sgcv_values(f, conv(np.asarray(ridge_prev)), cands))
        assert not np.isnan(values).any() and np.isinf(values).all()


# ------------------------------------------------- the tridiagonal step (no memory)
def _tridiagonal_args(A, B, W, dtype=np.float64):
    R = B - A @ W
    return [np.asarray(v, dtype=dtype) for v in (A.T @ A, A.T @ R, (R * R).sum())] + [A.shape[0],
                                                                                       np.asarray(W, dtype=dtype)]


@pytest.mark.parametrize("fixed", [0.05, None])
@pytest.mark.parametrize("b, p, t", [(9, 5, 2), (4, 7, 3), (12, 12, 1)])
def test_tridiagonal_step_matches_stacked_least_squares(b, p, t, fixed):
    # Same brute force as the eigendecomposition step above: the chosen ridge minimises the
    # explicit Kronecker GCV over the grid, and the head solves the stacked system (3.7).
    rng = np.random.default_rng(11)
    A, B, W, M = _problem(rng, b, p, t, 0)
    S_prev = 0.2
    gram, cross, rnorm2, n, coef = args = _tridiagonal_args(A, B, W)
    copies = [np.copy(v) for v in args]
    res = slimtik_update_tridiagonal(gram, cross, rnorm2, n, coef, np.asarray(S_prev), ridge_fixed=fixed,
                                     ridge_ref=np.asarray(S_prev), max_change=np.inf)
    assert isinstance(res.coef, np.ndarray) and res.coef.dtype == np.float64
    S = float(res.ridge)
    if fixed is not None:
        assert S == pytest.approx(S_prev + fixed)
    else:
        cands = global_candidates(gram)
        ref = [_bruteforce_gcv(A, B, W, M, S_prev, s) for s in cands]
        assert S == pytest.approx(cands[int(np.argmin(ref))], rel=1e-12)
    w_ref, _, _ = _bruteforce_step(A, B, W, M, S_prev, S)
    np.testing.assert_allclose(res.coef, w_ref, rtol=1e-9, atol=1e-11)
    for before, after in zip(copies, args):
        np.testing.assert_array_equal(after, before, err_msg="inputs must not be mutated")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rule, max_change, fixed", [("global", 0.5, None), ("global", np.inf, None),
                                                     ("matlab", 0.5, None), ("global", 0.5, 1e-3)])
@pytest.mark.parametrize("b, p, t", [(32, 9, 1), (10, 17, 4), (64, 65, 1), (40, 70, 2), (8, 2, 1), (5, 1, 2)])
def test_tridiagonal_step_follows_the_eigendecomposition_step(b, p, t, rule, max_change, fixed, dtype):
    rng = np.random.default_rng(p * 100 + t)
    A = rng.standard_normal((b, p)) / np.sqrt(b)
    B = A @ rng.standard_normal((p, t)) + 0.1 * rng.standard_normal((b, t)) / np.sqrt(b)
    W = 0.5 * rng.standard_normal((p, t))
    gram, cross, rnorm2, n, coef = _tridiagonal_args(A, B, W, dtype)
    kwargs = dict(ridge_fixed=fixed, ridge_ref=np.asarray(0.2, dtype), max_change=max_change, weight=0.8, rule=rule)
    ridge_prev = np.asarray(0.3, dtype)
    ours = slimtik_update_tridiagonal(gram, cross, rnorm2, n, coef, ridge_prev, **kwargs)
    with np.errstate(all="ignore"):  # as the solver's stepping(): float32 sGCV may divide by zero
        ref = slimtik_update(gram, cross, rnorm2, n, coef, ridge_prev, None, batch=A.astype(dtype), **kwargs)
    assert ours.coef.dtype == dtype and ours.ridge.dtype == dtype
    if dtype == np.float64:  # the same grid point (the two sGCV evaluations differ in rounding only)
        assert float(ours.ridge) == pytest.approx(float(ref.ridge), rel=1e-14)
        np.testing.assert_allclose(ours.coef, ref.coef, rtol=0, atol=1e-12 * np.abs(ref.coef).max())
        return
    # float32: on the flat part of the sGCV curve (a tiny ridge, unbounded steps) the two
    # roundings may pick different grid points; both must be minimisers to float32
    # accuracy (the brute-force GCV in float64), and each head the step for its ridge.
    M = np.zeros((0, p))
    gcv = {name: _bruteforce_gcv(A, B, W, M, 0.3, float(res.ridge)) for name, res in (("ours", ours), ("ref", ref))}
    assert gcv["ours"] == pytest.approx(gcv["ref"], rel=1e-4)
    w_ref, _, _ = _bruteforce_step(A, B, W, M, 0.3, float(ours.ridge))
    np.testing.assert_allclose(ours.coef, w_ref, rtol=0, atol=1e-4 * np.abs(w_ref).max())


def test_tridiagonal_step_does_not_take_an_unresolved_tiny_ridge():
    # A review's case: 32 rows, 100 tanh features of scale 1e3 plus the ones column, W = 0.
    # At tiny S the tridiagonal solve's error (cond(T + S I) ~ 1e13) made the residual read
    # as small and valid, and the step chose 7.4e-4 where the sGCV minimiser is 53.6.
    rng = np.random.RandomState(0)
    b, p = 32, 100
    Xr, Wf = rng.randn(b, 3), rng.randn(3, p)
    A = np.c_[1e3 * np.tanh(Xr @ Wf), np.ones(b)] / np.sqrt(b)
    B = (np.sin(Xr[:, :1]) + Xr[:, 1:2] * Xr[:, 2:3]) / np.sqrt(b)
    W = np.zeros((p + 1, 1))
    gram, cross, rnorm2, n, coef = _tridiagonal_args(A, B, W)
    kwargs = dict(ridge_fixed=None, ridge_ref=np.asarray(1e-3), max_change=np.inf)
    ours = slimtik_update_tridiagonal(gram, cross, rnorm2, n, coef, np.asarray(0.0), **kwargs)
    ref = slimtik_update(gram, cross, rnorm2, n, coef, np.asarray(0.0), None, batch=A, **kwargs)

    def sgcv(S):  # kernel form, b x b (K + S I well conditioned for S >= 1e-3 here)
        K = A @ A.T
        fit = K @ np.linalg.solve(K + S * np.eye(b), B)
        return b * ((fit - B) ** 2).sum() / (b - np.trace(np.linalg.solve(K + S * np.eye(b), K))) ** 2

    cands = global_candidates(gram)
    usable = cands[cands >= 1e-3]
    best = usable[np.argmin([sgcv(S) for S in usable])]
    assert float(ref.ridge) == pytest.approx(best, rel=1e-12)
    assert float(ours.ridge) == pytest.approx(best, rel=1e-12)
    np.testing.assert_allclose(ours.coef, ref.coef, rtol=0, atol=1e-9 * np.abs(ref.coef).max())


@settings(max_examples=FUZZ_EXAMPLES // 2, deadline=None)
@given(_random_problem(), st.floats(1e-3, 1e2))
def test_tridiagonal_step_matches_dense_reference_on_random_problems(problem, rel_ridge):
    # The fuzz cases of the eigendecomposition step above, without memory.
    A, B, W, M = problem
    M = M[:0]
    gram, cross, rnorm2, n, coef = _tridiagonal_args(A, B, W)
    S_prev = rel_ridge * max(np.trace(gram) / gram.shape[0], 1e-300)
    S = 1.7 * S_prev
    res = slimtik_update_tridiagonal(gram, cross, rnorm2, n, coef, np.asarray(S_prev), ridge_fixed=S - S_prev,
                                     ridge_ref=np.asarray(S_prev), max_change=0.5)
    w_ref, _ = _dense_reference(A, B, W, M, S_prev, S)
    # cond(S I + G) <= 1 + p * 1e3 here, as above
    np.testing.assert_allclose(res.coef, w_ref, rtol=1e-6, atol=1e-7 * np.abs(w_ref).max() + 1e-300)
    free = slimtik_update_tridiagonal(gram, cross, rnorm2, n, coef, np.asarray(S_prev), ridge_fixed=None,
                                      ridge_ref=np.asarray(S_prev), max_change=np.inf)
    assert np.isfinite(free.coef).all() and float(free.ridge) > 0


def test_tridiagonal_step_on_nonfinite_features_raises_like_the_eigendecomposition_step():
    # Non-finite features reach the estimator as torch's LinAlgError (read as divergence),
    # whichever path solved.
    rng = np.random.default_rng(12)
    A, B, W, _ = _problem(rng, 8, 5, 1, 0)
    gram, cross, rnorm2, n, coef = _tridiagonal_args(A, B, W)
    gram[1, 2] = gram[2, 1] = np.nan
    with pytest.raises(torch.linalg.LinAlgError):
        slimtik_update_tridiagonal(gram, cross, rnorm2, n, coef, np.asarray(0.1), ridge_fixed=None,
                                   ridge_ref=np.asarray(0.1), max_change=0.5)


@pytest.mark.parametrize("rule", ["global", "matlab"])
@pytest.mark.parametrize("path", ["eigh", "tridiagonal"])
def test_a_batch_without_information_leaves_the_head_and_ridge(rule, path):
    # Dead features and no intercept: G = 0, A^T R = 0, a flat sGCV curve.  Before, the
    # ridge halved and the head doubled at every such step (S_{k-1} / S_k = 2).
    p, t = (9, 2) if path == "eigh" else (70, 1)
    rng = np.random.default_rng(0)
    coef, ridge_prev = rng.standard_normal((p, t)), np.asarray(0.3)
    zeros = np.zeros((p, p)), np.zeros((p, t))
    kw = dict(ridge_fixed=None, ridge_ref=ridge_prev, max_change=0.5, rule=rule)
    with np.errstate(all="ignore"):  # as SlimTikHead.stepping: the grid at the floor overflows
        if path == "eigh":
            result = slimtik_update(*zeros, np.asarray(4.0), 32, coef, ridge_prev, None, **kw)
        else:
            result = slimtik_update_tridiagonal(*zeros, np.asarray(4.0), 32, coef, ridge_prev, **kw)
    assert float(result.ridge) == 0.3
    np.testing.assert_array_equal(result.coef, coef)


def test_matlab_rule_breaks_ties_towards_the_smaller_ridge():
    # MATLAB's min() returns the first of equal values, and the published candidates increase
    cands = np.array([0.005, 0.01, 0.015])
    values = np.array([1.0, 1.0, 1.0])
    assert select_ridge(values, cands, smallest=True) == 0.005
    assert select_ridge(values, cands) == 0.015
    assert select_ridge(np.array([2.0, 1.0, 1.0 + 1e-12]), cands, smallest=True) == 0.01


@pytest.mark.parametrize("path", ["eigh", "tridiagonal"])
def test_grid_floor_holds_below_the_step_bound(path):
    # A reference ridge far below the grid's floor (1e-12 tr(G)/p): the step bound alone
    # would keep S near 1.5 * 1e-21 (cond(G + S I) ~ 1e17); the floor is applied last.
    rng = np.random.default_rng(3)
    A, B, W, _ = _problem(rng, 4, 17, 1, 0)
    gram = A.T @ A
    tiny = np.asarray(1.2e-21)
    if path == "eigh":
        At, Bt, Wt = (torch.tensor(v, dtype=D64) for v in (A, B, W))
        res = slimtik_step(At, Bt, Wt, torch.tensor(0.0, dtype=D64), None, ridge_fixed=None,
                           ridge_ref=torch.tensor(tiny, dtype=D64), max_change=0.5)
    else:
        res = slimtik_update_tridiagonal(*_tridiagonal_args(A, B, W), np.asarray(0.0), ridge_fixed=None,
                                         ridge_ref=tiny, max_change=0.5)
    floor = float(global_candidates(gram)[0])
    assert float(res.ridge) == pytest.approx(floor, rel=1e-12)
    S = float(res.ridge)
    assert np.linalg.cond(gram + S * np.eye(17)) <= 1e12 * 17 * 1.01


def test_tiny_ridge_init_does_not_diverge():
    from sklearn_slimtrain import SlimTrainRegressor
    from sklearn_slimtrain.datasets import make_peaks

    X, y = make_peaks(200, random_state=0)
    model = SlimTrainRegressor(batch_size=4, ridge_init=1e-20, max_iter=2, random_state=0)
    with pytest.warns(Warning) as record:
        model.fit(X, y)
    assert not [w for w in record if "diverged" in str(w.message)]
    assert model.n_iter_ == 2 and np.isfinite(model.coef_).all()


def _duplicated_columns(rng, N=60, p=20, t=2):
    """Features whose last 3 columns repeat the first 3 (a rank-deficient Gram matrix), and targets."""
    Z = rng.normal(size=(N, p - 3))
    Z = np.c_[Z, Z[:, :3]]
    Y = np.sin(Z[:, :2]) @ rng.normal(size=(2, t)) + 0.1 * rng.normal(size=(N, t))
    return Z, Y


@pytest.mark.parametrize("lib", ["torch", "numpy"])
@pytest.mark.parametrize("ridge", [1e-30, 1e-20, 1e-14])
def test_a_fixed_ridge_below_rounding_gives_the_stable_tikhonov_head(lib, ridge):
    # A bug hunt: ridge=1e-20 on features with duplicated columns gave coefficients of 1e17 and a
    # test R2 of -3e10: rounding noise along the null directions of Z^T Z divided by the ridge.
    # The head must be the stable (SVD) least-squares solution of the Tikhonov problem, whose
    # limit at a vanishing ridge is the minimum-norm solution.
    rng = np.random.default_rng(0)
    Z, Y = _duplicated_columns(rng)
    N = len(Z)
    conv = LIBS[lib]
    head = tikhonov_from_gram(conv(Z.T @ Z / N), conv(Z.T @ Y / N), conv(np.asarray((Y * Y).sum() / N)), N,
                              ridge=ridge)
    # the Tikhonov head from the SVD of Z / sqrt(N), singular values below lstsq's cut-off read as 0
    # (the stacked least-squares problem is no reference here: solved by lstsq at ridge 1e-20 it is
    # off by 389 on coefficients of at most 0.4, the same noise amplification)
    U, sv, Vt = np.linalg.svd(Z / np.sqrt(N), full_matrices=False)
    sv = np.where(sv > max(Z.shape) * np.finfo(float).eps * sv.max(), sv, 0.0)
    expected = Vt.T @ ((sv / (sv**2 + ridge))[:, None] * (U.T @ (Y / np.sqrt(N))))
    np.testing.assert_allclose(_numpy(head.coef), expected, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(_numpy(head.coef), np.linalg.pinv(Z) @ Y, atol=1e-12)  # the vanishing ridge's limit


@pytest.mark.parametrize("path", ["eigendecomposition", "tridiagonal"])
def test_a_fixed_ridge_below_rounding_leaves_the_null_directions_alone(path):
    # one slimTik step from W_prev = 0 on a batch with fewer rows (20) than weights (40) and a
    # cumulative ridge of 1e-20: the step has no component in the batch's null space (exactly
    # zero in exact arithmetic), and its range part is the least-squares solution
    rng = np.random.default_rng(1)
    A = rng.normal(size=(20, 40))
    B = rng.normal(size=(20, 2))
    step = slimtik_update if path == "eigendecomposition" else slimtik_update_tridiagonal
    extra = {"memory_gram": None} if path == "eigendecomposition" else {}
    result = step(A.T @ A, A.T @ B, np.asarray((B * B).sum()), 20, np.zeros((40, 2)), np.asarray(0.0),
                  ridge_fixed=1e-20, ridge_ref=np.asarray(1e-3), max_change=0.5, **extra)
    np.testing.assert_allclose(result.coef, np.linalg.pinv(A) @ B, atol=1e-8)
