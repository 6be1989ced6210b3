"""`/v1/realtime?intent=transcription` against the real gateway and Triton (session fixtures).

The official `openai` SDK's realtime clients (GA `client.realtime` and `client.beta.realtime`)
and raw `websockets` clients stream espeak-ng speech as base64 pcm16: utterances come back
in order with offsets where they were spoken; manual commits; every malformed event gets
an `error` event and the session stays usable; keys are checked like HTTP.
Words are judged in one place (`check_transcripts`, against tests/fixtures/words.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.fixtures.gateway import GATEWAY_API_KEY, MODEL_ID
from tests.fixtures.realtime import OPENAI_RATE, SpokenScript, check_transcripts, paced, pcm16_chunks

PATH = "/v1/realtime?intent=transcription"
AUTH = {"Authorization": f"Bearer {GATEWAY_API_KEY}"}
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
CHUNK_MS = 100
# Transcripts of the random model run to the token limit: slow on 2 loaded cores.
RESULT_TIMEOUT_S = 240.0
PREFIX_MS = 300
# Offsets: an utterance starts up to the prefix padding (plus a frame or two) before its
# first audible sample and ends within the end pad (0.1 s) plus a frame after its last.
START_EARLY_S, START_LATE_S = PREFIX_MS / 1000 + 0.15, 0.15
END_EARLY_S, END_LATE_S = 0.25, 0.35


def ws_base(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1)


def ga_update(rate: int = OPENAI_RATE, turn_detection: dict[str, Any] | None | str = "vad") -> dict[str, Any]:
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": rate},
        "transcription": {"model": MODEL_ID, "language": "en"},
    }
    if turn_detection == "vad":
        turn_detection = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": PREFIX_MS,
                          "silence_duration_ms": 500}
    audio_input["turn_detection"] = turn_detection
    return {"type": "transcription", "audio": {"input": audio_input}}


async def next_event(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def events_until(
    ws: ClientConnection, kind: str, count: int = 1, timeout: float = RESULT_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Every event up to and including the `count`-th of type `kind`."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while sum(1 for event in seen if event["type"] == kind) < count:
        seen.append(await next_event(ws, max(0.1, deadline - time.monotonic())))
    return seen


def check_offsets(script: SpokenScript, completed: list[dict[str, Any]]) -> None:
    assert len(completed) == len(script.segments), [e["audio_start_ms"] for e in completed]
    for segment, event in zip(script.segments, completed, strict=True):
        start, end = event["audio_start_ms"] / 1000, event["audio_end_ms"] / 1000
        assert segment.start_s - START_EARLY_S <= start <= segment.start_s + START_LATE_S, (segment, start)
        assert segment.end_s - END_EARLY_S <= end <= segment.end_s + END_LATE_S, (segment, end)
        assert event["usage"] == {"type": "duration", "seconds": pytest.approx(end - start, abs=0.002)}


def check_item_flow(events: list[dict[str, Any]], vad: bool) -> list[dict[str, Any]]:
    """Per item: (speech_started, speech_stopped,) committed, deltas, completed, in that order;
    items chained by previous_item_id and completed in commit order. Returns the completions."""
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    completed = [e for e in events if e["type"] == COMPLETED]
    assert [e["item_id"] for e in completed] == [e["item_id"] for e in committed]
    assert len({e["item_id"] for e in committed}) == len(committed)
    previous = None
    for commit in committed:
        assert commit["previous_item_id"] == previous
        previous = commit["item_id"]
        item_events = [e["type"] for e in events if e.get("item_id") == commit["item_id"]]
        expected_head = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"] if vad else []
        assert item_events[: len(expected_head) + 1] == [*expected_head, "input_audio_buffer.committed"]
        assert item_events[-1] == COMPLETED
        assert set(item_events[len(expected_head) + 1 : -1]) <= {DELTA}
        deltas = "".join(e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == commit["item_id"])
        done = next(e for e in completed if e["item_id"] == commit["item_id"])
        assert deltas == done["transcript"]
        assert done["content_index"] == 0
    return completed


# ----------------------------------------------------------------------------- official SDK


async def test_sdk_realtime_server_vad_real_time_paced(gateway_server: str, realtime_script: SpokenScript) -> None:
    """GA client.realtime: 24 kHz pcm16 at real-time pace, turns found by server_vad."""
    client = openai.AsyncOpenAI(base_url=f"{gateway_server}/v1", websocket_base_url=f"{ws_base(gateway_server)}/v1",
                                api_key=GATEWAY_API_KEY, max_retries=0)
    chunks = list(pcm16_chunks(realtime_script.pcm16(OPENAI_RATE), OPENAI_RATE, CHUNK_MS))
    events: list[dict[str, Any]] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        await connection.session.update(session=ga_update())  # type: ignore[arg-type]
        updated = await connection.recv()
        assert updated.type == "session.updated"
        assert updated.to_dict()["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500

        async def read() -> None:
            async for event in connection:
                events.append(event.to_dict())
                if sum(1 for e in events if e["type"] == COMPLETED) == len(realtime_script.segments):
                    return

        reader = asyncio.create_task(read())
        async for chunk in paced(chunks, CHUNK_MS):
            await connection.input_audio_buffer.append(audio=chunk)
        await asyncio.wait_for(reader, RESULT_TIMEOUT_S)
    assert not [e for e in events if e["type"] == "error"], events
    completed = check_item_flow(events, vad=True)
    check_offsets(realtime_script, completed)
    check_transcripts(realtime_script, [e["transcript"] for e in completed])
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    assert [e["audio_start_ms"] for e in started] == [e["audio_start_ms"] for e in completed]


async def test_sdk_beta_manual_commits_at_16_khz(gateway_server: str, realtime_script: SpokenScript) -> None:
    """client.beta.realtime: transcription_session.update, turn_detection null, 16 kHz, two commits."""
    client = openai.AsyncOpenAI(base_url=f"{gateway_server}/v1", websocket_base_url=f"{ws_base(gateway_server)}/v1",
                                api_key=GATEWAY_API_KEY, max_retries=0)
    pcm = realtime_script.pcm16(16000)
    cut = int((realtime_script.segments[0].end_s + realtime_script.segments[1].start_s) / 2 * 16000)
    events: list[dict[str, Any]] = []
    async with client.beta.realtime.connect(model=MODEL_ID, extra_query={"intent": "transcription"}) as connection:
        created = json.loads(await connection.recv_bytes())
        assert created["type"] == "session.created"
        assert created["session"]["input_audio_format"] == "pcm16"  # the beta dialect (OpenAI-Beta header)
        await connection.transcription_session.update(session={  # type: ignore[arg-type]
            "input_audio_format": {"type": "audio/pcm", "rate": 16000},
            "input_audio_transcription": {"language": "en"}, "turn_detection": None,
        })
        updated = json.loads(await connection.recv_bytes())
        assert updated["type"] == "transcription_session.updated", updated
        assert updated["session"]["turn_detection"] is None
        for part in (pcm[:cut], pcm[cut:]):
            for chunk in pcm16_chunks(part, 16000, 500):  # faster than real time: no VAD involved
                await connection.input_audio_buffer.append(audio=chunk)
            await connection.input_audio_buffer.commit()
        while sum(1 for e in events if e["type"] == COMPLETED) < 2:
            events.append(json.loads(await asyncio.wait_for(connection.recv_bytes(), RESULT_TIMEOUT_S)))
    completed = check_item_flow(events, vad=False)
    assert [(e["audio_start_ms"], e["audio_end_ms"]) for e in completed] == [
        (0, round(cut / 16)), (round(cut / 16), round(pcm.size / 16))]
    check_transcripts(realtime_script, [e["transcript"] for e in completed])


# ----------------------------------------------------------------------------- raw clients


async def test_server_vad_faster_than_real_time_and_clear(gateway_server: str, realtime_script: SpokenScript) -> None:
    """VAD works on the audio's own timeline: 4x real time gives the same turns; clear drops the buffer."""
    async with connect(f"{ws_base(gateway_server)}{PATH}", additional_headers=AUTH) as ws:
        assert (await next_event(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": ga_update(16000)}))
        assert (await next_event(ws))["type"] == "session.updated"
        # Half a sentence, then clear: nothing of it may be committed.
        first = realtime_script.segments[0]
        pcm = realtime_script.pcm16(16000)
        head = pcm[: int((first.start_s + 0.5) * 16000)]
        for chunk in pcm16_chunks(head, 16000, CHUNK_MS):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        cleared = await events_until(ws, "input_audio_buffer.cleared")
        assert not [e for e in cleared if e["type"] == "input_audio_buffer.committed"]
        offset_s = head.size / 16000
        async for chunk in paced(list(pcm16_chunks(pcm, 16000, CHUNK_MS)), CHUNK_MS, speed=4.0):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        events = await events_until(ws, COMPLETED, len(realtime_script.segments))
    events = [e for e in events if e["type"] != "input_audio_buffer.speech_started" or e["item_id"] in
              {c["item_id"] for c in events if c["type"] == "input_audio_buffer.committed"}]
    completed = check_item_flow(events, vad=True)
    shifted = [{**e, "audio_start_ms": e["audio_start_ms"] - offset_s * 1000,
                "audio_end_ms": e["audio_end_ms"] - offset_s * 1000} for e in completed]
    for event in shifted:  # usage is checked against the unshifted span
        event["usage"] = {"type": "duration", "seconds": (event["audio_end_ms"] - event["audio_start_ms"]) / 1000}
    check_offsets(realtime_script, shifted)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


BAD_EVENTS: list[tuple[str, str | bytes, str, str | None]] = [
    # (case, message, expected error code, expected param)
    ("not json", "{nope", "invalid_json", None),
    ("json array", "[1, 2]", "invalid_json", None),
    ("no type", json.dumps({"event_id": "evt_1"}), "missing_required_parameter", "type"),
    ("unknown type", json.dumps({"type": "response.create"}), "invalid_value", "type"),
    ("append without audio", json.dumps({"type": "input_audio_buffer.append"}), "missing_required_parameter", "audio"),
    ("bad base64", json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}),
     "invalid_value", "audio"),
    ("odd byte count",
     json.dumps({"type": "input_audio_buffer.append", "audio": _b64(b"\x01\x02\x03")}),
     "invalid_value", "audio"),
    ("empty audio", json.dumps({"type": "input_audio_buffer.append", "audio": ""}), "invalid_value", "audio"),
    ("conversation session", json.dumps({"type": "session.update", "session": {"type": "realtime"}}),
     "invalid_value", "session.type"),
    ("no session", json.dumps({"type": "session.update"}), "missing_required_parameter", "session"),
    ("german", json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"language": "de"}}}}}), "unsupported_language", "session.audio.input.transcription.language"),
    ("other model", json.dumps({"type": "transcription_session.update", "session": {
        "input_audio_transcription": {"model": "whisper-1"}}}), "model_not_found",
     "session.input_audio_transcription.model"),
    ("prompt", json.dumps({"type": "transcription_session.update", "session": {
        "input_audio_transcription": {"prompt": "names"}}}), "unsupported_parameter",
     "session.input_audio_transcription.prompt"),
    ("semantic vad", json.dumps({"type": "transcription_session.update", "session": {
        "turn_detection": {"type": "semantic_vad"}}}), "invalid_value", "session.turn_detection.type"),
    ("threshold above 1", json.dumps({"type": "transcription_session.update", "session": {
        "turn_detection": {"type": "server_vad", "threshold": 1.5}}}), "invalid_value",
     "session.turn_detection.threshold"),
    ("mu-law", json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}),
     "invalid_value", "session.input_audio_format"),
    ("8 kHz pcm", json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 8000}}}}}), "invalid_value", "session.audio.input.format.rate"),
    ("unknown parameter", json.dumps({"type": "transcription_session.update", "session": {"voice": "alloy"}}),
     "unknown_parameter", "session.voice"),
    ("logprobs", json.dumps({"type": "transcription_session.update", "session": {
        "include": ["item.input_audio_transcription.logprobs"]}}), "unsupported_value", "session.include"),
    ("binary frame", b"\x00\x01binary", "invalid_json", None),
]


