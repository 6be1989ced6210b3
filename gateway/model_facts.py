"""What the served model takes, learned from Triton, checked against the gateway's settings.

The export records the longest audio piece, its sample rate and the pause that must end a piece
(`piece_pause_s`, empty for most models) in manifest.json; the repository fill writes them into
the audio ensembles' config `parameters` (model_repository/canary_qwen).
The gateway reads them at start-up: a `GATEWAY_LIMITS__PIECE_SECONDS` above the model's limit
(every long upload would fail piece by piece with a 400) or a sample rate other than the one the
gateway resamples to stops the start with a clear error. If Triton is not up yet, the first
readiness check that finds it ready does the same check, and the gateway stays unready on a
mismatch, saying why. Transcription asks for the model's cutting at every request
(`piece_pause_s`), which learns the facts then if nothing has yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from canary_qwen.mel import SAMPLE_RATE
from gateway.settings import Settings

log = logging.getLogger(__name__)

Check = Callable[[Sequence[str]], Awaitable[tuple[bool, str]]]
FetchParameters = Callable[[str], Awaitable[Mapping[str, str]]]


class ModelMismatchError(RuntimeError):
    """The gateway's settings do not fit the model Triton serves."""


@dataclass(frozen=True)
class ModelFacts:
    model: str
    max_audio_seconds: float
    sample_rate: int
    piece_pause_s: float | None = None  # every pause this long ends a piece (None: no such rule)

    @classmethod
    def from_parameters(cls, model: str, params: Mapping[str, str]) -> ModelFacts:
        try:
            pause = params["piece_pause_s"]
            facts = cls(model, float(params["max_audio_seconds"]), int(params["sample_rate"]),
                        float(pause) if pause else None)
            if facts.piece_pause_s is not None and not facts.piece_pause_s > 0:
                raise ValueError("piece_pause_s")
            return facts
        except (KeyError, ValueError) as exc:
            raise ModelMismatchError(
                f"Triton's {model} config lacks a valid {exc} parameter: fill the repository with this "
                "release's `python -m export repository`"
            ) from None


def check_settings(facts: ModelFacts, settings: Settings) -> None:
    """Raise ModelMismatchError saying what to change when the settings ask more than the model takes."""
    piece = settings.limits.piece_seconds
    if piece > facts.max_audio_seconds:
        raise ModelMismatchError(
            f"GATEWAY_LIMITS__PIECE_SECONDS={piece:g} is above the {facts.max_audio_seconds:g} s that "
            f"{facts.model} takes (its export's --max-audio-seconds): set it to at most {facts.max_audio_seconds:g}"
        )
    captions = settings.captions
    heard = captions.max_cue_s + 2 * captions.model_pad_s  # a cue and the pause the model hears around it
    if heard > facts.max_audio_seconds:
        raise ModelMismatchError(
            f"GATEWAY_CAPTIONS__MAX_CUE_S={captions.max_cue_s:g} with GATEWAY_CAPTIONS__MODEL_PAD_S="
            f"{captions.model_pad_s:g} on each side sends {heard:g} s a cue, above the {facts.max_audio_seconds:g} s "
            f"that {facts.model} takes: lower them"
        )
    if facts.sample_rate != SAMPLE_RATE:
        raise ModelMismatchError(
            f"{facts.model} takes {facts.sample_rate} Hz audio; this gateway sends {SAMPLE_RATE} Hz"
        )


class ModelFactsCheck:
    """Learns the facts once (at start-up, or when Triton first turns ready) and checks them."""

    def __init__(self, fetch: FetchParameters, settings: Settings) -> None:
        self._fetch = fetch
        self._settings = settings
        self._model = settings.triton.asr_model
        self.facts: ModelFacts | None = None
        self._mismatch: str | None = None

    async def _learn(self) -> None:
        self.facts = ModelFacts.from_parameters(self._model, await self._fetch(self._model))
        check_settings(self.facts, self._settings)
        log.info("%s takes pieces up to %g s at %d Hz", self._model, self.facts.max_audio_seconds, SAMPLE_RATE)

    async def _try_learn(self) -> str | None:
        """Learn the facts: None when they fit the settings, else why not (a mismatch is kept)."""
        try:
            await self._learn()
        except ModelMismatchError as exc:
            self._mismatch = str(exc)
            log.error("%s", exc)
            return self._mismatch
        except Exception as exc:  # not up yet: unreachable, or the model not loaded
            return f"could not read {self._model}'s limits: {exc}"
        return None

    async def piece_pause_s(self) -> float | None:
        """The model's `piece_pause_s`, learned now if the facts are not known yet (None while
        Triton cannot say: the default cutting)."""
        if self.facts is None and self._mismatch is None:
            reason = await self._try_learn()
            if reason is not None and self._mismatch is None:
                log.warning("%s", reason)
        return self.facts.piece_pause_s if self.facts else None

    async def at_startup(self) -> None:
        """Check now if Triton answers (a mismatch raises: the start fails); else leave it to readiness."""
        try:
            await self._learn()
        except ModelMismatchError:
            raise
        except Exception as exc:  # not up yet: unreachable, or the model not loaded
            log.warning("could not read %s's limits from Triton yet (%s); checking when it is ready", self._model, exc)

    def guard(self, check: Check) -> Check:
        """`check` (readiness), also false with the reason while the facts do not fit the settings."""

        async def guarded(models: Sequence[str]) -> tuple[bool, str]:
            if self._mismatch is not None:
                return False, self._mismatch
            ready, reason = await check(models)
            if not ready or self.facts is not None:
                return ready, reason
            failure = await self._try_learn()
            return (False, failure) if failure is not None else (ready, reason)

        return guarded
