"""ECA models: the layer, ECA-ResNet / ECA-MobileNetV2, the registry and checkpoint loading.

Importing the package imports the model families, whose ``@register_model`` decorators fill the
registry (the registry itself imports no model file, as in timm).
"""

from . import mobilenetv2, resnet  # noqa: F401  (registers the families)
from .base import TIMM_PREFIX, LoadedModel, ModelSpec, eca_blocks, float64_logits
from .eca import EcaLayer, adaptive_kernel_size
from .loader import k_per_stage, load_model
from .random_init import photo_like_batch
from .registry import create_model, get_spec, list_models, register_model

__all__ = [
    "TIMM_PREFIX", "EcaLayer", "adaptive_kernel_size", "LoadedModel", "ModelSpec", "eca_blocks", "float64_logits", "k_per_stage",
    "load_model", "photo_like_batch", "create_model", "get_spec", "list_models", "register_model",
]
