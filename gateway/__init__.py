"""OpenAI-compatible HTTP gateway in front of the Canary-Qwen Triton ensembles."""
