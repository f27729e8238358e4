"""Look at a fit: loss curve, the sGCV ridge per iteration, predictions against truth.

Writes ``docs/figures/peaks_fit.png`` (needs matplotlib: the ``plot`` extra).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from sklearn_slimtrain import SlimTrainRegressor  # noqa: E402
from sklearn_slimtrain.datasets import make_peaks  # noqa: E402
from sklearn_slimtrain.plotting import plot_loss_curve, plot_predictions, plot_ridge_path  # noqa: E402

X, y = make_peaks(2000, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=500, random_state=0)
model = SlimTrainRegressor(batch_size=5, max_iter=20, random_state=0).fit(X_train, y_train)

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
plot_loss_curve(model, ax=axes[0])
plot_ridge_path(model, ax=axes[1])
plot_predictions(model, X_test, y_test, ax=axes[2])
axes[0].set_title("training loss")
axes[1].set_title("sGCV ridge per step (batch 5, memory 0)")
fig.tight_layout()
out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "peaks_fit.png"
fig.savefig(out, dpi=90)
print(f"held-out R2 {model.score(X_test, y_test):.4f}; wrote {out}")
