"""Stream data through ``partial_fit`` in chunks that never sit in memory together.

Each call makes one pass over its chunk and continues the network, Adam's moments,
the slimTik head, its ridge and its memory.
"""

import numpy as np

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks

X_test, y_test = make_peaks(1000, random_state=123)
model = SlimTrainRegressor(learning_rate=1e-2, random_state=0)
for chunk in range(40):
    X, y = make_peaks(500, random_state=chunk)  # e.g. read from Parquet/Zarr here
    model.partial_fit(X, y)
    if chunk % 10 == 9:
        print(f"after {model.t_:6d} rows: held-out R2 {model.score(X_test, y_test):.4f}, ridge {model.ridge_:.2e}")
print("ridge per step (last 5):", np.array2string(model.ridge_path_[-5:], precision=2))
