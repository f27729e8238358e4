"""Training feedback and stopping: the per-epoch table (``verbose >= 1``), a batch progress
bar (``verbose >= 2``), MLPRegressor's no-improvement rule on the estimator's state, and the
warnings of a fit stopped by divergence or Ctrl-C.
"""

import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._device import dtype_name

__all__ = [
    "EpochTable",
    "batch_bar",
    "exploding",
    "start_monitoring",
    "update_no_improvement",
    "warn_diverged",
    "warn_interrupted",
]


class EpochTable:
    """One aligned line per epoch, with a header before the first, as skorch prints.

    Parameters
    ----------
    validation : bool
        Add the validation loss and R2 columns (early stopping).
    file : file-like, default=None
        Where to print (``sys.stdout`` at print time when None).
    header : bool, default=True
        Print the header before the first row (not for a stream's later ``partial_fit`` calls).
    """

    def __init__(self, validation: bool, file=None, header: bool = True):
        self.columns = ["epoch", "train_loss"]
        if validation:
            self.columns += ["valid_loss", "valid_r2"]
        self.columns += ["ridge", "dur"]
        # wide enough for every cell format below: "%.4g" (10), "%.2e" (8), "%.3f" (7)
        self.widths = [{"epoch": 7, "ridge": 8, "dur": 7}.get(c, 10) for c in self.columns]
        self.file = file
        self._started = not header

    def _print(self, cells):
        print("  ".join(c.rjust(w) for c, w in zip(cells, self.widths)), file=self.file or sys.stdout)

    def row(self, epoch: int, train_loss: float, ridge: float, seconds: float, valid_loss=None, valid_r2=None):
        """Print the row of one epoch (the header and rule first, once)."""
        if not self._started:
            self._print(self.columns)
            self._print(["-" * w for w in self.widths])
            self._started = True
        cells = [str(epoch), f"{train_loss:.4g}"]
        if "valid_loss" in self.columns:
            cells += [f"{valid_loss:.4g}", f"{valid_r2:.4f}"]
        cells += [f"{ridge:.2e}", f"{seconds:.3f}"]
        self._print(cells)

    def message(self, text: str):
        print(text, file=self.file or sys.stdout)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def batch_bar(verbose: int, total: int, epoch: int):
    """A tqdm bar over the batches of one epoch when ``verbose >= 2``, tqdm is
    installed and stderr is a terminal; otherwise an object that does nothing."""
    if verbose < 2 or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False)


def start_monitoring(est, early: bool) -> None:
    """Reset the stopping rule of MLPRegressor at the start of every ``fit``."""
    est._no_improvement_count = 0
    est._validation_start = est.n_iter_  # the epoch before this fit's first: where its validation curve starts
    est.validation_scores_ = [] if early else None
    est.validation_loss_curve_ = [] if early else None
    est.best_validation_score_ = -np.inf if early else None
    est.best_loss_ = None if early else np.inf


def update_no_improvement(est, loss: float, score, early: bool) -> bool:
    """MLPRegressor's rule; True when the epoch is the best so far (early stopping)."""
    if early:
        est._no_improvement_count = (
            est._no_improvement_count + 1 if score < est.best_validation_score_ + est.tol else 0)
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            return True
        return False
    if est.best_loss_ is not None:
        est._no_improvement_count = est._no_improvement_count + 1 if loss > est.best_loss_ - est.tol else 0
        est.best_loss_ = min(est.best_loss_, loss)
    return False


def warn_interrupted(where: str) -> None:
    """The warning of a ``fit`` stopped by Ctrl-C, which returns the model instead of raising."""
    warnings.warn(f"Training interrupted (KeyboardInterrupt) {where}.", UserWarning, stacklevel=6)  # < _train < _fit < fit < _fit_context < caller


# An epoch's training loss above this multiple of the loss of predicting zeros counts as
# divergence.  Each batch's loss is taken with the head just solved on it, which fits at
# least about as well as zeros unless the features or the head have blown up (bounded
# features need |W z| ~ 1e3 |y| for 1e6x); the margin leaves every sane fit alone, e.g. a
# first epoch whose head is still regularised towards its start.  Checked in fit only: a
# partial_fit chunk (e.g. one whose targets are all zero) is no reference for the scale.
EXPLOSION_FACTOR = 1e6


def exploding(loss: float, zero_loss: float | None) -> bool:
    """Whether the epoch's mean training loss signals a blown-up extractor (see EXPLOSION_FACTOR).

    ``zero_loss`` is None where there is no reference (``partial_fit``).
    """
    return zero_loss is not None and loss > EXPLOSION_FACTOR * max(zero_loss, sys.float_info.min)


def warn_diverged(epoch: int, restored_best: bool, learning_rate: float, *, overflow=None, exploded=None,
                  features=False) -> None:
    """The warning of an epoch that diverged (the model is restored).

    ``overflow`` is ``(dtype, max |y - offset|, alpha)`` (the targets as the head fits
    them) when only the optimizer's state is not finite;
    ``exploded`` is ``(loss, zero_loss)`` when the loss is finite but exploded;
    ``features`` when the extractor's output is not finite while its weights are.
    """
    restored = (f"The model was restored to its {'best state' if restored_best else 'state before that epoch'} "
                "and training stopped.")
    if overflow is not None:
        dtype, peak, alpha = overflow
        # The gradient's part from the loss grows as |y|**2 (the head ~ |y| times a residual ~ |y|),
        # the weight decay's as alpha |theta| with |theta| of order 1: the larger part overflowed.
        if alpha > 0 and alpha >= peak ** 2:
            cause = (f"Adam's second moments grow as the squared gradient, here the weight decay's alpha * theta "
                     f"(alpha={alpha:.3g}; the targets' part grows as y**4, and the centred |y| is only up to "
                     f"{peak:.3g})")
            advice = "Lower alpha"
        else:
            cause = f"Adam's second moments grow as y**4, and the centred |y| is up to {peak:.3g}"
            advice = ("Scale the targets, e.g. TransformedTargetRegressor(SlimTrainRegressor(), "
                      "transformer=StandardScaler())")
        message = (f"The optimizer's state became non-finite ({dtype_name(dtype)}) in epoch {epoch} "
                   f"while the weights stayed finite: {cause}. {restored} {advice}, or use dtype='float64'.")
    elif features:
        message = (f"Training failed in epoch {epoch}: the feature_extractor returned non-finite features (NaN or "
                   f"inf) for some rows while its weights are finite. {restored} Check what the module computes "
                   "on these inputs (e.g. a log or a division of values out of its range); if its weights have grown "
                   f"large, lower learning_rate (now {learning_rate}) or scale the inputs.")
    else:
        cause = ("the training loss or the weights are not finite" if exploded is None else
                 f"the training loss ({exploded[0]:.3g}) exceeds {EXPLOSION_FACTOR:.0e} times that of predicting "
                 f"zeros ({exploded[1]:.3g})")
        message = (f"Training diverged in epoch {epoch}: {cause}. {restored} Lower learning_rate (now "
                   f"{learning_rate}) or scale the inputs.")
    warnings.warn(
        message,
        ConvergenceWarning,
        stacklevel=6,  # warn_diverged < _train < _fit < fit < _fit_context < caller
    )