async def test_every_bad_event_gets_an_error_and_the_session_stays_usable(gateway_server: str) -> None:
    async with connect(f"{ws_base(gateway_server)}{PATH}", additional_headers=AUTH) as ws:
        created = await next_event(ws)
        await ws.send(json.dumps({"type": "session.update", "session": ga_update(16000, None)}))
        assert (await next_event(ws))["type"] == "session.updated"
        for case, message, code, param in BAD_EVENTS:
            await ws.send(message)
            event = await next_event(ws)
            assert event["type"] == "error", (case, event)
            error = event["error"]
            assert (error["code"], error["param"]) == (code, param), (case, error)
            assert error["type"] == "invalid_request_error" and error["message"], (case, error)
        # The client's event_id comes back in the error.
        await ws.send(json.dumps({"type": "nope", "event_id": "evt_42"}))
        assert (await next_event(ws))["error"]["event_id"] == "evt_42"
        # Oversized message (default limit 1 MiB): refused, session open.
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (1024 * 1024 + 8)}))
        assert (await next_event(ws))["error"]["code"] == "message_too_large"
        # Commit with (almost) nothing buffered: OpenAI's code for it.
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _b64(np.zeros(800, "<i2").tobytes())}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_c"}))
        event = await next_event(ws)
        assert (event["error"]["code"], event["error"]["event_id"]) == ("input_audio_buffer_commit_empty", "evt_c")
        # Still usable: the session was not changed by any refused update, and commits work.
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _b64(np.zeros(3200, "<i2").tobytes())}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = await events_until(ws, COMPLETED)
        assert events[0]["type"] == "input_audio_buffer.committed"
        assert events[-1]["audio_start_ms"] == 0 and events[-1]["audio_end_ms"] == 250
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {}}))
        session = (await next_event(ws))["session"]
        assert session["turn_detection"] is None
        assert session["input_audio_format"] == {"type": "audio/pcm", "rate": 16000}
        assert created["session"]["audio"]["input"]["format"]["rate"] == OPENAI_RATE


