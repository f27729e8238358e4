"""
Your own PyTorch module as the feature extractor
================================================

Any :class:`torch.nn.Module` that maps ``(n, n_features_in)`` to ``(n, n_features_out)``
can be the feature extractor ``F`` of :class:`~sklearn_slimtrain.SlimTrainRegressor`; the
estimator solves the final linear layer itself.  Pass a module instance (it is deep-copied
at ``fit``, so your object is never modified) or, as here, a callable
``n_features_in -> module``, which is initialised under the estimator's ``random_state``.
The problem is multi-output: 4 oscillator parameters to 32 observation times.
"""

# %%
# The network and the fit
# -----------------------
import matplotlib.pyplot as plt
import torch
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_oscillator
from sklearn_slimtrain.plotting import plot_loss_curve


def mlp(n_features_in):
    return torch.nn.Sequential(
        torch.nn.Linear(n_features_in, 64), torch.nn.SiLU(), torch.nn.Linear(64, 32), torch.nn.Tanh()
    )


X, Y = make_oscillator(1000, random_state=0)  # 4 parameters -> 32 observation times
X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
model = make_pipeline(
    StandardScaler(), SlimTrainRegressor(mlp, learning_rate=1e-2, max_iter=30, random_state=0)
)
model.fit(X_train, Y_train)
reg = model[-1]
print(f"held-out R2 {model.score(X_test, Y_test):.4f}; head {reg.coef_.shape}, final ridge {reg.refit_ridge_:.2e}")

# %%
# The trained module is ``feature_extractor_``: a copy, on the estimator's device, that
# can be used on its own (here, the 32 features of two scaled inputs).
with torch.no_grad():
    features = reg.feature_extractor_(torch.tensor(model[0].transform(X_test[:2]), dtype=torch.float32))
print(type(reg.feature_extractor_).__name__, tuple(features.shape))

plot_loss_curve(model)
plt.show()
