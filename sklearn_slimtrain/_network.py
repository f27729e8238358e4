"""The torch mechanics of a separable network ``y ~ W F(x; theta)`` (a private mixin).

:class:`~sklearn_slimtrain.SlimTrainRegressor` is the scikit-learn face (parameters,
validation, the epoch loop and its stopping rules, attributes, persistence); this
mixin holds what one epoch, one step, a forward pass in chunks and the final head
solve do with the extractor, its optimizer and the :class:`SlimTikHead`.  It reads
the estimator's parameters and the fitted state that ``_initialize`` creates.
"""

import contextlib
import copy
import math
import threading
import warnings
from typing import NamedTuple

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._device import device_index, resolve_dtype
from ._extractors import ResNetFeatures
from ._heads import make_layout
from ._progress import batch_bar, exploding

__all__ = []

# Rows per forward pass in predict and in the final head solve: bounds memory
# whatever the size of X.
PREDICT_CHUNK = 8192


class EpochResult(NamedTuple):
    """What :meth:`_SeparableNetworkMixin._checked_epoch` reports of one epoch."""

    loss: float  # the mean training loss (nan when the head's solve failed)
    scores: tuple  # (validation loss, validation R2), or (None, None) without early stopping or on failure
    failure: str | None  # None, or "diverged" (weights or loss not finite), "overflow"
    # (the optimizer's state alone not finite), "exploded" (see _progress.EXPLOSION_FACTOR)
    # or "features" (the extractor's output not finite while its weights are)


