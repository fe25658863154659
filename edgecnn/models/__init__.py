"""The model zoo: one file per family, all registered by name in :mod:`edgecnn.models.registry`."""

from edgecnn.models import mobilenet_v2  # noqa: F401  (registers its variants)
from edgecnn.models import efficientnet, mobilenet_v1, mobilenet_v3, shufflenet_v2, squeezenet  # noqa: F401,E501
from edgecnn.models.registry import (
    ModelConfig,
    ModelSpec,
    create_model,
    default_res,
    get_spec,
    list_aliases,
    list_models,
)

__all__ = ["ModelConfig", "ModelSpec", "create_model", "default_res", "get_spec", "list_aliases",
           "list_models"]
