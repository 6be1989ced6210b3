"""Benchmark settings: environment (prefix BENCH_) or command line (`python -m bench --help`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchSettings(BaseSettings):
    """What one benchmark run measures, and where it reads and writes."""

    model_config = SettingsConfigDict(
        env_prefix="BENCH_",
        extra="ignore",
        frozen=True,
        cli_prog_name="python -m bench",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    model_dir: Path = Field(
        default=_REPO_ROOT / "build",
        # The Makefile exports MODEL_DIR for every target.
        validation_alias=AliasChoices("model_dir", "BENCH_MODEL_DIR", "MODEL_DIR"),
        description="`make model` output: checkpoint/, artifacts/, model_repository/.",
    )
    repository: Path | None = Field(
        default=None,
        description="Filled Triton model repository to serve (default: MODEL_DIR/model_repository). "
        "Point it at a GPU-tier or real-dimension repository to benchmark that instead.",
    )
    results_dir: Path = Field(default=_REPO_ROOT / "bench" / "results", description="Where the JSON goes.")
    work_dir: Path | None = Field(
        default=None, description="Audio cache and server logs (default: MODEL_DIR/bench)."
    )
    max_new_tokens: PositiveInt = Field(
        default=32,
        description="Fixed generation budget per request on both paths (gateway setting and the "
        "ensemble's MAX_NEW_TOKENS). The tiny model emits noise and usually runs to this limit.",
    )
    concurrency: PositiveInt = Field(default=16, description="Requests in flight in the concurrent runs.")
    passes_c1: PositiveInt = Field(default=1, description="Passes over the corpus at concurrency 1.")
    passes_concurrent: PositiveInt = Field(
        default=1, description="Passes over the corpus per high-concurrency phase (one pass = one wave of 16)."
    )
    rounds: PositiveInt = Field(
        default=4,
        description="High-concurrency phases per path, alternated gateway/Triton in ABBA order so the "
        "shared machine's load drifts hit both paths alike.",
    )
    warmup_requests: int = Field(default=4, ge=0, description="Untimed requests before the timed runs.")
    long_audio_minutes: float = Field(
        default=60.0, ge=0, description="Length of the long-audio memory test; 0 skips it."
    )
    preprocess_min_seconds: PositiveFloat = Field(
        default=600.0, description="Audio seconds fed through decode + resample + log-mel (repeats the corpus)."
    )
    request_timeout_s: PositiveFloat = Field(
        default=1800.0, description="Client and gateway deadline per request (the long file needs minutes on CPU)."
    )
    ready_timeout_s: PositiveFloat = Field(default=600.0, description="How long to wait for Triton to load.")
    profile: bool = Field(
        default=True,
        description="After the timed phases, one more gateway pass with py-spy attached to the gateway, "
        "tritonserver's python models and the client: where the time goes.",
    )
    rss_poll_s: PositiveFloat = Field(default=0.02, description="Gateway RSS sampling period.")

    @property
    def repository_dir(self) -> Path:
        return self.repository or self.model_dir / "model_repository"

    @property
    def artifacts_dir(self) -> Path:
        return self.model_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.work_dir or self.model_dir / "bench"
