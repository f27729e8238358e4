"""Sampled generalized cross-validation (sGCV) for one slimTik step.

Pure math on tensors: tensors in, new tensors or a NamedTuple out, inputs never
mutated, no scikit-learn import.  The layout follows scikit-learn's
``_RidgeGCV``: :func:`sgcv_factors` does the expensive part once per step (after
the one eigendecomposition done by the caller), :func:`sgcv_values` then
evaluates the sGCV function for *all* candidate ridges in one vectorised tensor
operation that stays on the device.

Notes
-----
Notation (one slimTik step ``k``, dense head, see the paper's (3.4)-(3.7)):

* ``A`` (``b x p``): the current batch's features (with the ones column when the
  intercept is fitted), each row divided by ``sqrt(n_batch)``;
* ``R = B - A W_{k-1}`` (``b x t``): the scaled residual of the previous head on
  the current batch, ``t`` targets;
* ``G = sum_{i=k-r}^{k} A_i^T A_i`` (``p x p``): Gram matrix of the current batch
  and the ``r`` blocks in memory, with eigendecomposition ``G = V diag(d) V^T``;
* ``S`` the candidate cumulative ridge ``S_k = S_{k-1} + Lambda``.

The slimTik iterate in update form (3.3) is

.. math::

    W_k(S) = W_{k-1} + V D(S) (Q - \\Lambda P),\\qquad
    D(S) = \\operatorname{diag}(1/(d + S)),\\ Q = U^T R,\\ P = V^T W_{k-1},

with ``U = A V``.  The residual on the current batch is
``A W_k(S) - B = U D X - R`` with ``X = Q - Lambda P``, so

.. math::

    \\|A W_k(S) - B\\|_F^2 = \\|R\\|_F^2 - 2\\sum_j D_j (q_j - \\Lambda m_j)
      + D^T (H \\circ X X^T) D,

where ``H = U^T U = V^T (A^T A) V``, ``q_j = sum_t Q_{jt}^2``, ``m_j = sum_t Q_{jt} P_{jt}`` and
``X X^T = QQ^T - Lambda (QP^T + PQ^T) + Lambda^2 PP^T``.  The three Hadamard
products are formed once, so each candidate costs ``O(p^2)`` independent of the
number of targets and of the batch size.

For ``t`` targets the vectorised system ``(Z^T (x) I_t) vec(W) = vec(C)`` has
``b t`` rows and its influence matrix has trace ``t tr(A T(S) A^T)`` with
``tr(A T(S) A^T) = sum_j D_j H_jj``.  The sGCV function (3.4) is therefore

.. math::

    \\operatorname{sGCV}(S) = \\frac{b t\\, \\|A W_k(S) - B\\|_F^2}
                                  {(b t - t \\sum_j D_j H_{jj})^2},

which is what the published MATLAB code computes (the published PyTorch
Kronecker solver counts ``b`` rows with a trace for one target).
"""

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SGCVFactors", "sgcv_factors", "sgcv_values"]


class SGCVFactors(NamedTuple):
    """Quantities of one slimTik step that do not depend on the ridge.

    All tensors live on the device of the inputs, in their dtype.
    """

    evals: Tensor  # (p,) eigenvalues of G, clipped at 0
    quad: Tensor  # (p, 3p) [H o QQ^T, H o (QP^T + PQ^T), H o PP^T]
    lin: Tensor  # (p, 3) columns q_j, m_j, H_jj
    rnorm2: Tensor  # () ||R||_F^2
    n_rows: int  # b (rows of the current batch)
    n_targets: int  # t


