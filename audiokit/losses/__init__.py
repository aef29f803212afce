"""Training losses: spectral reconstruction, adversarial, feature matching, discriminators, balancer."""

from audiokit.losses.adversarial import discriminator_loss, feature_matching_loss, generator_loss
from audiokit.losses.balancer import Balancer
from audiokit.losses.discriminators import (
    BandSplitSTFTDiscriminator,
    CombinedDiscriminator,
    MultiBandMultiResolutionDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    PeriodDiscriminator,
    STFTDiscriminator,
)
from audiokit.losses.spectral import (
    CompressedComplexSTFTLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    PhaseDerivativeLoss,
    time_l1_loss,
)

__all__ = [
    "BandSplitSTFTDiscriminator",
    "Balancer",
    "CombinedDiscriminator",
    "CompressedComplexSTFTLoss",
    "MultiBandMultiResolutionDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "MultiScaleSTFTDiscriminator",
    "PeriodDiscriminator",
    "PhaseDerivativeLoss",
    "STFTDiscriminator",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_loss",
    "time_l1_loss",
]
