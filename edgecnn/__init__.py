"""edgecnn: from a CNN name or checkpoint to an app-ready, verified .tflite file.

>>> import edgecnn
>>> m = edgecnn.create_model("mobilenet_v2", alpha=0.75, num_classes=10, in_chans=1)
>>> edgecnn.model_stats(m, res=160).macs
"""

from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model, default_res, get_spec, list_models
from edgecnn.stats import ModelStats, model_stats

__version__ = "0.1.0"

__all__ = ["EdgeCNNError", "ModelStats", "create_model", "default_res", "get_spec", "list_models",
           "model_stats", "__version__"]
