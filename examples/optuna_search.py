"""Search the learning rate, the memory depth and the width with Optuna.

Needs ``pip install optuna`` (not part of any extra). Optuna's ``OptunaSearchCV`` (in the
separate ``optuna-integration`` package) works with SlimTrainRegressor too, but it can only
search the estimator's own scalar parameters: the width belongs to the feature extractor,
which is a module or a callable, so this example writes the objective itself, with
``cross_val_score``, which takes any parameter.

Tiny settings (a few epochs on 400 rows, 8 trials) so that it runs in seconds on a CPU;
for a real search raise ``max_iter``, the data and ``n_trials``.
"""

import functools

import optuna
from sklearn.model_selection import cross_val_score, train_test_split

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks

X, y = make_peaks(500, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=100, random_state=0)


def make_model(learning_rate, memory_depth, width):
    return SlimTrainRegressor(
        # a partial, not a lambda: it pickles, so n_jobs / a Dask backend also work
        functools.partial(ResNetFeatures, width=width),
        learning_rate=learning_rate,
        memory_depth=memory_depth,
        batch_size=32,
        max_iter=5,
        random_state=0,
    )


def objective(trial):
    model = make_model(
        learning_rate=trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True),
        memory_depth=trial.suggest_int("memory_depth", 0, 5),
        width=trial.suggest_categorical("width", [8, 16, 32]),
    )
    return cross_val_score(model, X_train, y_train, cv=3).mean()  # R2, to maximise


optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
study.optimize(objective, n_trials=8)

print("best parameters:", study.best_params)
print(f"cross-validated R2 {study.best_value:.4f}")
best = make_model(**study.best_params).fit(X_train, y_train)
print(f"held-out R2 {best.score(X_test, y_test):.4f}")
