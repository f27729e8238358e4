"""Shared helpers for the benchmark scripts (not part of the package)."""

import platform
import time

import torch


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


def fit_adam(X, y, *, extractor, lr=1e-3, batch_size=32, epochs=20, weight_decay=0.0, seed=0, callback=None,
             device="cpu"):
    """Train ``extractor`` plus a trainable linear layer jointly with Adam (the baseline).

    Same network, same loss ``(1/b) sum 1/2 ||W z_i + c - y_i||^2`` as slimTrain,
    but the final layer is learned by Adam too.  Returns a predict function.
    ``callback(epoch, predict)`` is called after every epoch when given.
    """
    import numpy as np

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Xt = torch.tensor(X, dtype=torch.float32, device=device)
    Y = np.asarray(y, dtype=np.float32)
    Yt = torch.tensor(Y.reshape(len(Y), -1), device=device)
    with torch.no_grad():
        width = extractor(Xt[:2]).shape[1]
    head = torch.nn.Linear(width, Yt.shape[1]).to(device)
    net = torch.nn.Sequential(extractor, head)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)  # as SlimTrainRegressor

    def predict(Xn):
        with torch.no_grad():
            out = net(torch.tensor(Xn, dtype=torch.float32, device=device)).double().cpu().numpy()
        return out[:, 0] if Y.ndim == 1 else out

    for epoch in range(epochs):
        order = torch.as_tensor(rng.permutation(len(Xt)), device=device)
        for start in range(0, len(Xt), batch_size):
            rows = order[start : start + batch_size]
            resid = net(Xt[rows]) - Yt[rows]
            loss = 0.5 * (resid * resid).sum() / len(rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if callback is not None:
            callback(epoch + 1, predict)
    return predict
