"""Final layers other than the dense head: convolutions and generic linear operators.

References are built independently of ``_heads``: the batch matrix ``A`` is the
Jacobian of the layer's output in its weights, from ``torch.func.jacrev``.
"""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.func import functional_call, jacrev

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain._heads import ConvLayout, OperatorLayout, make_layout

D64 = torch.float64
CPU = torch.device("cpu")

LAYERS = {  # layer, per-sample feature shape
    "conv2d-stride2": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 9, 9)),
    "conv1d-circular": (lambda: nn.Conv1d(2, 3, 5, padding=2, padding_mode="circular"), (2, 11)),
    "conv2d-reflect": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 5, 6)),
    "conv3d-nobias": (lambda: nn.Conv3d(2, 2, 2, bias=False), (2, 4, 4, 4)),
    "convT2d-paper": (lambda: nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1), (16, 6, 6)),
    "convT2d-channels": (lambda: nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1), (3, 5, 5)),
    "convT1d-outpad": (lambda: nn.ConvTranspose1d(2, 3, 3, stride=3, output_padding=1), (2, 6)),
    "convT2d-dilated": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, dilation=2, padding=1), (2, 4, 5)),
    "conv2d-groups": (lambda: nn.Conv2d(4, 4, 3, groups=2), (4, 6, 6)),
    "linear": (lambda: nn.Linear(5, 3), (5,)),
}


def _jacobian(layer, Z):
    """``A`` (rows: sample, flattened output; columns: the layer's parameters in order)."""
    layer = layer.to(D64)  # outside the transform: never mutate a module under jacrev
    params = {k: v.detach() for k, v in layer.named_parameters()}
    jac = jacrev(lambda p: functional_call(layer, p, (Z,)).reshape(-1))(params)
    return torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], dim=1)


