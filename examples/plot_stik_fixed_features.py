"""
sTik against Adam on fixed features (the paper's Figure 1)
==========================================================

With the feature extractor frozen, fitting the head is the linear Tikhonov problem

.. math:: \\min_w \\frac{1}{N} \\sum_{i=1}^N \\frac12 (w^\\top z_i - y_i)^2 + \\frac{\\lambda}{2} \\|w\\|^2,

(:math:`z_i` the features of row :math:`i` with a trailing 1 for the intercept), whose
solution :math:`\\hat w` has a closed form.  ``memory_depth=None`` keeps every batch
seen (the paper's sampled Tikhonov method, sTik): by design its iterate after one epoch
*is* :math:`\\hat w`, while Adam, given the same batches, is still far from it.  This
is the paper's Figure 1 (Newman et al., 2022, section 3.1), with our peaks data and
random tanh features.
"""

# %%
# Data, features and the Tikhonov solution
# ----------------------------------------
# Peaks on a uniform 40 x 40 grid (1,600 points, shuffled once) and a fixed layer of 50
# random tanh features plus the intercept.  Batches of 20 rows make 80 iterations per
# epoch, as in the paper's figure.
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import peaks


class RandomTanhFeatures(torch.nn.Module):
    """``[tanh(x K + c), 1]`` with fixed random ``K`` and ``c`` (buffers: nothing to train).

    The trailing column of ones makes the intercept one more weight of ``w``, regularised
    with the others as in the paper; the model below is therefore built with
    ``fit_intercept=False`` (its own intercept would centre the targets first).
    """

    def __init__(self, n_in=2, n_out=50, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("K", torch.randn(n_in, n_out, generator=g, dtype=torch.float64))
        self.register_buffer("c", torch.randn(n_out, generator=g, dtype=torch.float64))

    def forward(self, x):
        z = torch.tanh(x @ self.K.to(x.dtype) + self.c.to(x.dtype))
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)


side = np.linspace(-3, 3, 40)
grid = np.array([(a, b) for b in side for a in side])
rng = np.random.default_rng(0)
X = grid[rng.permutation(len(grid))]
y = peaks(X[:, 0], X[:, 1])
features = RandomTanhFeatures()
lam, batch = 1e-3, 20
n_steps = len(X) // batch

with torch.no_grad():
    Z1 = features(torch.from_numpy(X)).numpy()  # the last column is ones: the intercept, also regularised
w_hat = np.linalg.solve(Z1.T @ Z1 / len(X) + lam * np.eye(Z1.shape[1]), Z1.T @ y / len(X))


def rel_error(w):
    return np.linalg.norm(w - w_hat) / np.linalg.norm(w_hat)


def objective(w):
    return 0.5 * np.mean((Z1 @ w - y) ** 2) + 0.5 * lam * w @ w


print(f"objective: {objective(0 * w_hat):.3f} at zero, {objective(w_hat):.3f} at the solution; condition "
      f"number of its matrix {np.linalg.cond(Z1.T @ Z1 / len(X) + lam * np.eye(Z1.shape[1])):.1e}")


# %%
# sTik: one ``partial_fit`` per batch
# -----------------------------------
# Each call with ``batch_size`` rows is one slimTik step; ``memory_depth=None`` keeps the
# Gram matrices of all earlier batches (as one running sum) and ``ridge=lam`` fixes the
# ridge of each step to its share of ``lam``.
stik = SlimTrainRegressor(features, ridge=lam, memory_depth=None, batch_size=batch, dtype="float64",
                          fit_intercept=False)
stik_error = []
for k in range(n_steps):
    rows = slice(k * batch, (k + 1) * batch)
    stik.partial_fit(X[rows], y[rows])
    stik_error.append(rel_error(stik.coef_))
print(f"sTik one step before the end of the epoch: relative error {stik_error[-2]:.1e}")
print(f"sTik after one epoch: relative error {stik_error[-1]:.1e}")

# %%
# Adam on the same batches
# ------------------------
# The same objective on each batch (its mean loss plus the ridge term), from zero weights
# as sTik starts, at three learning rates.
Zt, yt = torch.from_numpy(Z1), torch.from_numpy(y)
adam_error, adam_weights = {}, {}
for lr in (1e-3, 1e-2, 1e-1):
    w = torch.zeros(Z1.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=lr)
    errors = []
    for k in range(n_steps):
        rows = slice(k * batch, (k + 1) * batch)
        loss = 0.5 * ((Zt[rows] @ w - yt[rows]) ** 2).mean() + 0.5 * lam * (w * w).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(rel_error(w.detach().numpy()))
    adam_error[lr], adam_weights[lr] = errors, w.detach().numpy()
    print(f"Adam, lr {lr:g}, after one epoch: objective {objective(adam_weights[lr]):.3f}, "
          f"relative error {errors[-1]:.2f}")

# %%
# Adam lowers the objective, but its weights stay far from :math:`\\hat w`: the problem is
# ill-conditioned (printed above), which slows first-order methods; sTik solves each step's
# problem exactly instead.
#
# Convergence within one epoch
# ----------------------------
# After ``k`` steps, sTik's iterate is the Tikhonov solution (the same ``lam`` on the mean
# loss) of the rows seen so far; at the last step it has seen every row and its error drops
# to rounding level.
fig, ax = plt.subplots(figsize=(7, 4.2))
steps = np.arange(1, n_steps + 1)
ax.semilogy(steps, stik_error, label="sTik (memory_depth=None)", color="k")
for (lr, errors), style in zip(adam_error.items(), ("-", "--", ":")):
    ax.semilogy(steps, errors, style, label=f"Adam, lr {lr:g}")
ax.set_xlabel("iteration (one epoch)")
ax.set_ylabel(r"$\|w_k - \hat w\| / \|\hat w\|$")
ax.set_title("relative error of the weights")
ax.legend(loc="lower left")
fig.tight_layout()

# %%
# The function approximations after one epoch
# -------------------------------------------
# The absolute difference of each method's approximation from the best one,
# :math:`|Z \\hat w - Z w|`, on the grid (mind the colour scales: below ``1e-12`` for sTik,
# order 1 for Adam at its best learning rate here).
best = Z1 @ w_hat
best_lr = min(adam_error, key=lambda lr: adam_error[lr][-1])
gaps = {"sTik": np.abs(stik.predict(X) - best), f"Adam, lr {best_lr:g}": np.abs(Z1 @ adam_weights[best_lr] - best)}
order = np.lexsort((X[:, 0], X[:, 1]))  # back to the grid's order
fig_gaps, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, (name, gap) in zip(axes, gaps.items()):
    print(f"{name}: largest |Z w_hat - Z w| {gap.max():.1e}")
    image = ax.imshow(gap[order].reshape(len(side), len(side)), extent=(-3, 3, -3, 3), origin="lower",
                      cmap="viridis")
    fig_gaps.colorbar(image, ax=ax, label="|difference|", format="%.1e")
    ax.set_title(name)
fig_gaps.tight_layout()

if len(sys.argv) > 1:  # python examples/plot_stik_fixed_features.py OUT.png: both figures
    out = sys.argv[1]
    fig.savefig(out, dpi=90)
    fig_gaps.savefig(out.replace(".png", "_gaps.png"), dpi=90)
    print(f"wrote {out} and its _gaps figure")
plt.show()
