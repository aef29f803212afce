"""Model families (one interface: :class:`AudioModel`), their named configs and pretrained loading."""

from audiokit.models.base import (
    WEIGHTS_DIR,
    AudioModel,
    ModelConfig,
    is_shipped,
    registered_names,
    resolve_config,
    resolve_weights,
)
from audiokit.models.classifier import AudioClassifier
from audiokit.models.codec import (
    CONFIGS,
    Codec,
    CodecConfig,
    CodecOutput,
    Codes,
    ISTFTDecoderConfig,
    SEANetConfig,
    STFTEncoderConfig,
)

__all__ = [
    "CONFIGS",
    "WEIGHTS_DIR",
    "AudioClassifier",
    "AudioModel",
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "Codes",
    "ISTFTDecoderConfig",
    "ModelConfig",
    "SEANetConfig",
    "STFTEncoderConfig",
    "is_shipped",
    "registered_names",
    "resolve_config",
    "resolve_weights",
]
