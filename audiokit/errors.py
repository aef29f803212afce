"""One exception family per kind of user error.

Every message is a single line that says what was wrong, where, and (when possible) how to fix it.
The CLI prints it as ``audiokit: error: <message>`` and exits non-zero, never with a traceback.
"""

from __future__ import annotations


class AudiokitError(Exception):
    """Base class of every error caused by user input rather than by a bug."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class AudioFormatError(AudiokitError):
    """An audio file is missing, empty, truncated, unsupported, non-finite or has no samples."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep it picklable across worker processes
        return (type(self), (self.path, self.problem))


class BitstreamError(AudiokitError):
    """An ``.akc`` file is corrupt, truncated or of an unknown version (message names the byte offset)."""


class RecipeError(AudiokitError):
    """A training recipe has an unknown key, a wrong type or an invalid value."""


class UsageError(AudiokitError):
    """A command was called with arguments that cannot work together (e.g. mismatched files)."""


class TrainingError(AudiokitError):
    """A training run cannot go on (its gradients stayed NaN or infinite: it diverged)."""


class OutOfMemory(TrainingError):
    """A training step needed more memory than the device had (a smaller batch may fit)."""


class PeerStopped(TrainingError):
    """Another process of a DDP run (``torchrun``) stopped on an error, so this one stops too. The
    process that failed prints that error; the command line prints nothing for this one."""


class ToolMissingError(AudiokitError):
    """An external program (opusenc, ffmpeg, ...) is needed but not installed."""


class ModelError(AudiokitError):
    """A model name is unknown, or its weights/config are missing, corrupt or do not match."""
