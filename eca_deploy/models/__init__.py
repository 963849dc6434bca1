"""ECA models: the layer, ECA-ResNet / ECA-MobileNetV2, the registry and checkpoint loading."""

from .eca import EcaLayer, adaptive_kernel_size
from .loader import TIMM_PREFIX, LoadedModel, eca_blocks, k_per_stage, load_model, photo_like_batch
from .registry import create_model, get_spec, list_models, register_model

__all__ = [
    "EcaLayer", "adaptive_kernel_size", "TIMM_PREFIX", "LoadedModel", "eca_blocks", "k_per_stage", "load_model", "photo_like_batch",
    "create_model", "get_spec", "list_models", "register_model",
]
