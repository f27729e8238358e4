"""
Looking at a fit on peaks
=========================

Fit :class:`~sklearn_slimtrain.SlimTrainRegressor` on MATLAB's ``peaks`` function (the
slimTrain paper's first test problem) and draw what the fit did with
:mod:`sklearn_slimtrain.plotting`: the training loss per epoch, the ridge that sGCV chose at
every iteration, and predictions against the truth on held-out points.

Needs matplotlib (the ``plot`` extra).  Run as a script with a file name,
``python examples/plot_peaks.py docs/figures/peaks_fit.png``, it also saves the figure.
"""

# %%
# Data and fit
# ------------
# 1,000 points of peaks on ``[-3, 3]^2``; 750 train the model, 250 are held out.  With
# batches of 16 rows, the head's problem of each step is under-determined (the default
# ResNet gives 16 features, plus the intercept), which is where the ridge matters most.
import sys

import matplotlib.pyplot as plt
from sklearn.model_selection import train_test_split

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks
from sklearn_slimtrain.plotting import plot_loss_curve, plot_predictions, plot_ridge_path

X, y = make_peaks(1000, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=250, random_state=0)
model = SlimTrainRegressor(batch_size=16, max_iter=15, learning_rate=1e-2, random_state=0)
model.fit(X_train, y_train)
print(f"held-out R2 {model.score(X_test, y_test):.4f}; final head ridge {model.refit_ridge_:.2e}")

# %%
# Loss, ridge and predictions
# ---------------------------
# The heatmap has one column per epoch and one row per iteration in the epoch; its colour
# is ``log10`` of the ridge of that step (``ridge_path_``).  The last panel uses the final
# head, solved once on all training rows with the ridge chosen by exact GCV.
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
plot_loss_curve(model, ax=axes[0])
plot_ridge_path(model, ax=axes[1])
plot_predictions(model, X_test, y_test, ax=axes[2])
axes[0].set_title("training loss")
axes[1].set_title("sGCV ridge per step (batch 16, memory 0)")
fig.tight_layout()

if len(sys.argv) > 1:  # python examples/plot_peaks.py OUT.png
    fig.savefig(sys.argv[1], dpi=90)
    print(f"wrote {sys.argv[1]}")
plt.show()
