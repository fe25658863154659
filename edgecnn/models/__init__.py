"""The model zoo: one file per family, all registered by name in :mod:`edgecnn.models.registry`."""

# Import order is registration order, i.e. the order of 'edgecnn models'.
from edgecnn.models import mobilenet_v1  # noqa: F401,I001  (registers its variants)
from edgecnn.models import mobilenet_v2  # noqa: F401  (registers its variants)
from edgecnn.models import mobilenet_v3, efficientnet, squeezenet, shufflenet_v2  # noqa: F401,I001
# Reference models from CNN history, in order of publication.
from edgecnn.models import lenet, alexnet, vgg, googlenet, inception, resnet, densenet  # noqa: F401,I001
from edgecnn.models import convnext  # noqa: F401,I001
# Transformers.
from edgecnn.models import vit, mobilevit  # noqa: F401,I001
from edgecnn.models.registry import (
    ModelConfig,
    ModelSpec,
    canonical_name,
    create_model,
    default_res,
    get_spec,
    list_aliases,
    list_models,
)

__all__ = ["ModelConfig", "ModelSpec", "canonical_name", "create_model", "default_res", "get_spec", "list_aliases",
           "list_models"]
