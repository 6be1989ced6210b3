"""espeak-ng's C library through ctypes: speech with the time each word starts.

The `espeak-ng` command line writes the same engine's audio but no timing. The library's
synchronous mode hands back audio blocks with WORD events (character offset and the sample
where the word starts), which give the training set word-aligned frame labels.
Layouts and constants: /usr/include/espeak-ng/speak_lib.h (espeak-ng 1.51, Debian 12).
The library is process-global and not thread-safe: one `Synthesizer` per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1
_RATE, _PITCH = 1, 3
_POS_CHARACTER = 1
_EE_OK = 0
_CHARS_UTF8 = 1
# espeak_TextToPhonemes' phonememode: ASCII names, bits 8-23 the character between them.
_PHONEME_SEPARATOR = ord(" ") << 8
_STRESS = "',"  # primary and secondary stress, written before a syllable's vowel
_PAUSES = frozenset({"_", "_:", "_!", "_|", "_!_:", "||", "|"})


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset of the word
        ("length", ctypes.c_int),  # the word's length in characters (espeak's idea of a word)
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples from the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


class _VoiceSelect(ctypes.Structure):  # espeak_VOICE, as a selection by language
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    pass


@dataclass(frozen=True)
class Word:
    start_char: int  # 0-based offset into the text
    start_sample: int  # at the library's sample rate


class Synthesizer:
    """Speech and word start times from libespeak-ng (16-bit mono at `sample_rate`)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self._lib = ctypes.CDLL(name)
        except OSError as e:
            raise EspeakError(f"cannot load {name}: install espeak-ng (Debian: libespeak-ng1)") from e
        # espeak_Synth(text, size_t size, position, position_type, end_position, flags, *id, *user)
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT))
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({self.sample_rate})")
        self._blocks: list[np.ndarray] = []
        self._words: list[Word] = []
        self._callback = _CALLBACK(self._on_audio)  # kept referenced: the library holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        # const char *espeak_TextToPhonemes(const void **textptr, int textmode, int phonememode)
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]

    def _on_audio(self, wav: ctypes._Pointer, samples: int, events: ctypes._Pointer) -> int:
        if samples > 0:
            self._blocks.append(np.ctypeslib.as_array(wav, shape=(samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            # Text positions count from 1; espeak also sends a WORD event at position 0 after
            # some sentences' last word, which is no word.
            if e.type == _EVENT_WORD and e.text_position > 0:
                self._words.append(Word(e.text_position - 1, e.sample))
            i += 1
        return 0

    def _set_voice(self, voice: str) -> None:
        # As the espeak-ng command line does: a voice file's name first, else a language
        # ("en-gb", "en-gb+m3"), which names most accents.
        if self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return
        select = _VoiceSelect(languages=voice.encode())
        if (err := self._lib.espeak_SetVoiceByProperties(ctypes.byref(select))) != _EE_OK:
            raise EspeakError(f"no espeak-ng voice {voice!r} ({err})")

    def phonemes(self, text: str, voice: str) -> list[str]:
        """The phonemes espeak says for `text` in `voice`'s accent: its own ASCII phoneme names,
        stress marks and pauses left out (what the audio holds, whatever the stress)."""
        if not text.isascii():
            raise EspeakError("only ASCII text")
        self._set_voice(voice)
        pointer = ctypes.c_char_p(text.encode())
        out: list[str] = []
        while pointer.value:  # one clause a call; the library moves the pointer on
            clause = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_SEPARATOR)
            for name in (clause or b"").decode("ascii", "replace").split():
                bare = name.strip(_STRESS)
                if bare and bare not in _PAUSES:
                    out.append(bare)
        return out

    def speak(self, text: str, voice: str, words_per_minute: int, pitch: int) -> tuple[np.ndarray, list[Word]]:
        """float32 audio in [-1, 1) and the words in the order spoken."""
        if not text.isascii():
            raise EspeakError("only ASCII text: word offsets are counted in characters of the UTF-8 bytes")
        self._blocks, self._words = [], []
        self._set_voice(voice)
        for parameter, value in ((_RATE, words_per_minute), (_PITCH, pitch)):
            if (err := self._lib.espeak_SetParameter(parameter, value, 0)) != _EE_OK:
                raise EspeakError(f"espeak_SetParameter({parameter}, {value}) failed ({err})")
        data = text.encode()
        err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        if err != _EE_OK or self._lib.espeak_Synchronize() != _EE_OK:
            raise EspeakError(f"espeak_Synth failed ({err}) for {text!r}")
        audio = np.concatenate(self._blocks).astype(np.float32) / 32768 if self._blocks else np.zeros(0, np.float32)
        return audio, list(self._words)
