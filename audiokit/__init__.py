"""audiokit: neural audio coding and real-time audio processing on PyTorch."""

__version__ = "0.1.0"
