"""edgecnn: from a CNN name or checkpoint to an app-ready, verified .tflite file.

>>> import edgecnn
>>> m = edgecnn.create_model("mobilenet_v2", alpha=0.75, num_classes=10, in_chans=1)
>>> edgecnn.model_stats(m, res=160).macs
"""

from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model, default_res, get_spec, list_models
from edgecnn.stats import ModelStats, model_stats

__version__ = "0.1.0"

__all__ = ["EdgeCNNError", "ExportReport", "ModelStats", "create_model", "default_res", "export",
           "get_spec", "imagenet_labels", "list_models", "load_checkpoint", "load_weights",
           "model_stats", "__version__"]

# Heavier entry points, imported on first use so that `import edgecnn` stays light.
_LAZY = {"export": "edgecnn.export", "ExportReport": "edgecnn.export",
         "load_weights": "edgecnn.weights", "load_checkpoint": "edgecnn.checkpoint",
         "imagenet_labels": "edgecnn.labels"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")
