"""Audio errors: each carries a message safe to show the client and its HTTP status."""

from __future__ import annotations


class AudioError(Exception):
    """Base of every audio input error; `message` is user-facing, `status_code` the HTTP status."""

    status_code: int = 400
    code: str = "invalid_audio"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyAudioError(AudioError):
    """The upload is empty or holds no audio samples."""

    status_code = 400
    code = "empty_audio"


class UndecodableAudioError(AudioError):
    """The upload looks like audio but cannot be decoded (corrupt, truncated header)."""

    status_code = 400
    code = "undecodable_audio"


class UnsupportedMediaError(AudioError):
    """The upload is not audio at all (image, archive, text, video without sound)."""

    status_code = 415
    code = "unsupported_media_type"


class AudioTooLongError(AudioError):
    """The decoded duration exceeds the configured limit (detected while decoding)."""

    status_code = 413
    code = "audio_too_long"

    def __init__(self, max_seconds: float) -> None:
        super().__init__(
            f"Audio is longer than the limit of {max_seconds:g} seconds; "
            "split it into shorter files."
        )
        self.max_seconds = max_seconds
