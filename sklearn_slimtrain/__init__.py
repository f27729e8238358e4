"""slimTrain for scikit-learn: separable networks with a slimTik head and sGCV ridge."""

from ._estimator import SlimTrainRegressor
from ._extractors import ConvAutoencoderFeatures, ResNetFeatures

__all__ = ["ConvAutoencoderFeatures", "ResNetFeatures", "SlimTrainRegressor", "__version__"]
__version__ = "0.1.0"
