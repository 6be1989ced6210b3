"""Code the Triton python models (model_repository/*/1/model.py) import by package name.

Pure modules (no Triton, unit-tested directly): `ragged`, `batch_fallback`, `audio_batch`,
`asr_prompt`, `chat_request`, `token_bytes`, `llm_request`. Modules that import
`triton_python_backend_utils`, so only load inside Triton's python backend: `triton_io`,
`ragged_onnx_model`. Nothing is imported here, so importing a pure module never pulls in the
backend.
"""
