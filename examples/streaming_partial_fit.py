"""
Streaming data with partial_fit
===============================

Train on data that never sits in memory at once: every call of
:meth:`~sklearn_slimtrain.SlimTrainRegressor.partial_fit` makes one pass over the chunk it
is given and continues the network, Adam's moments, the slimTik head, its ridge and its
memory.  Here each chunk is generated on the fly; in practice it would be read from disk
(Parquet, Zarr, HDF5) or arrive from a running simulation.
"""

# %%
# Training chunk by chunk
# -----------------------
import matplotlib.pyplot as plt
import numpy as np

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks

X_test, y_test = make_peaks(1000, random_state=123)
model = SlimTrainRegressor(learning_rate=1e-2, random_state=0)
rows, scores = [], []
for chunk in range(24):
    X, y = make_peaks(500, random_state=chunk)  # e.g. read from Parquet/Zarr here
    model.partial_fit(X, y)
    rows.append(model.t_)
    scores.append(model.score(X_test, y_test))
    if chunk % 8 == 7:
        print(f"after {model.t_:6d} rows: held-out R2 {scores[-1]:.4f}, ridge {model.ridge_:.2e}")
print("ridge per step (last 5):", np.array2string(model.ridge_path_[-5:], precision=2))

# %%
# Held-out R2 as the rows stream in
# ---------------------------------
# ``partial_fit`` never refits the head on all rows (it is one streaming pass), so the
# predictions use the head of the last step.
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(rows, scores, marker="o")
ax.set_xlabel("training rows seen")
ax.set_ylabel("held-out R2")
fig.tight_layout()
plt.show()