@torch.no_grad()
def sgcv_factors(evals: Tensor, H: Tensor, Q: Tensor, P: Tensor, rnorm2: Tensor, n_rows: int) -> SGCVFactors:
    """Factor the sGCV function of one step once, for every candidate ridge.

    Every argument is a small matrix (``p x p`` or ``p x t``) or a scalar: the
    batch enters only through ``A^T A``, ``A^T R`` and ``||R||^2``, so a head
    whose batch matrix ``A`` has many rows (a convolution applied to images)
    costs no more here than a dense one with ``p`` weights.

    Parameters
    ----------
    evals : Tensor of shape (p,)
        Eigenvalues of the memory-plus-batch Gram matrix ``G = V diag(d) V^T``.
    H : Tensor of shape (p, p)
        ``U^T U = V^T (A^T A) V``: the batch's Gram matrix in the eigenbasis of ``G``.
    Q : Tensor of shape (p, t)
        ``U^T R = V^T (A^T R)``.
    P : Tensor of shape (p, t)
        ``V^T W_{k-1}``: the previous head in the eigenbasis.
    rnorm2 : Tensor of shape ()
        ``||R||_F^2`` with ``R = B - A W_{k-1}`` the scaled residual of the
        previous head on this batch.
    n_rows : int
        ``b``, the number of rows of ``A``.

    Returns
    -------
    SGCVFactors
    """
    QQ = Q @ Q.T
    QP = Q @ P.T
    quad = torch.cat((H * QQ, H * (QP + QP.T), H * (P @ P.T)), dim=1)
    lin = torch.stack(((Q * Q).sum(1), (Q * P).sum(1), torch.diagonal(H)), dim=1)
    return SGCVFactors(
        evals=evals.clamp_min(0.0),
        quad=quad,
        lin=lin,
        rnorm2=rnorm2,
        n_rows=int(n_rows),
        n_targets=Q.shape[1],
    )


@torch.no_grad()
def sgcv_values(factors: SGCVFactors, ridge_prev: Tensor, candidates: Tensor) -> Tensor:
    """Evaluate the sGCV function (3.4) at every candidate cumulative ridge.

    Parameters
    ----------
    factors : SGCVFactors
        Output of :func:`sgcv_factors`.
    ridge_prev : Tensor of shape ()
        Cumulative ridge ``S_{k-1}`` of the previous step.
    candidates : Tensor of shape (c,)
        Candidate cumulative ridges ``S_k > 0``.

    Returns
    -------
    values : Tensor of shape (c,)
        ``sGCV(S)`` for every candidate; ``inf`` where the denominator vanishes
        or the residual is below the rounding error of its terms (a candidate
        that interpolates the batch).
    """
    c, p = candidates.shape[0], factors.evals.shape[0]
    D = 1.0 / (factors.evals + candidates[:, None])  # (c, p)
    lam = candidates - ridge_prev  # (c,) the increments Lambda_k
    q0, q1, q2 = ((D @ factors.quad).view(c, 3, p) * D[:, None, :]).sum(-1).unbind(1)
    l0, l1, tau = (D @ factors.lin).unbind(1)  # tau = tr(A T(S) A^T)
    # ||R||^2 - 2 sum_j D_j (q_j - lam m_j) + D^T (H o X X^T) D, as a polynomial in lam
    resid = factors.rnorm2 - 2.0 * l0 + q0 + lam * (2.0 * l1 - q1) + lam * lam * q2
    # A residual below the rounding error of its own terms is not a measurement: a
    # sum of p products carries an error up to ~p eps sum|terms| (Higham, Accuracy and
    # Stability of Numerical Algorithms, 2nd ed., sec. 3.1).  It occurs when a small
    # ridge lets the head interpolate the batch (the denominator vanishes too), and
    # its value, 0 or 1e5 depending on rounding, must not pick the ridge.
    terms = factors.rnorm2 + 2.0 * l0.abs() + q0.abs() + lam.abs() * (2.0 * l1.abs() + q1.abs()) + lam * lam * q2.abs()
    resolved = resid > p * torch.finfo(resid.dtype).eps * terms
    b, t = factors.n_rows, factors.n_targets
    n = b * t
    denom = (n - t * tau) ** 2
    return torch.where(resolved & (denom > 0), n * resid.clamp_min(0.0) / denom, torch.inf)
