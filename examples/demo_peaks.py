"""
Comparing with MLPRegressor
===========================

Fit the default :class:`~sklearn_slimtrain.SlimTrainRegressor` on MATLAB's peaks function,
beside scikit-learn's :class:`~sklearn.neural_network.MLPRegressor` with its defaults, and
print the held-out R2 and the fit time of both on the same split.  This is ``make demo``;
slimTrain's 50 default epochs take about 7-10 s on a 2-core CPU.

``MLPRegressor()`` learns every layer with Adam and stops at its ``max_iter=200`` with a
``ConvergenceWarning``; slimTrain solves the last layer at every step, with its ridge chosen
by sGCV, and needs fewer epochs (the benchmarks page compares them further).
"""

import time

from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks

X, y = make_peaks(2000, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=500, random_state=0)

print(f"peaks: {len(X_train)} training and {len(X_test)} held-out points\n")
print(f"{'model':<28}{'held-out R2':>12}{'fit time (s)':>14}")
for name, model in [
    ("SlimTrainRegressor()", SlimTrainRegressor(random_state=0)),
    ("MLPRegressor()", MLPRegressor(random_state=0)),
]:
    start = time.perf_counter()
    model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    print(f"{name:<28}{model.score(X_test, y_test):>12.4f}{seconds:>14.2f}")
