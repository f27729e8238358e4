"""Use your own PyTorch module as the feature extractor, on a multi-output problem.

The module maps (n, n_features_in) to (n, n_features_out); the estimator deep-copies
it and solves the final linear layer itself. A callable ``n_features_in -> module`` is
initialised under the estimator's ``random_state``.
"""

import torch
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_oscillator


def mlp(n_features_in):
    return torch.nn.Sequential(
        torch.nn.Linear(n_features_in, 64), torch.nn.SiLU(), torch.nn.Linear(64, 32), torch.nn.Tanh()
    )


X, Y = make_oscillator(1000, random_state=0)  # 4 parameters -> 32 observation times
X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
model = make_pipeline(StandardScaler(), SlimTrainRegressor(mlp, learning_rate=1e-2, max_iter=50, random_state=0))
model.fit(X_train, Y_train)
reg = model[-1]
print(f"held-out R2 {model.score(X_test, Y_test):.4f}; head {reg.coef_.shape}, final ridge {reg.ridge_:.2e}")
