"""
A convolutional autoencoder whose last layer is solved, not trained
===================================================================

The paper's third experiment (section 4.3): an autoencoder whose final layer is a
transposed convolution.  That layer is linear in its 129 weights (here 8 channels x
4 x 4 taps + a bias), so :class:`~sklearn_slimtrain.SlimTrainRegressor` solves it by
slimTik with the sGCV ridge at every batch, exactly as it solves a dense head; only the
encoder and the rest of the decoder are trained by Adam.  ``X`` and ``y`` stay 2-D
(flat 8x8 images), so the model is an ordinary scikit-learn regressor of ``X`` onto
itself.  ``benchmarks/autoencoder.py`` compares it with Adam on the same network
(Figures 8 and 10 of the paper).
"""

# %%
# The network and the fit
# -----------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from sklearn_slimtrain import ConvAutoencoderFeatures, SlimTrainRegressor
from sklearn_slimtrain.plotting import plot_loss_curve, plot_ridge_path

X = load_digits().data / 16.0  # 1,797 images of 8x8 pixels, as rows of 64 values in [0, 1]
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)

torch.manual_seed(0)
extractor = ConvAutoencoderFeatures((8, 8), width=8, latent_dim=16)  # ends in (n, 8, 4, 4)
model = SlimTrainRegressor(
    extractor,
    head=extractor.final_layer(),  # ConvTranspose2d(8, 1, 4, stride=2, padding=1): (n, 1, 8, 8)
    memory_depth=5,
    ridge_init=0.1,
    max_iter=8,
    random_state=0,
)
model.fit(X_train, X_train)
# ``score`` averages R2 over the 64 pixels, and the border pixels are nearly constant
# (a tiny error there gives a very negative R2), so weight the pixels by their variance.
pred = model.predict(X_test)
print(f"test loss (1/N) sum 1/2 ||x_hat - x||^2: {0.5 * ((pred - X_test) ** 2).sum(1).mean():.3f}; "
      f"predicting the mean image: {0.5 * ((X_train.mean(0) - X_test) ** 2).sum(1).mean():.3f}")
print(f"variance-weighted test R2: {r2_score(X_test, pred, multioutput='variance_weighted'):.3f}")
print(f"the solved layer: {model.head_}")

# %%
# Reconstructions of test images
# ------------------------------
recon = model.predict(X_test[:8])
fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
for j in range(8):
    axes[0, j].imshow(X_test[j].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
    axes[1, j].imshow(np.clip(recon[j], 0, 1).reshape(8, 8), cmap="gray", vmin=0, vmax=1)
for ax in axes.ravel():
    ax.set_axis_off()
axes[0, 0].set_title("test images", loc="left", fontsize=9)
axes[1, 0].set_title("reconstructions", loc="left", fontsize=9)
fig.tight_layout()

# %%
# Training loss and the ridge chosen at every step
# ------------------------------------------------
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_loss_curve(model, ax=axes[0])
plot_ridge_path(model, ax=axes[1])
fig.tight_layout()
plt.show()
