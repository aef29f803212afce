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
- Decoders of a bitrate's own (``CodecConfig.rate_decoders``) can be added: each starts as a copy of the
  shared decoder, or of another codec's decoder trained on the same codes (:func:`add_rate_decoders`).
"""

from __future__ import annotations

import dataclasses

import torch

from audiokit.errors import ModelError
from audiokit.models.codec import Codec, CodecConfig

GROWABLE = ("n_blocks", "intermediate_dim", "head_hidden_dim")  # ISTFTDecoderConfig fields that can grow
# output layers of MLPs whose new hidden units must start silent
WIDENED_OUTPUTS = ("pwconv2.weight", "head.mlp.2.weight")


def grow_to(codec: Codec, config: CodecConfig) -> Codec:
    """``codec`` as a codec of architecture ``config``: itself, or grown (:func:`grow_decoder`) to fit.

    ``config`` may differ from ``codec.config`` only in its name, the training-only quantizer fields
    (``CodecConfig.training_only``; the two are compared by :meth:`~CodecConfig.architecture`), the
    decoder's growable sizes (:data:`GROWABLE`), ``rate_conditioned`` switched on and more
    ``rate_decoders``; anything else raises :class:`ModelError`.
    """
    current = codec.config
    if current.rate_conditioned and not config.rate_conditioned:
        raise ModelError(f"{current.name}: the weights are rate-conditioned, the architecture is not")
    if not set(current.rate_decoders) <= set(config.rate_decoders):
        raise ModelError(
            f"{current.name}: the weights have decoders for {list(current.rate_decoders)} codebooks, "
            f"the architecture for {list(config.rate_decoders)}"
        )
    if current.rate_decoders and config.decoder != current.decoder:
        raise ModelError(f"{current.name}: a codec with rate decoders cannot grow its decoder")
    comparable = dataclasses.replace(
        config, rate_conditioned=current.rate_conditioned, rate_decoders=current.rate_decoders
    )
    if comparable.decoder != current.decoder:
        if config.decoder_type != "istft" or current.decoder_type != "istft":
            raise ModelError(f"{current.name}: only an iSTFT decoder can grow")
        comparable.decoder = dataclasses.replace(
            config.decoder, **{key: getattr(current.decoder, key) for key in GROWABLE}
        )
    if comparable.architecture() != current.architecture():
        raise ModelError(f"{current.name}: the architecture differs beyond a larger iSTFT decoder")
    if config.decoder != current.decoder:
        codec = grow_decoder(codec, **{key: getattr(config.decoder, key) for key in GROWABLE})
    if config.rate_conditioned and not current.rate_conditioned:
        codec = add_rate_conditioning(codec)
    if config.rate_decoders != current.rate_decoders:
        codec = add_rate_decoders(codec, config.rate_decoders)
    return codec


def add_rate_decoders(
    codec: Codec, rate_decoders: tuple[int, ...], donors: dict[int, Codec] | None = None
) -> Codec:
    """A copy of ``codec`` with decoders of their own for the numbers of codebooks ``rate_decoders``
    (``codec.config.rate_decoders`` among them, which keep theirs).

    Each new one is a copy of ``donors[n]``'s shared decoder (a codec of the same codes, e.g. ``codec``
    trained on with its encoder and codebooks frozen and every item at ``n`` codebooks), or of
    ``codec``'s own shared decoder (the same audio until trained).
    """
    config = codec.config
    donors = donors or {}
    unused = sorted(set(donors) - set(rate_decoders))
    if unused:
        raise ModelError(
            f"{config.name}: decoders given for {unused} codebooks, not among {list(rate_decoders)}"
        )
    if not set(config.rate_decoders) <= set(rate_decoders):
        raise ModelError(
            f"{config.name}: rate_decoders {list(rate_decoders)} drop {list(config.rate_decoders)}"
        )
    target = Codec(dataclasses.replace(config, rate_decoders=tuple(sorted(rate_decoders))))
    missing, unexpected = target.load_state_dict(codec.state_dict(), strict=False)
    if unexpected or not all(key.startswith("rate_decoders.") for key in missing):
        raise ModelError(
            f"{config.name}: cannot add rate decoders (missing {missing}, unexpected {unexpected})"
        )
    for n in rate_decoders:
        donor = donors.get(n)
        if donor is not None:
            if donor.codes_sha256() != codec.codes_sha256() or donor.config.decoder != config.decoder:
                raise ModelError(
                    f"{config.name}: the decoder given for {n} codebooks belongs to a codec of other codes "
                    "or another decoder architecture"
                )
            source = donor.decoder
        elif n in config.rate_decoders:
            continue
        else:
            source = codec.decoder
        target.rate_decoders[str(n)].load_state_dict(source.state_dict())
    return target.train(codec.training)


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