def _flat_weights(layer):
    return torch.cat([p.detach().reshape(-1) for p in layer.parameters()]).to(D64)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_batch_matrix_times_weights_is_the_layer_output(name):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make().to(D64)
    Z = torch.randn(3, *shape, dtype=D64)
    n_out = layer(Z[:1]).numel()
    layout = make_layout(layer, shape, n_out, True, D64, CPU)
    coef = torch.randn(layout.shape, dtype=D64)
    with torch.no_grad():
        out = layout.apply(Z, coef)
        np.testing.assert_allclose(layout.module(coef)(Z).reshape(3, -1), out, rtol=0, atol=1e-13)
    A = layout.design(Z)
    Aw = A @ coef
    if layout.kind == "conv":  # rows (sample, position), columns: output channels
        Aw = Aw.reshape(3, -1, layout.shape[1]).transpose(1, 2)
    np.testing.assert_allclose(Aw.reshape(3, -1), out, rtol=0, atol=1e-13)
    # the batch statistics equal the brute-force products of the explicit A
    Y = torch.randn(3, n_out, dtype=D64)
    B = layout.targets(Y)
    R = B - A @ coef
    stats = layout.stats(Z, Y, coef)
    np.testing.assert_allclose(stats.gram, A.T @ A, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.cross, A.T @ R, rtol=1e-12, atol=1e-11)
    assert float(stats.rnorm2) == pytest.approx(float((R * R).sum()), rel=1e-12)
    assert stats.n_rows == A.shape[0]
    # sample weights scale every row of sample i (all its outputs) by sqrt(w_i)
    w = torch.tensor([0.5, 2.0, 3.0], dtype=D64)
    root = w.sqrt().repeat_interleave(A.shape[0] // 3)[:, None]
    weighted = layout.stats(Z, Y, coef, w)
    np.testing.assert_allclose(weighted.gram, (root * A).T @ (root * A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weighted.cross, (root * A).T @ (root * R), rtol=1e-12, atol=1e-11)
    assert float(weighted.rnorm2) == pytest.approx(float(((root * R) ** 2).sum()), rel=1e-12)
    assert weighted.n_rows == A.shape[0]
    # against the Jacobian of the layer in its weights (torch.func, independent of _heads)
    J = _jacobian(layer, Z)
    if layout.kind == "operator":
        np.testing.assert_array_equal(A, J)
    w = _flat_weights(layout.module(coef))  # the layer that coef describes, in its own layout
    np.testing.assert_allclose((J @ w).reshape(3, -1), out, rtol=0, atol=1e-12)


def test_transposed_convolution_gram_is_block_diagonal_by_stride_class():
    layout = make_layout(nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1), (16, 14, 14), 784, True, D64, CPU)
    assert isinstance(layout, ConvLayout)
    assert len(layout._blocks) == 4 and all(len(cols) == 64 for _, cols, _, _ in layout._blocks)
    conv = make_layout(nn.Conv2d(16, 2, 3, padding=1), (16, 6, 6), 72, True, D64, CPU)
    assert len(conv._blocks) == 1 and conv.shape == (16 * 9 + 1, 2)  # output channels are targets


class _Frozen(nn.Module):
    """A fixed random feature map from flat rows to images (no trainable weights)."""

    def __init__(self, n_in, shape, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.register_buffer("K", torch.randn(n_in, int(np.prod(shape)), generator=g) / np.sqrt(n_in))

    def forward(self, x):
        return torch.tanh(x @ self.K.to(x.dtype)).reshape(-1, *self.shape)


def _autoencoder_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.standard_normal((n, 2 * 6 * 6))


@pytest.mark.parametrize("weighted", [False, True])
# 6 batches: both depths keep every one (the final head solve of refit=True ignores the memory)
@pytest.mark.parametrize("refit, memory_depth", [(False, 10), (True, 10), (False, None)])
def test_one_epoch_with_frozen_extractor_is_closed_form_tikhonov_for_conv_weights(refit, weighted, memory_depth):
    # fixed ridge, memory holding every batch: one epoch of slimTik solves
    # min (1/M) sum_i s_i 1/2 ||K(w) z_i - y_i||^2 + lam/2 ||w||^2 exactly (bias among w;
    # sample weights s_i, M their sum; s_i = 1 and M = N without sample_weight)
    X, Y = _autoencoder_data()
    s = np.random.default_rng(0).uniform(0.2, 3.0, len(X)) if weighted else np.ones(len(X))
    lam = 0.05
    head = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1)
    extractor = _Frozen(6, (3, 3, 3))
    model = SlimTrainRegressor(extractor, head=head, ridge=lam, memory_depth=memory_depth, batch_size=8, max_iter=1,
                               refit_head=refit, dtype="float64", random_state=0)
    model.fit(X, Y, sample_weight=s if weighted else None)
    Z = extractor.double()(torch.tensor(X))
    A = _jacobian(head, Z)
    B = torch.tensor(Y).reshape(-1)
    rows = torch.tensor(s / s.sum()).repeat_interleave(A.shape[0] // len(X))[:, None]  # per output row
    w = torch.linalg.solve(A.T @ (rows * A) + lam * torch.eye(A.shape[1], dtype=D64), A.T @ (rows[:, 0] * B))
    got = torch.cat([p.detach().reshape(-1) for p in model.head_.parameters()]).double()
    np.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.predict(X), (A @ w).reshape(len(X), -1), atol=1e-9)
    assert model.coef_.shape == (3, 2, 4, 4) and model.intercept_.shape == (2,)


class _Wrapped(nn.Module):
    """The same layer, hidden from the type checks: solved by the generic Jacobian path."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, z):
        return self.layer(z)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_fast_path_and_generic_operator_path_agree(kind):
    X, Y = _autoencoder_data(40, seed=1)
    if kind == "linear":
        # centred targets: the fast (dense) path centres them, the generic path cannot know
        # that a module has a per-output bias; with a zero mean both solve the same problem
        layer, extractor, y = nn.Linear(7, 3), (lambda n: nn.Sequential(nn.Linear(n, 7), nn.Tanh())), Y[:, :3]
        y = y - y.mean(0)
    else:
        layer, extractor, y = nn.Conv2d(3, 2, 3, padding=1), (_Trainable), Y[:, :2 * 9]
    kw = dict(memory_depth=2, batch_size=8, max_iter=2, dtype="float64", random_state=0, shuffle=True)
    fast = SlimTrainRegressor(extractor, head=layer, **kw).fit(X, y)
    generic = SlimTrainRegressor(extractor, head=_Wrapped(layer), **kw).fit(X, y)
    assert not isinstance(fast._head.layout, OperatorLayout)
    assert isinstance(generic._head.layout, OperatorLayout)
    np.testing.assert_allclose(generic.ridge_path_, fast.ridge_path_, rtol=1e-8)
    np.testing.assert_allclose(generic.predict(X), fast.predict(X), rtol=1e-7, atol=1e-9)


class _Trainable(nn.Module):
    def __init__(self, n_in):
        super().__init__()
        self.lin = nn.Linear(n_in, 27)

    def forward(self, x):
        return torch.tanh(self.lin(x)).reshape(-1, 3, 3, 3)


def test_dense_head_as_nn_linear_equals_default_head():
    X, Y = _autoencoder_data(40, seed=2)
    kw = dict(batch_size=8, max_iter=2, random_state=0)
    extractor = lambda n: nn.Sequential(nn.Linear(n, 7), nn.Tanh())
    default = SlimTrainRegressor(extractor, **kw).fit(X, Y[:, :3])
    linear = SlimTrainRegressor(extractor, head=nn.Linear(7, 3), **kw).fit(X, Y[:, :3])
    np.testing.assert_array_equal(linear.predict(X), default.predict(X))
    np.testing.assert_array_equal(linear.coef_, default.coef_)
    assert isinstance(linear.head_, nn.Linear) and linear.head_.weight.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, y_cols, match",
    [
        (dict(head=nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Tanh())), 18, "not linear in its parameters"),
        (dict(head=nn.Conv2d(3, 2, 3, padding=1)), 17, "produces 18 outputs per sample.*17 targets"),
        (dict(head=nn.Conv2d(4, 2, 3, padding=1)), 18, r"in_channels=4.*returns \(3, 3, 3\)"),
        (dict(head=nn.Conv1d(3, 2, 3, padding=1)), 18, "1 spatial dims"),
        (dict(), 18, r"returned shape \(2, 3, 3, 3\) \(features of another shape need a layer as head"),
        (dict(head=nn.Linear(5, 18), feature_extractor=lambda n: nn.Linear(n, 7)), 18,
         "expects 5 features; the feature extractor returns 7"),
    ],
)
def test_head_mismatches_raise_clear_errors(kwargs, y_cols, match):
    X, Y = _autoencoder_data(16)
    model = SlimTrainRegressor(**{"feature_extractor": _Trainable, "max_iter": 1, **kwargs})
    with pytest.raises(ValueError, match=match):
        model.fit(X, Y[:, :y_cols])
    assert not hasattr(model, "feature_extractor_")


def test_conv_head_clone_pickle_save_load_partial_fit_and_grid_search(tmp_path):
    X, Y = _autoencoder_data(48)
    model = SlimTrainRegressor(_Trainable, head=nn.ConvTranspose2d(3, 2, 4, 2, 1),
                               memory_depth=5, batch_size=8, max_iter=2, random_state=0)
    model.fit(X, Y)
    assert clone(model).head is not model.head and not hasattr(clone(model), "head_")
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    path = tmp_path / "conv.slim"
    model.save(path)
    with pytest.raises(ValueError, match="head"):
        SlimTrainRegressor.load(path, feature_extractor=_Trainable)
    loaded = SlimTrainRegressor.load(path, feature_extractor=_Trainable,
                                     head=nn.ConvTranspose2d(3, 2, 4, 2, 1))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    loaded.partial_fit(X, Y)
    model.partial_fit(X, Y)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with pytest.raises(ValueError, match=r"saved head has \(49, 2\) weights"):
        SlimTrainRegressor.load(path, feature_extractor=_Trainable,
                                head=nn.ConvTranspose2d(3, 2, 4, 2, 1, bias=False))
    search = GridSearchCV(clone(model).set_params(max_iter=1), {"memory_depth": [0, 5]}, cv=2).fit(X, Y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    pipe = make_pipeline(StandardScaler(), clone(model)).fit(X, Y)
    assert pipe.predict(X).shape == Y.shape and isinstance(pipe[-1].head_, nn.ConvTranspose2d)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_conv_head_on_cuda_matches_cpu():
    X, Y = _autoencoder_data(48)
    kw = dict(head=nn.ConvTranspose2d(3, 2, 4, 2, 1), memory_depth=5, batch_size=8, max_iter=2,
              dtype="float64", random_state=0)
    cpu = SlimTrainRegressor(_Trainable, **kw).fit(X, Y)
    gpu = SlimTrainRegressor(_Trainable, device="cuda", **kw).fit(X, Y)
    assert gpu._head.coef.device.type == "cuda"
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gpu.ridge_path_, cpu.ridge_path_, rtol=1e-6)


def _tf32(x):
    """float32 values rounded to TF32 (10 explicit mantissa bits), as cuDNN may round a GPU convolution's inputs."""
    if x.dtype != torch.float32:
        return x
    return ((x.view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


class _TF32Inputs(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, z):
        return self.layer(_tf32(z))


@pytest.mark.parametrize("name", ["convT2d-paper", "conv2d-stride2", "conv1d-circular"])
def test_conv_layout_is_exact_whatever_the_heads_precision(name, monkeypatch):
    # The index map of a float32 head must not depend on how the device rounds float32
    # convolutions (TF32 on recent GPUs): it is built in float64 on the CPU.  Emulated
    # here by rounding the basis layer's float32 inputs to TF32.
    import sklearn_slimtrain._heads as heads

    make, shape = LAYERS[name]
    layer = make()
    exact = ConvLayout(layer, shape, D64, CPU)
    wide = nn.Conv2d(1, 1, 3, padding=1)  # 4,096 positions: beyond TF32's exact integers (2^11)
    exact_wide = ConvLayout(wide, (1, 64, 64), D64, CPU)
    real = heads.basis_layer
    monkeypatch.setattr(heads, "basis_layer", lambda layer: _TF32Inputs(real(layer)))
    assert torch.equal(ConvLayout(layer, shape, torch.float32, CPU)._index, exact._index)
    assert torch.equal(ConvLayout(wide, (1, 64, 64), torch.float32, CPU)._index, exact_wide._index)


@pytest.mark.parametrize("head_dtype", ["float32", "float64"])
def test_operator_head_linearity_check_ignores_the_heads_rounding(head_dtype):
    # The check runs on a float64 copy: a float32 head is not mistaken for a nonlinear
    # one, and a nonlinear head is refused in either dtype.
    X, Y = _autoencoder_data(40, seed=1)
    kw = dict(batch_size=8, max_iter=1, random_state=0, head_dtype=head_dtype)
    grouped = SlimTrainRegressor(_Trainable, head=nn.Conv2d(3, 3, 3, padding=1, groups=3), **kw).fit(X, Y[:, :27])
    assert isinstance(grouped._head.layout, OperatorLayout) and np.isfinite(grouped.predict(X)).all()
    nonlinear = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Tanh())
    with pytest.raises(ValueError, match="not linear in its parameters"):
        SlimTrainRegressor(_Trainable, head=nonlinear, **kw).fit(X, Y[:, :18])


def test_linear_head_on_sequence_features_uses_the_generic_path():
    # nn.Linear applied along the last axis of (n, 4, 3) features: linear in its weights,
    # not the dense layout (which needs 2-D features), so the Jacobian path solves it
    X, Y = _autoencoder_data(32)

    class Sequence(nn.Module):
        def __init__(self, n_in):
            super().__init__()
            self.lin = nn.Linear(n_in, 12)

        def forward(self, x):
            return torch.tanh(self.lin(x)).reshape(-1, 4, 3)

    model = SlimTrainRegressor(Sequence, head=nn.Linear(3, 2), max_iter=2, batch_size=8, random_state=0)
    model.fit(X, Y[:, :8])
    assert isinstance(model._head.layout, OperatorLayout) and model.predict(X).shape == (32, 8)
