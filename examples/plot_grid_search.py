"""
Choosing the learning rate and the memory depth with GridSearchCV
=================================================================

:class:`~sklearn_slimtrain.SlimTrainRegressor` is a scikit-learn estimator, so its
parameters can be tuned with :class:`~sklearn.model_selection.GridSearchCV` inside a
:class:`~sklearn.pipeline.Pipeline`.  The head needs no learning rate and no ridge (sGCV
chooses it), which leaves the extractor's ``learning_rate`` and the head's
``memory_depth`` as the parameters to tune.
"""

# %%
# The search
# ----------
# A small grid on peaks with 3-fold cross-validation; each fit is 10 epochs on 400 rows, in
# batches of 32.  Ten epochs is a deliberately short budget, so the ``ConvergenceWarning``
# each fit would raise about it is silenced here.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks
from sklearn_slimtrain.plotting import plot_ridge_path

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = make_peaks(800, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=200, random_state=0)

pipe = make_pipeline(StandardScaler(), SlimTrainRegressor(max_iter=10, random_state=0))
grid = {
    "slimtrainregressor__learning_rate": [1e-3, 1e-2],
    "slimtrainregressor__memory_depth": [0, 2],
}
search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
print("best parameters:", search.best_params_)
print(f"cross-validated R2 {search.best_score_:.4f}, held-out R2 {search.score(X_test, y_test):.4f}")

# %%
# ``memory_depth`` adds the features of the last batches to the head's problem of each
# step: it helps where one batch does not determine the head, and otherwise mainly makes
# the head follow the extractor more slowly (the user guide's section on memory depth).

# %%
# Scores over the grid
# --------------------
learning_rates = grid["slimtrainregressor__learning_rate"]
depths = grid["slimtrainregressor__memory_depth"]
scores = np.array(search.cv_results_["mean_test_score"]).reshape(len(learning_rates), len(depths))
fig, ax = plt.subplots(figsize=(6, 4))
image = ax.imshow(scores, cmap="viridis", vmin=max(scores.min(), 0), vmax=1)
ax.set_xticks(range(len(depths)), [str(d) for d in depths])
ax.set_yticks(range(len(learning_rates)), [f"{lr:g}" for lr in learning_rates])
ax.set_xlabel("memory_depth")
ax.set_ylabel("learning_rate")
for (i, j), score in np.ndenumerate(scores):
    ax.text(j, i, f"{score:.3f}", ha="center", va="center", color="white")
_ = fig.colorbar(image, ax=ax, label="mean cross-validated R2")

# %%
# The plotting functions accept the search itself and draw its best estimator, refitted
# on all training rows.
ax = plot_ridge_path(search, kind="line")
ax.set_title("sGCV ridge per step of the best model")
plt.show()
