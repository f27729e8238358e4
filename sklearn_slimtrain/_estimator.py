"""The scikit-learn face of slimTrain: :class:`SlimTrainRegressor`."""

import copy
import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._device import resolve_device, resolve_dtype, restore_device
from ._extractors import ResNetFeatures
from ._slimtik import tikhonov_from_gram
from ._solver import SlimTikHead

__all__ = ["SlimTrainRegressor"]

# Rows per forward pass in predict: bounds memory whatever the size of X.
_PREDICT_CHUNK = 8192


class SlimTrainRegressor(RegressorMixin, BaseEstimator):
    """Separable neural network ``y ~ W F(x; theta)`` trained by slimTrain.

    The feature extractor ``F`` (a PyTorch module) is trained by a torch
    optimizer.  The final linear layer ``W`` has no learning rate: at every
    mini-batch it is solved by sampled limited-memory Tikhonov (slimTik) from the
    current batch's features and those of the last ``memory_depth`` batches, with
    the ridge chosen by minimising the sampled GCV function (sGCV).

    Parameters
    ----------
    feature_extractor : torch.nn.Module, callable or None, default=None
        The network ``F``.  A module is deep-copied at ``fit`` (never mutated); a
        callable is called as ``feature_extractor(n_features_in)`` and must
        return a module; None builds :class:`ResNetFeatures` (the paper's tanh
        ResNet, width 16, depth 8, final time 5).  It must map a float tensor of
        shape ``(n, n_features_in)`` to ``(n, n_features_out)``.  A module without
        trainable parameters (random features) trains only the head.
    learning_rate : float, default=1e-3
        Learning rate of the extractor's optimizer.
    optimizer : {"adam", "sgd"} or torch.optim.Optimizer subclass, default="adam"
        Optimizer of the extractor's weights, called as ``cls(params, lr=...)``.
    alpha : float, default=0.0
        L2 penalty ``alpha/2 ||theta||^2`` on the extractor's weights.
    memory_depth : int, default=0
        ``r``: number of previous batches whose features the head keeps.
    batch_size : int, default=32
        Mini-batch size; the last batch of a pass may be smaller.
    max_iter : int, default=50
        Number of epochs of ``fit``.
    shuffle : bool, default=True
        Shuffle the rows at every epoch (and in ``partial_fit``).
    ridge : "sgcv" or float, default="sgcv"
        Ridge on the head.  "sgcv" chooses it at every step by sGCV; a float
        ``lam > 0`` fixes it (plain slimTik).
    ridge_init : float, default=1e-3
        Per-step ridge before the first sGCV step.
    ridge_max_change : float, default=0.5
        Largest relative change ``|Lambda_k| / S_{k-1}`` of the cumulative sGCV
        ridge in one step: 0.5 lets it move by a factor 1.5 up or 2 down, as
        the published MATLAB code; ``np.inf`` jumps to the sGCV minimiser.
    refit_head : bool, default=True
        After the last epoch of ``fit``, solve the head once on all training
        rows with the final extractor: the variable-projection head of the
        paper's (2.6), ``min_W (1/N) sum_i 1/2 ||W z_i - y_i||^2 + lam/2 ||W||^2``,
        with ``lam`` chosen by exact GCV on those rows (or ``lam = ridge`` for a
        float ridge).  One forward pass over the data in chunks; the memory used
        is ``p x p``.  ``partial_fit`` never refits (it is one streaming pass).
    fit_intercept : bool, default=True
        Append a ones column to the features; its weight (the intercept) is
        regularised with ``W``, as in the paper.
    device : str or torch.device, default="cpu"
        "cpu", "cuda", "cuda:N", "mps" or "auto" (CUDA, then MPS, then CPU),
        resolved at ``fit`` on the machine that fits.
    dtype : {"float32", "float64"}, default="float32"
        dtype of the feature extractor.
    head_dtype : {"float32", "float64"}, default="float64"
        dtype in which the head is solved.
    random_state : int, RandomState instance or None, default=None
        Seeds the extractor's initialisation and the shuffling.
    verbose : int, default=0
        1 prints one line per epoch.
    warm_start : bool, default=False
        Let ``fit`` continue from the previous fit instead of starting afresh.

    Attributes
    ----------
    feature_extractor_ : torch.nn.Module
        The trained feature extractor, on ``device_``.
    coef_ : ndarray of shape (n_features_out,) or (n_targets, n_features_out)
        Head weights (for 1-D ``y``, a 1-D array).
    intercept_ : float or ndarray of shape (n_targets,)
        Head intercept (0 when ``fit_intercept=False``).
    ridge_ : float
        Current per-step ridge, ``ridge_path_[-1]``.
    refit_ridge_ : float
        The ridge ``lam`` of the final head solve (only when ``fit`` refitted
        the head).
    ridge_path_ : ndarray of shape (n_steps,)
        Per-step ridge of every iteration, ``S_k * batch_size / n_seen_k`` with
        ``S_k`` the cumulative ridge (equal to ``S_k / k`` with full batches).
    loss_curve_ : list of float
        Mean training loss ``(1/n) sum_i 1/2 ||W z_i - y_i||^2`` per epoch (per
        ``partial_fit`` call), each batch with the head just solved on it (so
        optimistic for batches that barely determine the head).
    n_iter_ : int
        Epochs run (``partial_fit`` calls count one each).
    t_ : int
        Training samples seen.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Input feature names, when ``X`` had string column names.
    n_outputs_ : int
        Number of targets.
    device_ : str
        The device the model lives on.

    Notes
    -----
    At step ``k`` with batch ``T_k`` of ``b`` rows and features ``z_i`` (ones column
    appended), the head solves the slimTik problem (3.7) on rows scaled by
    ``1/sqrt(batch_size)`` with cumulative ridge ``S_k = Lambda_1 + ... +
    Lambda_k``.  With a float ``ridge=lam``, ``Lambda_k = lam b / batch_size``;
    with a frozen extractor and memory covering all batches, one epoch without
    shuffling then gives exactly the Tikhonov solution of
    ``min_W (1/N) sum_i 1/2 ||W z_i - y_i||^2 + lam/2 ||W||_F^2``.
    The extractor is then updated from the gradient of
    ``(1/b) sum_{i in T_k} 1/2 ||W_k z_i(theta) - y_i||^2 + alpha/2 ||theta||^2``
    with the fresh ``W_k`` held constant (Algorithm 3.1, line 12).

    With ``ridge="sgcv"`` the sGCV function (3.4) of the step is minimised over
    a global log grid of cumulative ridges, and ``S_k`` moves towards that
    minimiser by at most ``ridge_max_change * S_{k-1}``; see the user guide.

    A step makes no host-device synchronisation of its own: the ridge is chosen
    on the device, and the loss and the ridge path are copied to the host once
    per epoch.  On CUDA, ``torch.linalg.eigh`` checks its LAPACK status on the
    host, which is one synchronisation per step.

    References
    ----------
    .. [1] E. Newman, J. Chung, M. Chung, L. Ruthotto, "slimTrain -- A Stochastic
       Approximation Method for Training Separable Deep Neural Networks",
       SIAM J. Sci. Comput. 44(4), A2322-A2348, 2022.
    .. [2] J. Chung, M. Chung, J. T. Slagel, L. Tenorio, "Sampled limited memory
       methods for massive linear inverse problems", Inverse Problems 36, 2020.

    Examples
    --------
    >>> from sklearn_slimtrain import SlimTrainRegressor
    >>> from sklearn_slimtrain.datasets import make_peaks
    >>> X, y = make_peaks(600, random_state=0)
    >>> model = SlimTrainRegressor(learning_rate=1e-2, max_iter=10, random_state=0)
    >>> model.fit(X[:500], y[:500]).predict(X[500:503]).shape
    (3,)
    >>> bool(model.score(X[500:], y[500:]) > 0.9)
    True
    >>> model.ridge_path_.shape  # one ridge per iteration: 10 epochs x 16 batches
    (160,)
    """

    _parameter_constraints: dict = {
        "feature_extractor": [None, callable],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adam", "sgd"}), type],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "memory_depth": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "ridge": [StrOptions({"sgcv"}), Interval(Real, 0, None, closed="neither")],
        "ridge_init": [Interval(Real, 0, None, closed="neither")],
        "ridge_max_change": [Interval(Real, 0, None, closed="right")],
        "refit_head": ["boolean"],
        "fit_intercept": ["boolean"],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"}), torch.dtype],
        "head_dtype": [StrOptions({"float32", "float64"}), torch.dtype],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }
    # sGCV candidate rule: "global" (default) or "matlab" (published rule, for
    # the benchmarks' comparison); not a parameter on purpose.
    _ridge_rule = "global"

    def __init__(
        self,
        feature_extractor=None,
        *,
        learning_rate=1e-3,
        optimizer="adam",
        alpha=0.0,
        memory_depth=0,
        batch_size=32,
        max_iter=50,
        shuffle=True,
        ridge="sgcv",
        ridge_init=1e-3,
        ridge_max_change=0.5,
        refit_head=True,
        fit_intercept=True,
        device="cpu",
        dtype="float32",
        head_dtype="float64",
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.feature_extractor = feature_extractor
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.alpha = alpha
        self.memory_depth = memory_depth
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.ridge = ridge
        self.ridge_init = ridge_init
        self.ridge_max_change = ridge_max_change
        self.refit_head = refit_head
        self.fit_intercept = fit_intercept
        self.device = device
        self.dtype = dtype
        self.head_dtype = head_dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the network for ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : SlimTrainRegressor
        """
        return self._fit(X, y, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y):
        """One pass over ``X`` in mini-batches, continuing the training state.

        The first call initialises the model; later calls continue the
        extractor, its optimizer state, the head, its ridge and its memory.
        No rows are held out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : SlimTrainRegressor
        """
        return self._fit(X, y, incremental=True)

    def _fit(self, X, y, incremental):
        fitted = hasattr(self, "feature_extractor_")
        reset = not (fitted and (incremental or self.warm_start))
        X, y = validate_data(
            self, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32)
        )
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        if reset:
            self._initialize(X, y2, y.ndim)
        elif y2.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y2.shape[1]} targets, but {type(self).__name__} is expecting "
                f"{self.n_outputs_} targets as input."
            )
        for group in self._optimizer.param_groups if self._optimizer is not None else ():
            group["lr"] = self.learning_rate  # set_params(learning_rate=...) keeps the moments
        device = torch.device(self.device_)
        Xt = torch.tensor(X, dtype=self._dtype, device=device)
        Yt = torch.tensor(y2, dtype=self._head.dtype, device=device)
        for _ in range(1 if incremental else self.max_iter):
            start = time.perf_counter()
            snapshot = self._snapshot()
            try:
                loss = self._epoch(Xt, Yt)
            except torch.linalg.LinAlgError:  # the head's eigh on non-finite features
                loss = math.nan
            if not math.isfinite(loss):
                self._restore(snapshot)
                warnings.warn(
                    f"Training diverged in epoch {self.n_iter_ + 1}: the training loss is not finite. "
                    "The model was restored to its state before that epoch and training stopped. "
                    f"Lower learning_rate (now {self.learning_rate}) or scale the inputs.",
                    ConvergenceWarning,
                )
                break
            self._head.ridge_path()  # move the epoch's ridges to the host (synced already)
            self.loss_curve_.append(loss)
            self.n_iter_ += 1
            self.t_ += X.shape[0]
            if self.verbose:
                print(
                    f"epoch {self.n_iter_:5d} | train loss {loss:.6g} | ridge {self.ridge_:.3g} | "
                    f"{time.perf_counter() - start:.2f} s"
                )
        if self.refit_head and not incremental:
            self._refit_head(Xt, Yt)
        return self

    def _refit_head(self, Xt, Yt):
        """Variable-projection head on all of ``(Xt, Yt)`` with the final extractor."""
        p, dtype = self._head.coef.shape[0], self._head.dtype
        gram = torch.zeros((p, p), dtype=dtype, device=Xt.device)
        cross = torch.zeros((p, Yt.shape[1]), dtype=dtype, device=Xt.device)
        with torch.no_grad():
            for rows, Z in self._chunked_features(Xt):
                gram += Z.T @ Z
                cross += Z.T @ Yt[rows]
        n = Xt.shape[0]
        ridge = None if self.ridge == "sgcv" else float(self.ridge)
        result = tikhonov_from_gram(gram / n, cross / n, (Yt * Yt).sum() / n, n, ridge=ridge)
        if bool(torch.isfinite(result.coef).all()):
            self._head.coef = result.coef
            self.refit_ridge_ = float(result.ridge)

    def _initialize(self, X, y2, y_ndim):
        """Create every piece of fitted state (the only place that does)."""
        device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        self._rng = check_random_state(self.random_state)
        seed = int(self._rng.randint(np.iinfo(np.int32).max))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_extractor(X.shape[1]).to(device=device, dtype=self._dtype)
            probe = X[: min(len(X), 2)]
            with torch.no_grad():
                out = module(torch.tensor(probe, dtype=self._dtype, device=device))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(probe):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"feature_extractor must map a tensor of shape (n, {X.shape[1]}) to a 2-D tensor of shape "
                f"(n, n_features_out); for n={len(probe)} it returned {shape}."
            )
        self.feature_extractor_ = module
        self.n_outputs_ = y2.shape[1]
        self._y_ndim = y_ndim
        self.device_ = str(device)
        n_head = out.shape[1] + int(self.fit_intercept)
        self._head = SlimTikHead(
            n_head,
            self.n_outputs_,
            memory_depth=self.memory_depth,
            batch_size=self.batch_size,
            ridge=None if self.ridge == "sgcv" else float(self.ridge),
            ridge_init=self.ridge_init,
            max_change=self.ridge_max_change,
            dtype=resolve_dtype(self.head_dtype),
            device=device,
            rule=self._ridge_rule,
        )
        self._optimizer = self._make_optimizer()
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0

    def _snapshot(self):
        """Copy of the training state, to restore after a diverged epoch (one per epoch)."""
        optimizer = None if self._optimizer is None else self._optimizer.state_dict()
        return copy.deepcopy((self.feature_extractor_.state_dict(), optimizer, self._head, self._rng))

    def _restore(self, snapshot):
        module_state, optimizer_state, self._head, self._rng = snapshot
        self.feature_extractor_.load_state_dict(module_state)
        if optimizer_state is not None:
            self._optimizer.load_state_dict(optimizer_state)

    def _build_extractor(self, n_features_in):
        spec = self.feature_extractor
        if spec is None:
            return ResNetFeatures(n_features_in)
        module = copy.deepcopy(spec) if isinstance(spec, nn.Module) else spec(n_features_in)
        if not isinstance(module, nn.Module):
            raise TypeError(
                "feature_extractor must be a torch.nn.Module, a callable returning one, or None; "
                f"the callable returned {type(module).__name__}."
            )
        return module

    def _make_optimizer(self):
        params = [p for p in self.feature_extractor_.parameters() if p.requires_grad]
        if not params:
            return None
        if self.optimizer in ("adam", "sgd"):
            cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.SGD
            # foreach: one fused update for all parameter tensors (the default on CUDA only)
            return cls(params, lr=self.learning_rate, foreach=True)
        cls = self.optimizer
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError(
                "optimizer must be 'adam', 'sgd' or a torch.optim.Optimizer subclass; "
                f"got {self.optimizer!r}."
            )
        return cls(params, lr=self.learning_rate)

    def _epoch(self, Xt, Yt):
        """One pass over ``(Xt, Yt)``; returns the mean training loss (one sync)."""
        n = Xt.shape[0]
        order = None
        if self.shuffle:
            order = torch.as_tensor(self._rng.permutation(n), device=Xt.device)
        self.feature_extractor_.train()
        total = torch.zeros((), dtype=Yt.dtype, device=Xt.device)
        for start in range(0, n, self.batch_size):
            if order is None:
                rows = slice(start, start + self.batch_size)
            else:
                rows = order[start : start + self.batch_size]
            total += self._step(Xt[rows], Yt[rows])
        return float(total) / n

    def _step(self, xb, yb):
        """Algorithm 3.1, lines 8-14: features, head solve, extractor update."""
        train = self._optimizer is not None
        with torch.set_grad_enabled(train):
            Z = self._features(xb)
        coef = self._head.step(Z.detach().to(self._head.dtype), yb)
        with torch.set_grad_enabled(train):
            resid = Z @ coef.to(Z.dtype) - yb.to(Z.dtype)
            loss = 0.5 * (resid * resid).sum() / xb.shape[0]
            if train:
                objective = loss
                if self.alpha > 0:
                    penalty = sum((p * p).sum() for group in self._optimizer.param_groups for p in group["params"])
                    objective = loss + 0.5 * self.alpha * penalty
                self._optimizer.zero_grad(set_to_none=True)
                objective.backward()
                self._optimizer.step()
        return loss.detach().to(yb.dtype) * xb.shape[0]

    def _features(self, x):
        """``F(x)`` with the ones column appended when the intercept is fitted."""
        Z = self.feature_extractor_(x)
        if self.fit_intercept:
            Z = torch.cat((Z, torch.ones((Z.shape[0], 1), dtype=Z.dtype, device=Z.device)), dim=1)
        return Z

    # -------------------------------------------------------------- predict
    def predict(self, X):
        """Predict with the trained network, in chunks of rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            float64 predictions, shaped like the ``y`` seen in ``fit``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        out = np.empty((X.shape[0], self.n_outputs_), dtype=np.float64)
        with torch.no_grad():
            for rows, Z in self._chunked_features(X):
                out[rows] = (Z @ self._head.coef).cpu().numpy()
        return out[:, 0] if self._y_ndim == 1 else out

    def _chunked_features(self, X):
        """``(rows, F(x))`` for chunks of rows of ``X`` (array or tensor), in eval mode.

        Features in the head's dtype, ones column included; bounded memory whatever
        the size of ``X``.  Callers hold ``torch.no_grad()``.
        """
        self.feature_extractor_.eval()
        for start in range(0, X.shape[0], _PREDICT_CHUNK):
            rows = slice(start, start + _PREDICT_CHUNK)
            x = X[rows] if isinstance(X, torch.Tensor) else torch.tensor(
                X[rows], dtype=self._dtype, device=torch.device(self.device_))
            yield rows, self._features(x).to(self._head.dtype)

    # ------------------------------------------------------ head attributes
    def _head_weights(self):
        check_is_fitted(self)
        W = self._head.coef.detach().cpu().numpy().astype(np.float64).T  # (t, p)
        if self.fit_intercept:
            coef, intercept = W[:, :-1], W[:, -1]
        else:
            coef, intercept = W, np.zeros(W.shape[0])
        if self._y_ndim == 1:
            return coef[0], float(intercept[0])
        return coef, intercept

    @property
    def coef_(self):
        """Head weights, ``(n_targets, n_features_out)`` or ``(n_features_out,)``."""
        return self._head_weights()[0]

    @property
    def intercept_(self):
        """Head intercept, ``(n_targets,)`` or a float."""
        return self._head_weights()[1]

    @property
    def ridge_path_(self):
        """Per-step ridge of every iteration (``S_k * batch_size / n_seen_k``)."""
        check_is_fitted(self)
        return self._head.ridge_path().copy()

    @property
    def ridge_(self):
        """Current per-step ridge (last entry of ``ridge_path_``)."""
        check_is_fitted(self)
        return float(self._head.per_step)

    # --------------------------------------------------------- persistence
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "feature_extractor_" not in state:
            return state
        if self.device_ != "cpu":  # store device-independently
            state["feature_extractor_"] = copy.deepcopy(self.feature_extractor_).to("cpu")
            state["_head"] = copy.deepcopy(self._head).to(torch.device("cpu"))
        optimizer = state.pop("_optimizer")
        state["_optimizer_state"] = None if optimizer is None else _to_cpu(optimizer.state_dict())
        return state

    def __setstate__(self, state):
        optimizer_state = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if "feature_extractor_" not in state:
            return
        device = restore_device(self.device_)
        self.device_ = str(device)
        self.feature_extractor_.to(device)
        self._head.to(device)
        self._optimizer = self._make_optimizer()
        if optimizer_state is not None and self._optimizer is not None:
            self._optimizer.load_state_dict(optimizer_state)

    def __sklearn_is_fitted__(self):
        # n_features_in_ is set by validation before a fit can still fail
        return hasattr(self, "feature_extractor_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = False
        return tags


def _to_cpu(obj):
    """Copy of a nested optimizer state dict with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
