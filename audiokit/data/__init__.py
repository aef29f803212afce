"""Real-audio data preparation: fetch allowlisted Debian packages, decode, trim, resample, write manifests."""
