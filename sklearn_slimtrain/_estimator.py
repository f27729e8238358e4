"""The scikit-learn face of slimTrain: :class:`SlimTrainRegressor`."""

import time
import warnings
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import model_numerics, resolve_device, resolve_dtype, same_device
from ._network import _SeparableNetworkMixin
from ._persistence import _PersistenceMixin, move_model
from ._progress import (
    EpochTable,
    start_monitoring,
    update_no_improvement,
    warn_diverged,
    warn_interrupted,
)
from ._solver import SlimTikHead
from ._validation import (
    PARAMETER_CONSTRAINTS,
    check_extractor_output,
    check_fit_input,
    check_magnitude,
    check_predictions,
    frozen_params,
    holdout,
)

__all__ = ["SlimTrainRegressor"]


class SlimTrainRegressor(_PersistenceMixin, _SeparableNetworkMixin, RegressorMixin, BaseEstimator):
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
        trainable parameters (random features) trains only the head.  A module
        starts from the weights it has; a callable (and None) builds the
        network under ``random_state``, so only then does ``random_state`` set
        the initial weights (except a module's lazy layers, drawn at ``fit``).
    head : torch.nn.Module or None, default=None
        The final layer, solved by slimTik.  None is the dense head ``W z + c``
        on 2-D features (one decomposition shared by all targets).  A layer
        that is linear in its weights takes any feature shape it accepts:
        ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` (solved
        through their patch matrix, with the output channels as targets) or
        any module whose output is linear in all its parameters (solved
        through its Jacobian, for small layers).  ``X`` and ``y`` stay 2-D:
        the extractor reshapes the rows of ``X`` itself, and row ``i`` of ``y``
        is the head's output for sample ``i`` flattened in C order (channels,
        then positions).  The layer's bias is the intercept
        (``fit_intercept`` applies to the dense head only); its initial
        weights are not used.  The solved layer is ``head_``.
    learning_rate : float, default=1e-3
        Learning rate of the extractor's optimizer.
    optimizer : {"adam", "sgd"}, torch.optim.Optimizer subclass or functools.partial, default="adam"
        Optimizer of the extractor's weights, called as ``cls(params, lr=...)``;
        a partial sets its other keywords, e.g.
        ``functools.partial(torch.optim.SGD, momentum=0.9)``.
    alpha : float, default=0.0
        L2 penalty ``alpha/2 ||theta||^2`` on the extractor's weights.
    memory_depth : int or None, default=0
        ``r``: number of previous batches whose features the head keeps.
        None keeps every batch seen (the paper's sTik, the limit
        ``r = infinity``): with a fixed ridge and a frozen extractor one
        epoch then gives exactly the Tikhonov solution on all rows, and
        ``partial_fit`` over a stream gives it on all rows seen.  The head
        stores only the ``p x p`` sum of the batches' Gram matrices (and its
        rounding compensation), so memory and work per step do not grow
        with the number of batches.
    batch_size : int, default=32
        Mini-batch size.  A pass over ``n`` rows makes ``max(n // batch_size, 1)``
        steps: the remainder joins the last batch (a short batch would leave the
        head fitted to a few rows), so batches have ``batch_size`` to
        ``2 batch_size - 1`` rows (one batch of all ``n`` rows when
        ``n < batch_size``).
    max_iter : int, default=50
        Number of epochs of ``fit``.
    shuffle : bool, default=True
        Shuffle the rows at every epoch (and in ``partial_fit``).
    ridge : "sgcv" or float, default="sgcv"
        Ridge on the head.  "sgcv" chooses it at every step by sGCV; a float
        ``lam > 0`` fixes it (plain slimTik), within ``[tiny, sqrt(max)]``
        of ``head_dtype``.
    ridge_init : float, default=1e-3
        Per-step ridge before the first sGCV step (in the same range).
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
        is ``q x q`` for ``q`` head weights.  ``partial_fit`` never refits (it
        is one streaming pass).
    fit_intercept : bool, default=True
        Append a ones column to the features; its weight is regularised with
        ``W``, as in the paper, and the head fits the targets centred by the
        (weighted) mean of the first fit's ``y`` (``intercept_`` includes it),
        so that an offset in ``y`` costs nothing.  Dense head only: a layer
        ``head`` has its own ``bias`` (or none); an ``nn.Linear`` head with a
        bias is centred too.
    device : str or torch.device, default="cpu"
        "cpu", "cuda", "cuda:N", "mps" or "auto" (CUDA, then MPS, then CPU),
        resolved at ``fit`` on the machine that fits.  MPS has no float64:
        "auto" takes it only when ``dtype`` and ``head_dtype`` are "float32".  A continued fit
        (``partial_fit``, ``warm_start``) after ``set_params(device=...)``
        first moves the model (extractor, optimizer state, head and memory).
    dtype : {"float32", "float64"} or torch.dtype, default="float32"
        dtype of the feature extractor (``torch.float32`` and
        ``torch.float64`` are accepted too).
    head_dtype : {"float32", "float64"} or torch.dtype, default="float64"
        dtype in which the head is solved.  Keep float64 unless memory or
        speed on an accelerator requires otherwise (see the user guide).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows of ``fit`` (or use the
        ``X_val, y_val`` given to ``fit``), score R2 on them after every epoch,
        stop when it has not improved by ``tol`` for more than
        ``n_iter_no_change`` consecutive epochs, and keep the extractor and head of the best epoch, as
        :class:`~sklearn.neural_network.MLPRegressor`.  With ``refit_head`` the
        score uses the head refitted on the training rows (one extra forward
        pass per epoch).  ``partial_fit`` never stops early.
    validation_fraction : float, default=0.1
        Fraction of the rows held out for early stopping.
    n_iter_no_change : int, default=10
        Training stops after more than this many consecutive epochs without an
        improvement of at least ``tol`` (of the validation R2 with early
        stopping, else of the training loss), as in ``MLPRegressor``.
    tol : float, default=1e-4
        Smallest improvement that counts, as in ``MLPRegressor``.
    random_state : int, RandomState instance or None, default=None
        Seeds the extractor's initialisation, the shuffling, the validation
        split and torch's RNG in each epoch (a module's dropout), without
        changing the caller's torch RNG.
    verbose : int, default=0
        1 prints a table with one line per epoch (training and validation loss,
        ridge, seconds); 2 adds a progress bar over the batches (needs tqdm,
        ``pip install sklearn-slimtrain[progress]``, and a terminal).
    warm_start : bool, default=False
        Let ``fit`` continue from the previous fit instead of starting afresh.
        A continued fit (and ``partial_fit``) takes new values of
        ``learning_rate``, ``alpha``, ``batch_size``, ``ridge_max_change``,
        ``shuffle`` and the stopping parameters; changing a parameter that
        defines the fitted model (``feature_extractor``, ``head``,
        ``optimizer``, ``memory_depth``, ``ridge``, ``fit_intercept``, ``dtype``,
        ``head_dtype``) raises a ``ValueError``.  With ``refit_head=True`` the
        continued steps start from the refitted head (the next slimTik step
        regularises towards it), so ``fit`` twice with ``max_iter=2`` differs
        from one ``fit`` with ``max_iter=4``; with ``refit_head=False`` they
        agree.  With early stopping each ``fit`` holds out its own random rows.

    Attributes
    ----------
    feature_extractor_ : torch.nn.Module
        The trained feature extractor, on ``device_``.
    head_ : torch.nn.Module
        The solved final layer (an ``nn.Linear`` for the dense head), a copy
        in the extractor's dtype: ``nn.Sequential(feature_extractor_, head_)``
        is the trained network.
    coef_ : ndarray of shape (n_features_out,) or (n_targets, n_features_out)
        Head weights (for 1-D ``y``, a 1-D array); for a layer ``head``, the
        layer's ``weight`` array.
    intercept_ : float or ndarray of shape (n_targets,)
        Head intercept (0 when ``fit_intercept=False``); for a layer ``head``,
        its ``bias`` array (0.0 without a bias).
    ridge_ : float
        Current per-step ridge, ``ridge_path_[-1]``.
    refit_ridge_ : float
        The ridge ``lam`` of the final head solve (only while the head is the
        one ``fit`` refitted: a later ``partial_fit`` removes it).
    ridge_path_ : ndarray of shape (n_steps,)
        Per-step ridge of every iteration, ``S_k * batch_size / n_seen_k`` with
        ``S_k`` the cumulative ridge (equal to ``S_k / k`` with full batches;
        ``batch_size`` as at the first step, which stays the head's unit after
        ``set_params(batch_size=...)``).  It describes the model kept: after
        early stopping it ends at the best epoch, while ``loss_curve_``,
        ``n_iter_`` and ``t_`` also count the epochs after it.
    loss_curve_ : list of float
        Mean training loss ``(1/n) sum_i 1/2 ||W z_i - y_i||^2`` per epoch (per
        ``partial_fit`` call), each batch with the head just solved on it (so
        optimistic for batches that barely determine the head).
    validation_scores_ : list of float or None
        Validation R2 per epoch of the last ``fit`` (a warm start holds out new
        rows), None without early stopping.
    validation_loss_curve_ : list of float or None
        Validation loss per epoch of the last ``fit``, on the scale of
        ``loss_curve_`` (None without early stopping).
    best_validation_score_ : float or None
        Best validation R2, whose extractor and head were kept (None without
        early stopping).
    best_loss_ : float or None
        Smallest training loss (None with early stopping).
    n_iter_ : int
        Epochs run (``partial_fit`` calls count one each).
    t_ : int
        Training samples seen.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Input feature names, when ``X`` had string column names.
    n_outputs_ : int
        Number of targets.
    device_ : str
        The device the model lives on.

    Notes
    -----
    At step ``k`` with batch ``T_k`` of ``b`` rows and features ``z_i`` (ones column
    appended), the head solves the slimTik problem (3.7) on rows scaled by
    ``1/sqrt(batch_size)`` (the first ``batch_size``: the head's unit) with cumulative ridge ``S_k = Lambda_1 + ... +
    Lambda_k``.  With a float ``ridge=lam``, ``Lambda_k = lam b / batch_size``;
    with a frozen extractor and memory covering all batches, one epoch without
    shuffling then gives exactly the Tikhonov solution of
    ``min_W (1/N) sum_i 1/2 ||W z_i - (y_i - c)||^2 + lam/2 ||W||_F^2``, with
    ``c`` the targets' mean (``fit_intercept``; 0 otherwise), which ``intercept_`` adds back.
    The extractor is then updated from the gradient of
    ``(1/b) sum_{i in T_k} 1/2 ||W_k z_i(theta) - y_i||^2 + alpha/2 ||theta||^2``
    with the fresh ``W_k`` held constant (Algorithm 3.1, line 12).

    With ``ridge="sgcv"`` the sGCV function (3.4) of the step is minimised over
    a global log grid of cumulative ridges, and ``S_k`` moves towards that
    minimiser by at most ``ridge_max_change * S_{k-1}``; see the user guide.

    With ``sample_weight`` ``s_i``, row ``i`` of the head's problem is scaled
    by ``sqrt(s_i)``, a batch counts its weight ``m_k = sum_{i in T_k} s_i``
    in place of ``b`` (``Lambda_k = lam m_k / batch_size``), and the losses are
    weighted means (``1/N`` becomes ``1/sum_i s_i``; ``c`` the weighted mean): the
    Tikhonov identity above holds with weights.  sGCV and the final GCV count
    rows, so only the ratios of the weights matter, and integer weights equal
    repeated rows only with a fixed ridge where the batches do not matter (see
    the user guide); a row of weight 0 is dropped.

    A step makes no host-device synchronisation of its own: the ridge is chosen
    on the device, and the loss and the ridge path are copied to the host once
    per epoch.  On CUDA, ``torch.linalg.eigh`` checks its LAPACK status on the
    host, which is one synchronisation per step.

    A non-finite loss, weight or head solve restores the state before the epoch
    (the best one with early stopping), stops and warns; ``KeyboardInterrupt``
    in ``fit`` does the same and returns the estimator.  Pickles are
    device-independent; :meth:`save` and :meth:`load` write and read a model
    file that cannot run code (see the user guide).

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
    >>> model.ridge_path_.shape  # one ridge per iteration: 10 epochs x 15 batches
    (150,)

    A transposed convolution as the final layer (an autoencoder of 8x8 digits):

    >>> from sklearn.datasets import load_digits
    >>> from sklearn_slimtrain import ConvAutoencoderFeatures
    >>> X = load_digits().data[:200] / 16.0
    >>> extractor = ConvAutoencoderFeatures((8, 8), width=4, latent_dim=8)
    >>> auto = SlimTrainRegressor(extractor, head=extractor.final_layer(), max_iter=2, random_state=0)
    >>> auto.fit(X, X).predict(X[:3]).shape
    (3, 64)
    >>> auto.head_
    ConvTranspose2d(4, 1, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1))
    """

    _parameter_constraints: ClassVar[dict] = PARAMETER_CONSTRAINTS
    # sGCV candidate rule: "global" (default) or "matlab" (published rule, for
    # the benchmarks' comparison); not a parameter on purpose.
    _ridge_rule = "global"

    def __init__(
        self,
        feature_extractor=None,
        *,
        head=None,
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
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.feature_extractor = feature_extractor
        self.head = head
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
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None, *,
            X_val: ArrayLike | None = None, y_val: ArrayLike | None = None,
            sample_weight_val: ArrayLike | None = None) -> "SlimTrainRegressor":
        """Fit the network for at most ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows (see the Notes); rows of weight 0
            are dropped, as if absent.
        X_val, y_val : array-like, default=None
            An explicit validation set for early stopping (then
            ``validation_fraction`` is unused), as
            :class:`~sklearn.ensemble.HistGradientBoostingRegressor` accepts.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation rows ``X_val`` in the validation loss and R2.

        Returns
        -------
        self : SlimTrainRegressor
        """
        return self._fit(X, y, False, sample_weight, X_val, y_val, sample_weight_val)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> "SlimTrainRegressor":
        """One pass over ``X`` in mini-batches, continuing the training state.

        The first call initialises the model; later calls continue the
        extractor, its optimizer state, the head, its ridge and its memory.
        No rows are held out.  A call that fails leaves the model as it was.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows, on the scale of earlier calls.

        Returns
        -------
        self : SlimTrainRegressor
        """
        return self._fit(X, y, True, sample_weight)

    def _fit(self, X, y, incremental, sample_weight=None, X_val=None, y_val=None, sample_weight_val=None):
        X, y2, y_ndim, sw, val, early, reset = check_fit_input(
            self, X, y, incremental, sample_weight, X_val, y_val, sample_weight_val)
        device = self._device_from_params()
        with model_numerics(device, training=True):  # not the caller's autocast or inference mode
            if not (reset or same_device(device, torch.device(self.device_))):
                move_model(self, device)  # set_params(device=...) between calls: the model follows
            try:
                if reset:
                    self._initialize(X, y2, y_ndim, sw)
                return self._train(X, y2, sw, val, incremental, early, reset)
            except BaseException:
                if reset:  # a fit from scratch that fails leaves no fitted model behind (not half of an old one)
                    self._discard_fit()
                raise

    def _train(self, X, y2, sw, val, incremental, early, reset=False):
        """The epochs of ``_fit`` on checked data, its stopping rules and the final head solve."""
        if not incremental:
            start_monitoring(self, early)
        self._epoch_draws = {}  # whether the extractor draws from torch's RNG, by stage: the call's first epoch says
        for group in self._optimizer.param_groups if self._optimizer is not None else ():
            group["lr"] = float(self.learning_rate)  # set_params(learning_rate=...) keeps the moments
        self._head.max_change = float(self.ridge_max_change)  # as the learning rate: on the next step
        if early and val is None:  # hold out validation_fraction of the rows, as MLPRegressor
            (X, y2, sw), val = holdout(self._rng, self.validation_fraction, X, y2, sw)
            if reset:  # the targets' offset of the training rows only: no held-out target enters the model
                self._y_offset = self._target_offset(self._head.layout, y2, sw)
        train = self._training_tensors(X, y2, sw)  # (Xt, Yt, Wt, mass)
        # the loss of predicting zeros on fit's rows (a partial_fit chunk is no reference: None)
        zero_loss = None if incremental else 0.5 * float(np.einsum("ij,ij->", y2, y2)) / len(y2)
        table = EpochTable(validation=early, header=not (incremental and self.n_iter_)) if self.verbose else None
        best, stopped, interrupted = None, False, False
        for _ in range(1 if incremental else self.max_iter):
            start = time.perf_counter()
            snapshot = self._snapshot()
            try:  # an epoch and its scores are one unit: all or nothing
                loss, scores, failure = self._checked_epoch(train, sw, val, early, zero_loss)
            except KeyboardInterrupt:
                self._restore(snapshot)
                if incremental:
                    raise
                warn_interrupted(f"in epoch {self.n_iter_ + 1}; the model holds " + (
                    f"the state after epoch {self.n_iter_}" if best is None else
                    f"its best epoch so far (best_validation_score_={self.best_validation_score_:.6g})"))
                stopped = interrupted = True
                break
            except BaseException:
                self._restore(snapshot)  # nothing is left half-updated
                raise
            if failure is not None:
                self._restore(snapshot)
                # the targets' size as the head fits them: centred (an offset adds nothing to the gradient)
                peak = float(np.abs(self._centred(y2)).max()) if failure == "overflow" else None
                overflow = None if peak is None else (self._dtype, peak, self.alpha)
                warn_diverged(self.n_iter_ + 1, best is not None, self.learning_rate, overflow=overflow,
                              exploded=(loss, zero_loss) if failure == "exploded" else None,
                              features=failure == "features")
                stopped = True
                break
            self._head.end_pass()  # move the epoch's ridges to the host (synced already), mark the epoch
            self.loss_curve_.append(loss)
            self.n_iter_ += 1
            self.t_ += X.shape[0]
            if early:
                self.validation_loss_curve_.append(scores[0])
                self.validation_scores_.append(scores[1])
            if update_no_improvement(self, loss, scores[1], early):
                best = self._snapshot()
            if table is not None:
                table.row(self.n_iter_, loss, self.ridge_, time.perf_counter() - start, *scores)
            if not incremental and self._no_improvement_count > self.n_iter_no_change:
                if table is not None:
                    what = "Validation score" if early else "Training loss"
                    table.message(f"{what} did not improve more than tol={self.tol} for "
                                  f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                stopped = True
                break
        if best is not None:
            self._restore(best)
        if not (incremental or stopped):
            warnings.warn(
                f"Maximum iterations ({self.max_iter}) reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=5,  # _train < _fit < fit < _fit_context < caller
            )
        self.__dict__.pop("refit_ridge_", None)  # describes the head only while it is the refitted one
        solved = False
        if self.refit_head and not incremental:
            try:
                with self._epoch_rng("refit"):
                    solved = self._refit_head(train)
            except KeyboardInterrupt:  # the solve assigns nothing until it is done
                warn_interrupted("in the final head solve; the head is the last slimTik iterate")
                interrupted = True
        if self.n_iter_ == 0 and not solved:  # no epoch completed and no final solve: the initial zero head
            if interrupted:  # nothing to return: the interrupt goes on (a search must be able to stop)
                raise KeyboardInterrupt
            raise ValueError(
                "SlimTrainRegressor could not fit: no epoch completed (see the warning) and no head was solved, "
                "so the model would predict zeros; it is left unfitted.")
        return self

    def _discard_fit(self):
        """Forget the fitted state after a fit from scratch failed: the model is unfitted again."""
        for name in [k for k in vars(self) if k.endswith("_") and not k.endswith("__")]:
            if name not in ("n_features_in_", "feature_names_in_"):
                delattr(self, name)

    def _initialize(self, X, y2, y_ndim, sw):
        """Create every piece of fitted state (the only place that does)."""
        device = self._device_from_params()
        self._dtype = resolve_dtype(self.dtype)
        self._rng = check_random_state(self.random_state)
        self._torch_seed = int(self._rng.randint(np.iinfo(np.int32).max))  # torch's RNG: initial weights, epochs
        probe = X[: min(len(X), 2)]
        module, out = self._new_extractor(probe, device)
        check_extractor_output(out, len(probe), X.shape[1], dense=self.head is None)
        layout = self._layout(out, y2.shape[1])
        self._init_params = frozen_params(self)
        self.n_outputs_ = y2.shape[1]
        self._y_ndim = y_ndim
        self._y_offset = self._target_offset(layout, y2, sw)
        self.device_ = str(device)
        self._head = SlimTikHead(
            layout,
            memory_depth=self.memory_depth,
            batch_size=self.batch_size,
            ridge=None if self.ridge == "sgcv" else float(self.ridge),
            ridge_init=self.ridge_init,
            max_change=self.ridge_max_change,
            dtype=resolve_dtype(self.head_dtype),
            device=device,
            rule=self._ridge_rule,
        )
        self._optimizer = self._make_optimizer(module)
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        start_monitoring(self, early=False)
        self.feature_extractor_ = module  # last: the model counts as fitted from here (a failure above leaves it unfitted)

    def _device_from_params(self):
        """The ``device`` parameter resolved here (MPS only when no float64 is asked for)."""
        float64 = torch.float64 in (resolve_dtype(self.dtype), resolve_dtype(self.head_dtype))
        return resolve_device(self.device, float64=float64)

    # -------------------------------------------------------------- predict
    def predict(self, X: ArrayLike) -> np.ndarray:
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
        check_magnitude(X, "X", self._dtype, squared=False)
        out = np.empty((X.shape[0], self.n_outputs_), dtype=np.float64)
        with torch.no_grad(), model_numerics(torch.device(self.device_)):
            for rows, Z in self._chunked_features(X):
                out[rows] = self._head.apply(Z).cpu().numpy()
        out = self._uncentred(out)
        check_predictions(out)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_is_fitted__(self):
        # n_features_in_ is set by validation before a fit can still fail
        return hasattr(self, "feature_extractor_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = False
        return tags

