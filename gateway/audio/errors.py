"""Audio errors: what is wrong with the input, with a message safe to show the client.

The audio package knows nothing of HTTP: the gateway maps each class to its status and
error code once (gateway/errors.py `audio_api_error`).
"""

from __future__ import annotations


class AudioError(Exception):
    """Base of every audio input error; `message` is user-facing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyAudioError(AudioError):
    """The upload is empty or holds no audio samples."""


class UndecodableAudioError(AudioError):
    """The upload looks like audio but cannot be decoded (corrupt, truncated header)."""


class NotAudioError(AudioError):
    """The upload is not audio at all (image, archive, text, video without sound)."""


class AudioTooLongError(AudioError):
    """The decoded duration exceeds the configured limit (detected while decoding)."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(
            f"Audio is longer than the limit of {max_seconds:g} seconds; "
            "split it into shorter files."
        )
        self.max_seconds = max_seconds
