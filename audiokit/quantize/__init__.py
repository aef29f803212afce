"""Vector quantization: single codebooks, residual stacks, and the bitrate mapping."""

from audiokit.quantize.rvq import (
    QuantizedResult,
    ResidualVectorQuantizer,
    bits_per_code,
    num_quantizers_for_bitrate,
    supported_bitrates,
)
from audiokit.quantize.vq import VectorQuantizer, VQOutput

__all__ = [
    "QuantizedResult",
    "ResidualVectorQuantizer",
    "VQOutput",
    "VectorQuantizer",
    "bits_per_code",
    "num_quantizers_for_bitrate",
    "supported_bitrates",
]
