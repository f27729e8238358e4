"""
A multi-output surrogate of a PDE
=================================

A surrogate model maps the parameters of a simulation to its observed outputs.
:func:`~sklearn_slimtrain.datasets.make_cdr` solves a convection-diffusion-reaction
equation on the unit square (our stand-in for the slimTrain paper's CDR problem, see
:doc:`/cdr`): 55 reaction coefficients are the inputs, and the solution at 6 sensors and
12 times, 72 values, are the targets.

:class:`~sklearn_slimtrain.SlimTrainRegressor` fits all 72 targets with one network: every
target shares the extractor's features, and one eigendecomposition per step solves the head
for all of them, with one sGCV ridge.
"""

# %%
# Data
# ----
# 800 solves on a coarse 16 x 16 grid with 48 time steps, to keep the example fast (the
# defaults, ``grid=32, n_steps=96``, take about 10 s of CPU time).
import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_cdr

X, Y = make_cdr(800, grid=16, n_steps=48, random_state=0)
X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=200, random_state=0)
print(f"{X_train.shape[0]} training solves: {X.shape[1]} coefficients -> {Y.shape[1]} observations")

# %%
# Fit
# ---
# One ridge serves all targets, so the targets are standardised too
# (:class:`~sklearn.compose.TransformedTargetRegressor`): otherwise the sensors with the
# largest values would dominate the head's problem and the choice of its ridge.  A linear
# model, :class:`~sklearn.linear_model.RidgeCV`, is the baseline.
model = make_pipeline(
    StandardScaler(),
    TransformedTargetRegressor(
        SlimTrainRegressor(learning_rate=1e-2, max_iter=30, random_state=0), transformer=StandardScaler()
    ),
)
model.fit(X_train, Y_train)
Y_pred = model.predict(X_test)
reg = model[-1].regressor_
linear = make_pipeline(StandardScaler(), RidgeCV()).fit(X_train, Y_train)
print(f"held-out R2 (mean over outputs): slimTrain {r2_score(Y_test, Y_pred):.4f}, "
      f"RidgeCV {linear.score(X_test, Y_test):.4f}")
print(f"head: {reg.coef_.shape[0]} targets x {reg.coef_.shape[1]} features; final ridge {reg.refit_ridge_:.2e}")

# %%
# Predicted observations
# ----------------------
# The targets are time-major: ``Y[:, 6 * k + s]`` is sensor ``s`` at time ``(k + 1) / 12``.
# Left: the simulation (lines) and the surrogate (dots) at the 6 sensors of one held-out
# sample.  Right: the held-out R2 of each of the 72 outputs; sensor 4, the furthest
# downstream of the source, is the hardest to predict at late times.
times = np.arange(1, 13) / 12
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for s in range(6):
    axes[0].plot(times, Y_test[0].reshape(12, 6)[:, s], color=f"C{s}", label=f"sensor {s}")
    axes[0].plot(times, Y_pred[0].reshape(12, 6)[:, s], "o", color=f"C{s}", markersize=4)
axes[0].set_xlabel("time")
axes[0].set_ylabel("u at the sensor")
axes[0].legend(fontsize=8, ncol=2)
r2 = r2_score(Y_test, Y_pred, multioutput="raw_values").reshape(12, 6).T
image = axes[1].imshow(r2, aspect="auto", cmap="viridis", extent=(0.5 / 12, 12.5 / 12, 5.5, -0.5))
axes[1].set_xlabel("time")
axes[1].set_ylabel("sensor")
fig.colorbar(image, ax=axes[1], label="held-out R2")
fig.tight_layout()
plt.show()