async def test_keys_are_checked_like_http(gateway_server: str) -> None:
    url = f"{ws_base(gateway_server)}{PATH}"
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body or b"{}")
        assert body["error"]["code"] == "invalid_api_key"
    # Browsers cannot set headers: OpenAI's subprotocol form; the key is never echoed back.
    key_protocol = f"openai-insecure-api-key.{GATEWAY_API_KEY}"
    async with connect(url, subprotocols=["realtime", key_protocol]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        assert (await next_event(ws))["type"] == "session.created"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 401
    refusals = (("", "unsupported_intent"), ("?intent=transcription&model=gpt-4o-realtime", "model_not_found"))
    for query, code in refusals:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{ws_base(gateway_server)}/v1/realtime{query}", additional_headers=AUTH):
                pass
        assert refused.value.response.status_code == 400
        assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == code


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_disconnect_mid_utterance_leaves_nothing_running(
    gateway_server: str, triton_server: Any, realtime_script: SpokenScript
) -> None:
    """Commit, then hang up at once: the utterance's Triton call is cancelled with the session."""
    pcm = realtime_script.pcm16(16000)
    async with httpx.AsyncClient(timeout=10) as http:
        async with connect(f"{ws_base(gateway_server)}{PATH}", additional_headers=AUTH) as ws:
            await next_event(ws)
            await ws.send(json.dumps({"type": "session.update", "session": ga_update(16000, None)}))
            await next_event(ws)
            for chunk in pcm16_chunks(pcm, 16000, 1000):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            assert (await next_event(ws))["type"] == "input_audio_buffer.committed"
            # ... and a server_vad session hanging up mid-sentence commits nothing at all.
        async with connect(f"{ws_base(gateway_server)}{PATH}", additional_headers=AUTH) as ws:
            await next_event(ws)
            await ws.send(json.dumps({"type": "session.update", "session": ga_update(16000)}))
            await next_event(ws)
            middle = int(realtime_script.segments[1].start_s * 16000 + 16000)
            for chunk in pcm16_chunks(pcm[:middle], 16000, CHUNK_MS):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        deadline = time.monotonic() + 20
        while True:
            gateway_metrics = (await http.get(f"{gateway_server}/metrics", headers=AUTH)).text
            triton_metrics = (await http.get(triton_server.metrics_url)).text
            pending = sum(float(v) for v in re.findall(r"^nv_inference_pending_request_count\{[^}]*\} (\S+)$",
                                                       triton_metrics, re.MULTILINE))
            open_sessions = _metric(gateway_metrics, "gateway_realtime_sessions_open")
            if (pending, open_sessions) == (0, 0) and _metric(
                    gateway_metrics, "gateway_realtime_utterances_total", '{outcome="cancelled"}') >= 1:
                break
            assert time.monotonic() < deadline, (pending, open_sessions)
            await asyncio.sleep(0.2)


async def test_metrics_count_sessions_utterances_latency(gateway_server: str) -> None:
    async with connect(f"{ws_base(gateway_server)}{PATH}", additional_headers=AUTH) as ws:
        await next_event(ws)
        await ws.send(json.dumps({"type": "session.update", "session": ga_update(16000, None)}))
        await next_event(ws)
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _b64(np.zeros(4000, "<i2").tobytes())}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await events_until(ws, COMPLETED)
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"{gateway_server}/metrics", headers=AUTH)).text
    assert _metric(text, "gateway_realtime_sessions_open") >= 1
    assert _metric(text, "gateway_realtime_utterances_total", '{outcome="completed"}') >= 1
    assert _metric(text, "gateway_realtime_transcript_latency_seconds_count") >= 1
