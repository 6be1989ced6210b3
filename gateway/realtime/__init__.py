"""OpenAI's realtime transcription WebSocket (`/v1/realtime?intent=transcription`).

Audio arrives as base64 pcm16 appends; the gateway cuts it into utterances with the same
Silero VAD as the file path (streamed frame by frame) or at client commits, and sends each
utterance to Triton as it ends, so live captions share the ensembles' batching with files.

- `protocol`: client event parsing, session configuration, server event builders;
- `audio_input`: pcm16 decoding and resampling to the model's rate;
- `turns`: streaming VAD and turn detection (pure hysteresis over frame probabilities);
- `session`: one session's state machine (buffer, items, commits), no I/O;
- `connection`: the WebSocket loop (auth, limits, ordered results, closing codes).
"""
