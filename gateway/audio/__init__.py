"""Audio input for the gateway: safe decoding, voice activity detection, cutting at pauses.

Everything here is CPU-bound and blocking; async callers run it in a worker thread.
"""

from gateway.audio.cutting import CutOptions, Piece, has_speech, split_on_pauses
from gateway.audio.decode import DecodedAudio, decode_audio
from gateway.audio.errors import (
    AudioError,
    AudioTooLongError,
    EmptyAudioError,
    NotAudioError,
    UndecodableAudioError,
)
from gateway.audio.vad import SileroVad, SpeechSegment, VadOptions, shared_vad

__all__ = [
    "AudioError",
    "AudioTooLongError",
    "CutOptions",
    "DecodedAudio",
    "EmptyAudioError",
    "NotAudioError",
    "Piece",
    "SileroVad",
    "SpeechSegment",
    "UndecodableAudioError",
    "VadOptions",
    "decode_audio",
    "has_speech",
    "shared_vad",
    "split_on_pauses",
]
