"""Shared helpers for the benchmark scripts (not part of the package)."""

import platform
import time

import numpy as np
import torch

from sklearn_slimtrain import SlimTrainRegressor


class MatlabRuleRegressor(SlimTrainRegressor):
    """``SlimTrainRegressor`` with the published MATLAB sGCV candidate window, for comparison only."""

    _ridge_rule = "matlab"


def machine() -> str:
    """One line naming the machine, for the tables in the docs."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    )


def markdown_table(header, rows) -> str:
    """Rows of values as a Markdown table (floats in 4 significant digits)."""

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def batch_bounds(n, batch_size):
    """``(start, stop)`` of each batch of an epoch over ``n`` rows, as ``SlimTrainRegressor`` splits them.

    ``max(n // batch_size, 1)`` batches of ``batch_size`` rows, the remainder rows merged
    into the last one (which has ``batch_size`` to ``2 * batch_size - 1`` rows; all ``n``
    rows when ``n < batch_size``): the same steps per epoch as the estimator's ``_epoch``.
    """
    stops = [batch_size * (i + 1) for i in range(max(n // batch_size, 1) - 1)] + [n]
    return list(zip([0, *stops[:-1]], stops))


def fit_adam(X, y, *, extractor, lr=1e-3, batch_size=32, epochs=20, weight_decay=0.0, seed=0, callback=None,
             device="cpu"):
    """Train ``extractor`` plus a trainable linear layer jointly with Adam (the baseline).

    Same network, same loss ``(1/b) sum 1/2 ||W z_i + c - y_i||^2`` as slimTrain,
    but the final layer is learned by Adam too.  Returns a predict function.
    ``callback(epoch, predict)`` is called after every epoch when given.
    """
    extractor.to(device)
    # The head (and any lazy layer of the extractor, materialised by the probe) is drawn from
    # its own stream: the caller built the extractor after torch.manual_seed(seed), so
    # reseeding with `seed` here would make the head's weights (or a lazy opening layer's) a
    # rescaled copy of the first weights the extractor drew, correlated by construction.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(independent_seed(seed))
        with torch.no_grad():
            width = extractor(torch.tensor(X[:2], dtype=torch.float32, device=device)).shape[1]
        head = torch.nn.Linear(width, 1 if np.ndim(y) == 1 else np.shape(y)[1])
    return fit_adam_layer(X, y, extractor=extractor, head=head, lr=lr, batch_size=batch_size, epochs=epochs,
                          weight_decay=weight_decay, seed=seed, callback=callback, device=device)


def independent_seed(seed):
    """A seed for a torch stream unrelated to the one ``torch.manual_seed(seed)`` starts."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


def head_solve(predict, X, y):
    """Adam's trained network with the package's final head solve (``refit_head=True``) in place of its head.

    ``predict`` is what :func:`fit_adam` returns (its extractor and head, in their
    current state).  The head is re-solved on the rows ``(X, y)`` exactly as
    ``SlimTrainRegressor`` does after its last epoch: the Tikhonov head on all rows
    in float64 with the ridge chosen by exact GCV (``tikhonov_from_gram``), written as a
    correction of Adam's head.  Returns a predict function (same shapes as ``predict``).
    So both methods can be compared with the same final solve.
    """
    from sklearn_slimtrain._slimtik import tikhonov_from_gram

    extractor, head = predict.extractor, predict.head
    Y = torch.from_numpy(np.asarray(y, dtype=np.float64).reshape(len(y), -1))

    def features(Xn):
        was_training = extractor.training
        extractor.eval()
        try:
            with torch.no_grad():
                device = next(head.parameters()).device
                Z = extractor(torch.tensor(Xn, dtype=torch.float32, device=device)).double().cpu()
        finally:
            extractor.train(was_training)
        return torch.cat([Z, torch.ones(len(Z), 1, dtype=torch.float64)], dim=1)

    A = features(X)
    offset = Y.mean(0)  # the package centres the targets of a head with an intercept
    Y = Y - offset
    W0 = torch.cat([head.weight.detach().double().cpu().T, head.bias.detach().double().cpu()[None]], dim=0)
    W0[-1] -= offset
    R = Y - A @ W0
    if (R * R).sum() > (Y * Y).sum():  # as SlimTikHead.solve_full: Adam's head fits worse than zero,
        W0, R = torch.zeros_like(W0), Y  # so correct the zero head
    n = len(A)
    coef = tikhonov_from_gram(A.T @ A / n, A.T @ R / n, (R * R).sum() / n, n, ridge=None, coef=W0).coef

    def solved(Xn):
        out = (features(Xn) @ coef + offset).numpy()
        return out[:, 0] if np.ndim(y) == 1 else out

    return solved


def fit_adam_layer(X, y, *, extractor, head, lr=1e-3, batch_size=32, epochs=20, ridge=0.0, alpha=0.0, seed=0,
                   callback=None, device="cpu", weight_decay=0.0):
    """Train ``extractor`` followed by a torch layer ``head`` jointly with Adam (the baseline for a non-dense head).

    For final layers that are not ``nn.Linear``, e.g. the transposed convolution of
    ``ConvAutoencoderFeatures.final_layer()``.  The network output ``head(extractor(x))`` is
    flattened to ``(n, -1)`` and compared with the flat targets ``y`` (one row per sample);
    the loss of a batch of ``b`` rows is

        (1/b) sum_i 1/2 ||out_i - y_i||^2 + ridge/2 ||w_head||^2 + alpha/2 ||theta||^2

    with ``w_head`` all parameters of ``head`` (bias included) and ``theta`` all parameters
    of ``extractor``.  Adam on all parameters; one numpy RNG (``seed``) shuffles the rows
    every epoch, and the epoch is split into batches as ``SlimTrainRegressor`` splits it
    (:func:`batch_bounds`: the remainder rows join the last batch, so both methods make
    ``max(n // batch_size, 1)`` steps per epoch).

    ``extractor`` and ``head`` are used as given (moved to ``device``) and trained in place:
    their initial weights are the caller's, so call ``torch.manual_seed`` before building
    them.  ``torch.manual_seed(seed)`` is called on entry for any randomness inside the
    modules (dropout).  Returns a predict function (flat ``(n, -1)`` float64 outputs,
    evaluated in eval mode, e.g. BatchNorm with its running statistics).
    ``callback(epoch, predict)`` is called after every epoch when given.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Xt = torch.tensor(X, dtype=torch.float32, device=device)
    Y = np.asarray(y, dtype=np.float32)
    Yt = torch.tensor(Y.reshape(len(Y), -1), device=device)
    extractor.to(device)
    head.to(device)
    net = torch.nn.Sequential(extractor, head, torch.nn.Flatten())
    theta = list(extractor.parameters())
    w_head = list(head.parameters())
    # foreach: as SlimTrainRegressor; weight_decay: Adam's own L2 on every weight (fit_adam)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)

    def sq_norm(params):
        return sum((p * p).sum() for p in params)

    def predict(Xn):
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(torch.tensor(Xn, dtype=torch.float32, device=device)).double().cpu().numpy()
        finally:
            net.train(was_training)
        return out[:, 0] if Y.ndim == 1 else out

    predict.extractor, predict.head = extractor, head  # for head_solve
    net.train()
    for epoch in range(epochs):
        order = torch.as_tensor(rng.permutation(len(Xt)), device=device)
        for start, stop in batch_bounds(len(Xt), batch_size):
            rows = order[start:stop]
            resid = net(Xt[rows]) - Yt[rows]
            loss = 0.5 * (resid * resid).sum() / len(rows)
            if ridge:
                loss = loss + 0.5 * ridge * sq_norm(w_head)
            if alpha:
                loss = loss + 0.5 * alpha * sq_norm(theta)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if callback is not None:
            callback(epoch + 1, predict)
    return predict