def _tensor(array: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A copy of ``array`` on ``device``: a view with negative strides (``X[::-1]``,
    ``np.flip``), which ``torch.tensor`` refuses, is copied first (other layouts are not)."""
    if any(stride < 0 for stride in array.strides):
        array = array.copy()
    return torch.tensor(array, dtype=dtype, device=device)


# Torch's global generators are shared by every thread of the process.  A fit holds this
# lock while it has them seeded (building the extractor; the epochs of an extractor that
# draws, e.g. dropout), so that fits in threads (joblib's threading backend, Dask workers
# with several threads) neither reseed nor restore each other's generators mid-draw: the
# same random_state gives the same model wherever the fit runs.
_RNG_LOCK = threading.RLock()
_EVAL_TAGS = {"validation": 1, "refit": 2}  # the eval-mode passes' seeds: (random_state's, n_iter_, tag)


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device):
    """Torch's global RNG seeded with ``seed`` inside the block, and as it was after it.

    The CPU's generator, and the CUDA device's when ``device`` is one (an MPS
    generator is not forked): the caller's generators are left as they were.
    Other threads wait for the block to end before they seed them (``_RNG_LOCK``).
    """
    cuda = [device_index(device)] if device.type == "cuda" else []
    with _RNG_LOCK, torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _rng_states(device: torch.device) -> list:
    """The states of the generators :func:`_seeded_rng` seeds (host copies)."""
    states = [torch.default_generator.get_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device_index(device)))
    return states


def _clone(state):
    """A copy of a state dict: tensors cloned, containers rebuilt, anything else deep-copied.

    A module's state dict keeps its ``_metadata`` (``copy.copy`` of the ordered dict).
    """
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        out = copy.copy(state)
        for key, value in out.items():
            out[key] = _clone(value)
        return out
    if isinstance(state, (list, tuple)):
        return type(state)(_clone(value) for value in state)
    return copy.deepcopy(state)


class _SeparableNetworkMixin:
    """Epochs, steps, chunked forward passes and head solves of a fitted estimator."""

    @staticmethod
    def _target_offset(layout, y2, sw):
        """The (weighted) mean of the first fit's targets, by which the head's targets are centred.

        For a dense head with an intercept (``fit_intercept``, or an ``nn.Linear`` head
        with a bias); None otherwise.  The intercept is regularised with ``W``, and
        every change of the cumulative ridge pulls the weights towards zero, so an
        offset left in the targets would be pulled at every step (a review measured
        R2 0.70 instead of 0.99 for peaks + 1e4).  A convolution's bias is shared by
        all positions of a channel, so a per-output offset would be a parameter such
        a layer does not have: those heads are not centred.
        """
        if layout.kind != "dense" or not layout.fit_intercept:
            return None
        return np.average(y2, axis=0, weights=sw).astype(np.float64)

    def _centred(self, y2):
        offset = getattr(self, "_y_offset", None)  # absent from models pickled by older versions
        return y2 if offset is None else y2 - offset

    def _uncentred(self, pred):
        offset = getattr(self, "_y_offset", None)
        return pred if offset is None else pred + offset

    def _training_tensors(self, X, y2, sw):
        """``(Xt, Yt, Wt, mass)`` on the model's device: weights in the head's dtype, ``mass`` their sum."""
        device = torch.device(self.device_)
        Xt = _tensor(X, self._dtype, device)
        Yt = _tensor(self._centred(y2), self._head.dtype, device)
        if sw is None:
            return Xt, Yt, None, None
        return Xt, Yt, _tensor(sw, self._head.dtype, device), float(sw.sum())

    def _validation_scores(self, train, X_val, y_val, sw_val=None):
        """Validation loss and R2 (weighted by ``sw_val``) of the model as ``fit`` would return it now (not recorded).

        ``train`` is the training set ``(Xt, Yt, Wt, mass)`` of :meth:`_solve_full_head`.
        """
        coef = self._head.coef
        if self.refit_head:
            solved = self._solve_full_head(*train)
            coef = coef if solved is None else solved[0]
        with torch.no_grad():
            pred = np.concatenate([self._head.apply(Z, coef).cpu().numpy() for _, Z in self._chunked_features(X_val)])
        pred = self._uncentred(pred)
        if np.isfinite(pred).all():
            sq = ((pred - y_val) ** 2).sum(axis=1)
            loss = 0.5 * float(np.average(sq, weights=sw_val))
            score = float(r2_score(y_val, pred, sample_weight=sw_val))
        else:  # never the best epoch; the divergence check of the epoch loop acts on the weights
            loss, score = np.nan, -np.inf
        return loss, score

    def _solve_full_head(self, Xt, Yt, Wt=None, mass=None):
        """The exact head on all rows, weighted by ``Wt`` (whose sum is ``mass``) when given."""
        ridge = None if self.ridge == "sgcv" else float(self.ridge)
        with torch.no_grad():
            chunks = ((Z, Yt[rows], None if Wt is None else Wt[rows]) for rows, Z in self._chunked_features(Xt))
            return self._head.solve_full(chunks, ridge, mass)

    def _refit_head(self, train):
        """Variable-projection head on the training set ``(Xt, Yt, Wt, mass)`` with the final extractor.

        Returns whether it was solved: not when the features of the training rows (or
        the solve) are not finite, which is warned about; the head stays the last
        slimTik iterate.
        """
        solved = self._solve_full_head(*train)
        if solved is None:
            warnings.warn(
                "The final head solve was skipped: the features of the training rows, or the solve, are not "
                "finite (does the feature_extractor return NaN or inf for some rows?). The head is the last "
                "slimTik iterate.", ConvergenceWarning, stacklevel=6)  # < _train < _fit < fit < _fit_context < caller
            return False
        self._head.coef, self.refit_ridge_ = solved
        return True

    def _snapshot(self):
        """Copy of the training state, to restore after a diverged epoch (one per epoch).

        Tensors are cloned rather than deep-copied, and the generator keeps only its
        state: about 1 ms instead of 5 ms for the default network with Adam.
        """
        optimizer = None if self._optimizer is None else _clone(self._optimizer.state_dict())
        return (_clone(self.feature_extractor_.state_dict()), optimizer, copy.deepcopy(self._head),
                self._rng.get_state())

    def _restore(self, snapshot):
        module_state, optimizer_state, self._head, rng_state = snapshot
        self._rng = np.random.RandomState()
        self._rng.set_state(rng_state)
        self.feature_extractor_.load_state_dict(module_state)
        if optimizer_state is not None:
            self._optimizer.load_state_dict(optimizer_state)

    def _finite(self):
        """``(weights, state)``: the extractor's weights and the head finite; the optimizer's state finite.

        One synchronisation per epoch.  The state can overflow while the weights stay
        finite: Adam's second moments grow as ``y**4`` (the gradient is ``W^T r`` with
        ``W`` and ``r`` both of the targets' scale), so float32 state overflows for
        ``|y|`` near 1e10, and every later update of the affected weights is zero.
        """
        weights = [torch.isfinite(p).all() for p in self.feature_extractor_.parameters()]
        weights.append(torch.isfinite(self._head.coef).all())
        # The state tensors shaped like their parameter and on its device (moments, momentum
        # buffers).  Adam keeps its step count as a 0-d CPU tensor, which has the shape of a
        # 0-d parameter: the device test keeps it out of a stack with CUDA tensors.
        per_param = self._optimizer.state.items() if self._optimizer is not None else ()
        state = [torch.isfinite(v).all() for param, entry in per_param for v in entry.values()
                 if torch.is_tensor(v) and v.is_floating_point() and v.shape == param.shape
                 and v.device == param.device]
        ones = weights[-1].new_ones(())
        flags = torch.stack([torch.stack(weights).all(), torch.stack(state).all() if state else ones])
        return tuple(bool(f) for f in flags.tolist())

    def _checked_epoch(self, train, sw, val, early, zero_loss):
        """One epoch, its verdict and (when it succeeded) its validation scores.

        ``train`` is ``(Xt, Yt, Wt, mass)``, ``sw`` the weights on the host, ``val``
        the validation set, ``zero_loss`` the loss of predicting zeros (None: no
        explosion check).  The caller restores the state from before the epoch
        after a failure (:class:`EpochResult`) or an exception.
        """
        try:
            loss = self._epoch(*train[:3], sw)
            weights_ok, state_ok = self._finite() if math.isfinite(loss) else (False, True)
            failure = ("diverged" if not weights_ok else "overflow" if not state_ok else
                       "exploded" if exploding(loss, zero_loss) else None)
            scores = (None, None)
            if early and failure is None:
                with self._epoch_rng("validation"):
                    scores = self._validation_scores(train, *val)
        except torch.linalg.LinAlgError:  # an eigh (step or head solve) on non-finite features
            # from finite weights: the module's own output is at fault, not the learning rate
            return EpochResult(math.nan, (None, None), "features" if self._finite()[0] else "diverged")
        return EpochResult(loss, scores, failure)

    def _build_extractor(self, n_features_in):
        spec = self.feature_extractor
        if spec is None:
            with torch.device("cpu"):  # built on the CPU whatever torch's default device, then moved
                return ResNetFeatures(n_features_in)
        module = copy.deepcopy(spec) if isinstance(spec, nn.Module) else spec(n_features_in)
        if not isinstance(module, nn.Module):
            raise TypeError(
                "feature_extractor must be a torch.nn.Module, a callable returning one, or None; "
                f"the callable returned {type(module).__name__}."
            )
        return module

    def _new_extractor(self, probe, device):
        """The extractor with its initial weights (from ``_torch_seed``) and its output on ``probe``.

        The draws happen under :func:`_seeded_rng`: on the CPU for the layers built
        there, and on the model's CUDA device for those that materialise there
        (a lazy layer at the probe, a module a callable builds on the GPU).
        """
        with _seeded_rng(self._torch_seed, device):
            module = self._build_extractor(probe.shape[1]).to(device=device, dtype=self._dtype)
            training = module.training
            trainable = any(p.requires_grad for p in module.parameters())
            try:  # in eval mode: no BatchNorm statistics updated, no dropout drawn
                with torch.set_grad_enabled(trainable):  # the caller's torch.no_grad included
                    out = module.eval()(_tensor(probe, self._dtype, device))
            except Exception as exc:  # the user's module: say which parameter and which input
                raise ValueError(f"feature_extractor cannot be applied to X with {probe.shape[1]} features: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if (trainable and isinstance(out, torch.Tensor) and out.is_floating_point() and not out.requires_grad
                and not self._grad_in_training(module, probe, device)):
            # e.g. a frozen backbone whose forward runs under torch.no_grad or returns .detach() while
            # its parameters still require grad: the first step's backward raised a torch error, and
            # with alpha > 0 weight decay alone moved the weights
            raise ValueError(
                "feature_extractor has parameters that require grad, but its output does not depend on them "
                "through autograd (its forward runs under torch.no_grad, or detaches its output). To train "
                "only the head on fixed features, freeze the module instead: module.requires_grad_(False).")
        return module.train(training), out.detach() if isinstance(out, torch.Tensor) else out

    def _grad_in_training(self, module, probe, device) -> bool:
        """Whether a copy of ``module`` in training mode gives an output that requires grad.

        For a module whose trainable parameters act in training mode only (a learned
        noise scale), whose eval-mode output therefore does not require grad.  A copy,
        so that no BatchNorm statistics of the module change; under the probe's seeded
        generator, so that nothing the caller sees is drawn.
        """
        with _seeded_rng(self._torch_seed, device), torch.enable_grad():
            out = copy.deepcopy(module).train()(_tensor(probe, self._dtype, device))
        return isinstance(out, torch.Tensor) and out.requires_grad

    @contextlib.contextmanager
    def _epoch_rng(self, stage="train"):
        """Torch's global RNG during an epoch: seeded from ``random_state`` and the epoch, restored after.

        Only a user's module draws from it (e.g. dropout; the rows are shuffled by
        the model's NumPy generator), so ``random_state`` fixes such a fit too and
        the caller's torch RNG is left as it was.  The CPU's generator, and the
        CUDA device's when the model is there (an MPS generator is not forked).

        ``stage`` is ``"train"`` for an epoch's steps, ``"validation"`` and
        ``"refit"`` for the passes in eval mode that a fit makes (the validation
        scores, the final head solve), each with a seed of its own: a module may
        draw there too (noise kept on at evaluation, Monte Carlo dropout).  The first time in each
        ``fit`` or ``partial_fit`` call a stage is seeded (and holds
        ``_RNG_LOCK``) and records whether the extractor drew; later it is
        seeded only if it did, so fits in threads whose extractors never draw do
        not wait for each other.  An extractor that starts drawing after that
        draws from the caller's generator in that call.
        """
        seed = getattr(self, "_torch_seed", None)  # absent from models saved by older versions
        draws = getattr(self, "_epoch_draws", None)
        draws = draws if isinstance(draws, dict) else {}  # a bool in models pickled by older versions
        if seed is None or draws.get(stage) is False:
            yield
            return
        device = torch.device(self.device_)
        # the eval-mode passes tagged: a warm-started fit's first validation pass and the previous
        # fit's final head solve see the same n_iter_
        entropy = [seed, self.n_iter_] if stage == "train" else [seed, self.n_iter_, _EVAL_TAGS[stage]]
        epoch_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        with _seeded_rng(epoch_seed, device):
            seeded = _rng_states(device)
            yield
            if draws.get(stage) is None:
                self._epoch_draws = {**draws, stage: not all(map(torch.equal, seeded, _rng_states(device)))}

    def _make_optimizer(self, module):
        """The torch optimizer of ``module``'s trainable parameters (None when there are none)."""
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return None
        if self.optimizer in ("adam", "sgd"):
            cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.SGD
            # foreach: one fused update for all parameter tensors (the default on CUDA only)
            return cls(params, lr=float(self.learning_rate), foreach=True)
        try:  # a class or a partial of one, checked by fit; a partial's keywords are the user's
            return self.optimizer(params, lr=float(self.learning_rate))
        except (TypeError, ValueError) as exc:  # e.g. "Invalid momentum value: -1" from torch
            raise ValueError(f"optimizer={self.optimizer!r} cannot be built: {exc}") from exc

    def _epoch(self, Xt, Yt, Wt=None, sw=None):
        """One pass over ``(Xt, Yt)``; returns the mean training loss (one sync).

        With sample weights (``Wt`` on the device, ``sw`` the same on the host,
        whose batch sums are taken there) the loss is the weighted mean.
        """
        n = Xt.shape[0]
        order = perm = None
        if self.shuffle:
            perm = self._rng.permutation(n)
            order = torch.as_tensor(perm, device=Xt.device)
        self.feature_extractor_.train()
        total = torch.zeros((), dtype=Yt.dtype, device=Xt.device)
        # A short last batch would leave the head fitted to a handful of rows (fewer
        # than its unknowns for the default network when the remainder is < 17), so it
        # is merged into the one before: every batch has batch_size to
        # 2 * batch_size - 1 rows (all n rows when n < batch_size).
        stops = [self.batch_size * (i + 1) for i in range(max(n // self.batch_size, 1) - 1)] + [n]
        starts = [0, *stops[:-1]]
        masses = [None] * len(stops) if sw is None else np.add.reduceat(sw if perm is None else sw[perm], starts)
        bar = batch_bar(self.verbose, len(stops), self.n_iter_ + 1)
        try:
            with self._epoch_rng(), self._head.stepping():
                for start, stop, mass in zip(starts, stops, masses):
                    rows = slice(start, stop) if order is None else order[start:stop]
                    # a slice is a view: cloned, so that a module changing its input in place
                    # (nn.Dropout(inplace=True) as its first layer) cannot change the data
                    xb = Xt[rows].clone() if order is None else Xt[rows]
                    total += self._step(xb, Yt[rows], None if Wt is None else Wt[rows], mass)
                    bar.update()
        finally:
            bar.close()
        return float(total) / (n if sw is None else float(sw.sum()))

    def _step(self, xb, yb, wb=None, mass=None):
        """Algorithm 3.1, lines 8-14: features, head solve, extractor update.

        Returns the batch's loss times its size (or its weight ``mass``).
        """
        train = self._optimizer is not None
        try:
            with torch.set_grad_enabled(train):
                Z = self._features(xb)
        except ValueError as exc:  # BatchNorm1d in training mode on a one-row batch: say which parameter
            if "more than 1 value per channel" not in str(exc):
                raise
            raise ValueError(
                f"feature_extractor cannot be trained on a batch of {xb.shape[0]} sample (batch_size="
                f"{self.batch_size}; fewer rows than that make one batch): {exc}. Its batch normalisation "
                "needs at least 2 rows per batch: use batch_size >= 2, and fit or partial_fit on 2 rows or "
                "more.") from exc
        size = xb.shape[0] if wb is None else float(mass)
        coef = self._head.step(Z.detach().to(self._head.dtype), yb, wb, None if wb is None else size)
        with torch.set_grad_enabled(train):
            resid = self._head.apply(Z, coef) - yb.to(Z.dtype)
            if wb is None:
                loss = 0.5 * (resid * resid).sum() / size
            else:  # the batch's weighted mean, as MLPRegressor (weights over their sum: no overflow)
                loss = 0.5 * (resid * resid * (wb / size).to(Z.dtype)[:, None]).sum()
            if train:
                objective = loss
                if self.alpha > 0:
                    penalty = sum((p * p).sum() for group in self._optimizer.param_groups for p in group["params"])
                    objective = loss + 0.5 * self.alpha * penalty
                self._optimizer.zero_grad(set_to_none=True)
                objective.backward()
                self._optimizer.step()
        return loss.detach().to(yb.dtype) * size

    def _features(self, x):
        """``F(x)``: what the head sees."""
        return self.feature_extractor_(x)

    def _layout(self, features, n_outputs):
        """The head's layout for features shaped like ``features`` (checks the head against them and ``y``)."""
        return make_layout(self.head, features.shape[1:], n_outputs, self.fit_intercept,
                           resolve_dtype(self.head_dtype), features.device)

    def _chunked_features(self, X):
        """``(rows, F(x))`` for chunks of rows of ``X`` (array or tensor), in eval mode.

        Features in the head's dtype; bounded memory whatever
        the size of ``X``.  Callers hold ``torch.no_grad()``.
        """
        self.feature_extractor_.eval()
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            rows = slice(start, start + PREDICT_CHUNK)
            # a copy either way: a module changing its input in place must not change X (the
            # validation rows are scored every epoch)
            x = X[rows].clone() if isinstance(X, torch.Tensor) else _tensor(X[rows], self._dtype, torch.device(self.device_))
            yield rows, self._features(x).to(self._head.dtype)

    def _head_weights(self):
        check_is_fitted(self)
        layout = self._head.layout
        if layout.kind != "dense":  # the layer's own weight and bias
            weights = layout.weights(self._head.coef)
            bias = weights.get("bias")
            return (weights["weight"].detach().cpu().numpy().astype(np.float64),
                    0.0 if bias is None else bias.detach().cpu().numpy().astype(np.float64))
        W = self._head.coef.detach().cpu().numpy().astype(np.float64).T  # (t, p)
        if layout.fit_intercept:
            coef, intercept = W[:, :-1], self._uncentred(W[:, -1])
        else:
            coef, intercept = W, np.zeros(W.shape[0])
        if self._y_ndim == 1:
            return coef[0], float(intercept[0])
        return coef, intercept

    # ------------------------------------------------------ head attributes
    @property
    def coef_(self):
        """Head weights: ``(n_targets, n_features_out)`` or ``(n_features_out,)`` for the
        dense head, the layer's ``weight`` for a layer ``head``."""
        return self._head_weights()[0]

    @property
    def intercept_(self):
        """Head intercept, ``(n_targets,)`` or a float (the layer's ``bias`` for a layer ``head``)."""
        return self._head_weights()[1]

    @property
    def head_(self):
        """The solved final layer as a module (``nn.Linear`` for the dense head) in the
        extractor's dtype: ``nn.Sequential(model.feature_extractor_, model.head_)`` is the network."""
        check_is_fitted(self)
        layer = self._head.module()
        offset = getattr(self, "_y_offset", None)
        if offset is not None:  # the dense head's bias, uncentred (in the head's dtype, then cast)
            with torch.no_grad():
                layer.bias += torch.as_tensor(offset, dtype=layer.bias.dtype, device=layer.bias.device)
        return layer.to(self._dtype)

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
