"""Model architectures, their named configurations and pretrained loading."""

from audiokit.models.classifier import AudioClassifier
from audiokit.models.codec import CONFIGS, Codec, CodecConfig, CodecOutput, Codes

__all__ = ["AudioClassifier", "CONFIGS", "Codec", "CodecConfig", "CodecOutput", "Codes"]
