"""Function-preserving growth of a trained codec's iSTFT decoder (deeper and wider ConvNeXt).

A codec trained with a small decoder can continue training with a larger one without starting over:
:func:`grow_decoder` returns a codec whose decoder has more ConvNeXt blocks and/or wider block MLPs
and that computes *exactly* the same audio as the original, so training resumes where it stood and
the new capacity is learnt from there (Net2Net-style growth).

- New blocks go after the existing ones (before the final LayerNorm) with ``gamma = 0``: each is the
  identity until its layer scale moves away from zero.
- A widened MLP (a block's, or the iSTFT head's hidden layer, which a linear head lacks: width 0)
  keeps the trained units and adds new ones with freshly initialised input weights and zero output
  weights, so they add nothing until trained.
- Rate conditioning (``CodecConfig.rate_conditioned``) can be switched on: its per-bitrate scales and
  shifts start at the identity (:func:`add_rate_conditioning`).
"""

from __future__ import annotations

import dataclasses

import torch

from audiokit.errors import ModelError
from audiokit.models.codec import Codec, CodecConfig

GROWABLE = ("n_blocks", "intermediate_dim", "head_hidden_dim")  # ISTFTDecoderConfig fields that can grow
# output layers of MLPs whose new hidden units must start silent
WIDENED_OUTPUTS = ("pwconv2.weight", "head.mlp.2.weight")
# quantizer fields that change how a codec trains, not what its weights compute
TRAINING_ONLY = (
    "quantizer_dropout",
    "quantizer_dropout_choices",
    "dead_code_threshold",
    "duplicate_cosine",
    "duplicate_distance",
)


def grow_to(codec: Codec, config: CodecConfig) -> Codec:
    """``codec`` as a codec of architecture ``config``: itself, or grown (:func:`grow_decoder`) to fit.

    ``config`` may differ from ``codec.config`` only in its name, the training-only quantizer fields
    (:data:`TRAINING_ONLY`), the decoder's growable sizes (:data:`GROWABLE`) and ``rate_conditioned``
    switched on; anything else raises :class:`ModelError`.
    """
    current = codec.config
    if current.rate_conditioned and not config.rate_conditioned:
        raise ModelError(f"{current.name}: the weights are rate-conditioned, the architecture is not")
    comparable = dataclasses.replace(
        config,
        name=current.name,
        rate_conditioned=current.rate_conditioned,
        **{key: getattr(current, key) for key in TRAINING_ONLY},
    )
    if comparable.decoder != current.decoder:
        if config.decoder_type != "istft" or current.decoder_type != "istft":
            raise ModelError(f"{current.name}: only an iSTFT decoder can grow")
        comparable.decoder = dataclasses.replace(
            config.decoder, **{key: getattr(current.decoder, key) for key in GROWABLE}
        )
    if comparable != current:
        raise ModelError(f"{current.name}: the architecture differs beyond a larger iSTFT decoder")
    if config.decoder != current.decoder:
        codec = grow_decoder(codec, **{key: getattr(config.decoder, key) for key in GROWABLE})
    if config.rate_conditioned and not current.rate_conditioned:
        codec = add_rate_conditioning(codec)
    return codec


def add_rate_conditioning(codec: Codec) -> Codec:
    """A copy of ``codec`` with ``rate_conditioned`` on, its scales 1 and shifts 0: the same audio."""
    conditioned = Codec(dataclasses.replace(codec.config, rate_conditioned=True))
    missing, unexpected = conditioned.load_state_dict(codec.state_dict(), strict=False)
    if unexpected or set(missing) != {"rate_scale", "rate_shift"}:
        raise ModelError(f"{codec.config.name}: cannot add rate conditioning (missing {missing})")
    return conditioned


def grow_decoder(codec: Codec, seed: int = 0, **sizes: int) -> Codec:
    """A copy of ``codec`` whose iSTFT decoder has the larger ``sizes`` (keys of :data:`GROWABLE`).

    E.g. ``grow_decoder(codec, n_blocks=10, intermediate_dim=1152, head_hidden_dim=1024)``. No size may
    shrink. The result decodes every code to the same samples as ``codec`` (up to float rounding);
    ``seed`` fixes the initialisation of the new units.
    """
    config = codec.config
    if config.decoder_type != "istft":
        raise ModelError(f"{config.name}: only an iSTFT decoder can grow, not {config.decoder_type!r}")
    unknown = set(sizes) - set(GROWABLE)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ModelError(f"{config.name}: cannot grow {names}; only {', '.join(GROWABLE)}")
    current = {key: getattr(config.decoder, key) for key in GROWABLE}
    shrinking = [f"{key} {current[key]} -> {value}" for key, value in sizes.items() if value < current[key]]
    if shrinking:
        raise ModelError(f"{config.name}: a decoder can only grow, not shrink ({', '.join(shrinking)})")
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        grown = Codec(dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, **sizes)))
    source = codec.state_dict()
    target = grown.state_dict()  # views of grown's tensors: edited in place
    with torch.no_grad():
        for key, value in target.items():
            if key not in source:
                continue
            trained = source[key]
            if trained.shape != value.shape and key.endswith(WIDENED_OUTPUTS):
                value.zero_()  # new units output nothing
            value[tuple(slice(0, n) for n in trained.shape)] = trained
        for block in grown.decoder.blocks[current["n_blocks"] :]:
            block.gamma.zero_()  # a new block is the identity
    return grown
