"""Model architectures, their named configurations and pretrained loading."""

from audiokit.models.codec import CONFIGS, Codec, CodecConfig, CodecOutput, Codes

__all__ = ["CONFIGS", "Codec", "CodecConfig", "CodecOutput", "Codes"]
