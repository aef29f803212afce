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
from audiokit.models.bwe import BandwidthExtender, BandwidthExtenderConfig
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
from audiokit.models.enhancer import Enhancer, EnhancerConfig

__all__ = [
    "CONFIGS",
    "WEIGHTS_DIR",
    "AudioClassifier",
    "AudioModel",
    "BandwidthExtender",
    "BandwidthExtenderConfig",
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "Codes",
    "Enhancer",
    "EnhancerConfig",
    "ISTFTDecoderConfig",
    "ModelConfig",
    "SEANetConfig",
    "STFTEncoderConfig",
    "is_shipped",
    "registered_names",
    "resolve_config",
    "resolve_weights",
]
