"""edgecnn: from a CNN name or checkpoint to an app-ready, verified .tflite file.

>>> import edgecnn
>>> m = edgecnn.create_model("mobilenet_v2", alpha=0.75, num_classes=10, in_chans=1)
>>> edgecnn.model_stats(m, res=160).macs
"""

from edgecnn.errors import EdgeCNNError

__version__ = "0.1.0"

# Public names, imported on first use: `import edgecnn` stays light (no torch), which keeps the
# child processes that inspect untrusted files or run benchmark points fast to start.
_LAZY = {
    "create_model": "edgecnn.weights", "default_res": "edgecnn.models", "get_spec": "edgecnn.models",
    "list_models": "edgecnn.models", "ModelStats": "edgecnn.stats", "model_stats": "edgecnn.stats",
    "export": "edgecnn.pipelines.export", "ExportReport": "edgecnn.pipelines.export",
    "ExportOptions": "edgecnn.pipelines.export", "ModelRequest": "edgecnn.pipelines.export", "load_weights": "edgecnn.weights",
    "load_checkpoint": "edgecnn.weights", "imagenet_labels": "edgecnn.labels",
}

__all__ = ["EdgeCNNError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
