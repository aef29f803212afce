"""Neural building blocks: exact-length streamable convs, Snake, LSTM, SEANet, STFT encoder, Vocos decoder.

Every block owns its offline ``forward`` and, in causal mode, its streaming step
(:class:`~audiokit.nn.streaming.StreamingModule`: ``init_state`` / ``step`` / ``step_t``) with a typed,
row-addressable state (:mod:`audiokit.nn.state`): conv history (``kernel - stride`` input samples per
conv), transposed-conv / overlap-add tails and LSTM ``(h, c)``. See :mod:`audiokit.nn.conv` for the
length and latency rules and :mod:`audiokit.nn.streaming` for the streaming contract.
"""

from audiokit.nn.activations import Snake, make_activation
from audiokit.nn.conv import StreamableConv1d, StreamableConvTranspose1d, apply_norm, remove_weight_norm
from audiokit.nn.lstm import StreamableLSTM
from audiokit.nn.seanet import ResidualUnit, SEANetDecoder, SEANetEncoder
from audiokit.nn.stft_encoder import CausalSTFT, STFTEncoder
from audiokit.nn.streaming import StreamingModule, StreamingSequential
from audiokit.nn.vocos import CausalISTFTHead, ConvNeXtBlock, ISTFTDecoder

__all__ = [
    "CausalISTFTHead",
    "CausalSTFT",
    "ConvNeXtBlock",
    "ISTFTDecoder",
    "ResidualUnit",
    "SEANetDecoder",
    "SEANetEncoder",
    "STFTEncoder",
    "Snake",
    "StreamableConv1d",
    "StreamableConvTranspose1d",
    "StreamableLSTM",
    "StreamingModule",
    "StreamingSequential",
    "apply_norm",
    "make_activation",
    "remove_weight_norm",
]
