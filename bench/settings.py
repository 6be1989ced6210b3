"""Benchmark settings: environment (prefix BENCH_, BENCH_<COMMAND>_ per command) or command line
(`python -m bench [COMMAND] --help`).

`CliSettings` is what every command's settings share (how they parse); `CommandSettings` adds the
fields of the commands that run the model of `make model` (where it is, where results and logs
go). Each command subclasses one and sets only its env prefix and program name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[1]


class CliSettings(BaseSettings):
    """How every bench command reads its settings; subclasses set env_prefix and cli_prog_name."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, cli_kebab_case=True, cli_implicit_flags=True)


class CommandSettings(CliSettings):
    """The fields shared by the commands that serve `make model`'s output."""

    model_dir: Path = Field(
        default=_REPO_ROOT / "build",
        description="`make model` output: checkpoint/, artifacts/, model_repository/.",
    )
    results_dir: Path = Field(default=_REPO_ROOT / "bench" / "results", description="Where latest.json is.")
    work_dir: Path | None = Field(
        default=None, description="Audio cache and server logs (default: MODEL_DIR/bench)."
    )
    ready_timeout_s: PositiveFloat = Field(default=600.0, description="How long to wait for Triton to load.")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # The Makefile exports MODEL_DIR for every target; with an alias pydantic-settings drops the
        # env prefix, so the prefixed name is listed too, made from each subclass's own prefix.
        super().__pydantic_init_subclass__(**kwargs)
        prefix = cls.model_config.get("env_prefix", "")
        aliases = AliasChoices("model_dir", f"{prefix}MODEL_DIR", "MODEL_DIR")
        cls.__pydantic_fields__["model_dir"] = FieldInfo.merge_field_infos(
            cls.__pydantic_fields__["model_dir"], validation_alias=aliases
        )
        cls.model_rebuild(force=True)

    @property
    def repository_dir(self) -> Path:
        return self.model_dir / "model_repository"

    @property
    def artifacts_dir(self) -> Path:
        return self.model_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.work_dir or self.model_dir / "bench"

    def missing_repository(self) -> str | None:
        """Why the command cannot run, if the model repository is not there."""
        if self.repository_dir.is_dir():
            return None
        return f"no model repository at {self.repository_dir}: run `make model` first"


class BenchSettings(CommandSettings):
    """What one benchmark run measures, and where it reads and writes."""

    model_config = SettingsConfigDict(env_prefix="BENCH_", cli_prog_name="python -m bench")

    repository: Path | None = Field(
        default=None,
        description="Filled Triton model repository to serve (default: MODEL_DIR/model_repository). "
        "Point it at a GPU-tier or real-dimension repository to benchmark that instead.",
    )
    max_new_tokens: PositiveInt = Field(
        default=32,
        description="Most tokens per request on both paths (the gateway's asr_max_new_tokens; the direct "
        "path asks what the gateway would, ModelSettings.asr_budget). A trained model stops sooner.",
    )
    concurrency: PositiveInt = Field(
        default=16, description="The headline concurrency: overhead and batching gain are read there."
    )
    levels: list[PositiveInt] = Field(
        default=[1, 2, 4, 8, 16],
        description="Concurrencies of the sweep (both arms each); 1 and --concurrency are always added.",
    )
    rounds: PositiveInt = Field(
        default=6,
        description="Rounds of the sweep: each runs every level once per arm (one corpus pass), the arms "
        "in ABBA BAAB order, so the shared machine's drifts hit both alike. Intervals resample rounds.",
    )
    warmup_requests: int = Field(default=4, ge=0, description="Untimed requests before the timed runs.")
    long_audio_minutes: float = Field(
        default=60.0, ge=0, description="Length of the long-audio memory test; 0 skips it."
    )
    preprocess_rounds: PositiveInt = Field(
        default=8, description="Passes over the corpus per format for decode + resample + log-mel."
    )
    pin_cpus: bool = Field(
        default=True,
        description="Pin the load generator to one CPU and the services to the others (on 2 CPUs: "
        "services on both, the client on the last) in both arms alike; see bench/README.md.",
    )
    update_readme: bool = Field(
        default=True, description="Write the table into README.md between the bench markers."
    )
    request_timeout_s: PositiveFloat = Field(
        default=1800.0, description="Client and gateway deadline per request (the long file needs minutes on CPU)."
    )
    profile: bool = Field(
        default=True,
        description="After the timed phases, one more gateway pass with py-spy attached to the gateway, "
        "tritonserver's python models and the client: where the time goes.",
    )
    rss_poll_s: PositiveFloat = Field(default=0.02, description="Gateway RSS sampling period.")

    @property
    def sweep_levels(self) -> list[int]:
        return sorted({1, self.concurrency, *self.levels})

    @property
    def repository_dir(self) -> Path:
        return self.repository or super().repository_dir


class SoakSettings(CommandSettings):
    """`python -m bench soak`: gateway memory over thousands of requests, in phases."""

    model_config = SettingsConfigDict(env_prefix="BENCH_SOAK_", cli_prog_name="python -m bench soak")

    phases: PositiveInt = Field(
        default=10,
        description="Measured phases (after one warm-up phase): idle RSS wanders by tens of MiB between "
        "phases, and the slope's interval narrows with their number.",
    )
    requests_per_phase: PositiveInt = Field(default=500, description="Requests per phase.")
    concurrency: PositiveInt = Field(default=16, description="Requests in flight.")
    max_new_tokens: PositiveInt = Field(default=8, description="Generation budget per request (short: many requests).")
    max_seconds: PositiveFloat = Field(
        default=480.0, description="Time bound: no phase starts after this many seconds of load."
    )
    leak_mib_per_1k: PositiveFloat = Field(
        default=5.0,
        description="Idle-RSS slope (MiB per 1,000 requests, over the measured phases) above which the "
        "soak traces the heap (tracemalloc) for two more phases and reports the top growers.",
    )
