"""Typed configuration: the dataset spec, model settings and the platform settings.

The dataset spec is configuration, so any tabular dataset with an entity key and an event
timestamp runs without code changes. Settings are the only place that reads the
environment (prefix ``MLOPS_``).
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

SPECS_DIR = Path(__file__).parent / "specs"
DEFAULT_SPEC = SPECS_DIR / "wage_panel.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


MLFLOW_PASSWORD_PREFIX = "MLOPS_MLFLOW_PASSWORD_"


def mlflow_username(team: str) -> str:
    """The MLflow (basic-auth) user a team's runs, deploys and services act as."""
    return f"team-{team}"


def mlflow_password_variable(team: str) -> str:
    """Where a team's MLflow password is: ``MLOPS_MLFLOW_PASSWORD_<TEAM>`` (dashes become
    underscores; team names have no underscores, so two teams never share a variable)."""
    return MLFLOW_PASSWORD_PREFIX + team.upper().replace("-", "_")


class MlflowAuth(BaseModel):
    """One MLflow user's credentials; the password never prints (SecretStr)."""

    username: str
    password: SecretStr


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the problem."""


class TaskType(StrEnum):
    classification = "classification"  # a 0/1 label
    multiclass = "multiclass"  # a label of two or more classes: integer codes or strings
    regression = "regression"


class ColumnRule(BaseModel):
    """An extra validation rule declared in the spec for one column."""

    model_config = ConfigDict(extra="forbid")

    column: str
    min: float | None = Field(None, description="Smallest allowed value (inclusive).")
    max: float | None = Field(None, description="Largest allowed value (inclusive).")
    allowed: list[float | int | str] | None = Field(None, description="The only allowed values.")
    not_null: bool = Field(False, description="The column may hold no nulls.")

    @model_validator(mode="after")
    def _check_bounds(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule for {self.column!r}: min {self.min} > max {self.max}")
        return self


class CustomModel(BaseModel):
    """A team's own network instead of the default MLP (``mlops.training.factory``)."""

    model_config = ConfigDict(extra="forbid")

    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description=(
        "module:function called with the model's inputs (width, outputs, task, names, "
        "options); returns a torch.nn.Module from standardised inputs to raw outputs."))
    loss: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description=(
        "module:function returning a loss of (outputs, targets); default: the task's."))
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the factory.")


class DatasetSpec(BaseModel):
    """Where a dataset is and what its columns mean."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Dataset and model name: lower case, digits, underscores.")
    path: str = Field(
        description="Parquet or CSV file (local path or URI such as s3://...), "
        "or builtin://<name> for a dataset shipped with a package."
    )
    entity: str = Field(description="Entity key column.")
    timestamp: str = Field(description="Event timestamp column.")
    features: list[str] = Field(min_length=1, description="Feature columns, in model order: "
                                "numbers, unless listed under categorical.")
    categorical: list[str] = Field(default_factory=list, description="Features that are "
                                   "categories (strings or integer codes), one-hot encoded "
                                   "inside the exported model; unseen ones share one bucket.")
    nullable: list[str] = Field(default_factory=list, description="Features that may be null: "
                                "a number takes the train split's median, a category the "
                                "unknown bucket, inside the exported model.")
    label: str = Field(description="Label column.")
    task: TaskType = Field(description="classification (a 0/1 label), multiclass (classes as "
                           "integer codes or strings) or regression.")
    rules: list[ColumnRule] = Field(default_factory=list, description="Extra validation rules.")
    model: CustomModel | None = Field(None, description="Your own network (factory, loss, "
                                      "options); default: the MLP of the model settings.")
    regions: list[str] | None = Field(
        None, min_length=1, description="Data residency: the regions this dataset's data may "
        "live in; it narrows the team's and the platform's policy, never widens it.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must match {_NAME.pattern}")
        return value

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetSpec:
        keys = [self.entity, self.timestamp, self.label]
        if len(set(keys)) != 3:
            raise ValueError("entity, timestamp and label must be three different columns")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features contain duplicates")
        clash = set(self.features) & set(keys)
        if clash:
            raise ValueError(f"features must not include entity/timestamp/label: {sorted(clash)}")
        for key in ("categorical", "nullable"):
            listed = getattr(self, key)
            stray = [c for c in listed if c not in self.features]
            if stray:
                raise ValueError(f"{key} names columns that are not features: {stray}")
            if len(set(listed)) != len(listed):
                raise ValueError(f"{key} contains duplicates")
        return self

    @property
    def numeric_features(self) -> list[str]:
        """The features that are numbers, in model order."""
        return [c for c in self.features if c not in self.categorical]

    @property
    def plain(self) -> bool:
        """Numbers only, never null: the model takes one float matrix as it is."""
        return not self.categorical and not self.nullable

    @property
    def columns(self) -> list[str]:
        return [self.entity, self.timestamp, *self.features, self.label]


class ModelSettings(BaseModel):
    """The MLP and how it is trained."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(default=[64, 32], description="Hidden layer sizes.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    epochs: int = Field(default=40, ge=1, le=10_000, description="Most epochs to train.")
    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    patience: int = Field(default=5, ge=1, description="Early stopping: epochs without gain.")
    seed: int = Field(default=42, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto")
    val_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("hidden must list one or more positive layer sizes")
        return value


class Settings(BaseSettings):
    """Platform settings from ``MLOPS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    profile: Literal["local", "production"] = "local"
    data_dir: Path = Path("data")
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=8080, ge=1, le=65535)
    # Deployed services record this share of scored rows for drift monitoring.
    sample_rate: float = Field(default=0.1, ge=0, le=1)
    sample_flush_s: float = Field(default=30.0, gt=0)
    tracking_uri: str | None = None
    # Platform mode (`make up`): the shared Prefect and MLflow servers on this machine.
    platform_host: str = "127.0.0.1"
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    fairshare_port: int = Field(default=9464, ge=1, le=65535)  # the controller's /metrics
    # Monitoring (`make up`): Prometheus and the machine's node exporter, whose textfile
    # collector exports the training runs' series (mlops.training.telemetry). With
    # prometheus_url set (an external Prometheus, as on the production profile) `up` starts
    # neither and the detector and the report read that one.
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    node_exporter_port: int = Field(default=9100, ge=1, le=65535)
    prometheus_url: str | None = None
    scrape_interval_s: float = Field(default=15.0, ge=1, le=300)
    # MLflow's system metrics (CPU, memory, disk, network, GPU) of a training run.
    system_metrics_interval_s: float = Field(default=5.0, ge=0.5, le=600)
    # Anomaly notifications (`make up`'s automation, a Prefect webhook block) go here.
    alert_webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    # The gateway (infra/gateway) listens on prefect_port; the Prefect server behind it on
    # loopback, prefect_internal_port (default prefect_port + 1), and requires
    # prefect_server_auth; the gateway signs session cookies with gateway_session_key.
    prefect_internal_port: int | None = Field(default=None, ge=1, le=65535)
    prefect_server_auth: SecretStr | None = None
    gateway_session_key: SecretStr | None = None
    # Production profile (MLOPS_PROFILE=production): the services a team already operates.
    # PostgreSQL: the admin account creates the role and databases (idempotently); the
    # platform connects as pg_user to <pg_database_prefix>_{prefect,mlflow,feast}.
    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_admin_user: str = "postgres"
    pg_admin_password: SecretStr | None = None
    pg_user: str = Field(default="mlops", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pg_password: SecretStr | None = None
    pg_database_prefix: str = Field(default="mlops", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    redis_url: str = "redis://127.0.0.1:6379/0"  # rediss:// for TLS; no password in it
    redis_password: SecretStr | None = None  # Redis AUTH (requirepass); kept out of files
    # S3 or any S3-compatible store; credentials come from the standard AWS chain
    # (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role), never here.
    s3_endpoint_url: str | None = None  # None: AWS S3
    s3_bucket: str = "mlops"
    s3_region: str = "us-east-1"
    s3_sse: Literal["AES256", "aws:kms"] = "AES256"  # every write asks for encryption at rest
    s3_kms_key_id: str | None = None  # with s3_sse aws:kms; None: the account's AWS key
    s3_ca_bundle: Path | None = None  # an https endpoint's CA, when not a public one
    dask_scheduler: str | None = None  # None: a LocalCluster
    # Governance: the teams file whose team data roots and residency apply to runs (`make up`
    # sets it for every platform process); None: any location, no platform policy.
    teams_file: Path | None = None
    region: str | None = None  # where the data directory and the workers are; None: s3_region
    # The audit trail's HMAC key (the same in every process); unset on the local profile, one
    # is generated into <data_dir>/audit/audit.key (0600). The production profile requires it.
    audit_key: SecretStr | None = None
    # SIGTERM during training (a spot node's notice): checkpoint at the next batch and exit
    # within this many seconds; keep it below the pod's terminationGracePeriodSeconds.
    training_grace_s: float = Field(default=20.0, gt=0, le=3600)
    # A flow run Pending this long without starting (its worker or node died as it began)
    # is marked Crashed by the platform's automation, then requeued; raise it where pods
    # wait for a node to be provisioned or an image to be pulled.
    start_timeout_s: float = Field(default=300.0, ge=10, le=86_400)
    # Each team's MLflow password is MLOPS_MLFLOW_PASSWORD_<TEAM> (``mlflow_auth``), in the
    # workers' environment; `make up` (infra.credentials) makes the users and the secrets.

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def tracking(self) -> str:
        """MLflow tracking URI, unless set: the platform's MLflow server on the production
        profile (runs in PostgreSQL, artifacts in S3), else SQLite under the data directory."""
        if self.tracking_uri:
            return self.tracking_uri
        if self.profile == "production":
            return self.mlflow_url
        return f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "mlartifacts"

    @property
    def prefect_api_url(self) -> str:
        """The API as users, CI and services reach it: through the gateway."""
        return f"http://{self.platform_host}:{self.prefect_port}/api"

    @property
    def prefect_server_url(self) -> str:
        """The Prefect server itself, behind the gateway (workers and the gateway)."""
        return f"http://127.0.0.1:{self.prefect_internal_port or self.prefect_port + 1}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.platform_host}:{self.mlflow_port}"

    @property
    def prometheus(self) -> str:
        """The Prometheus the platform's monitoring reads: the external one, else `up`'s."""
        return (self.prometheus_url or
                f"http://{self.platform_host}:{self.prometheus_port}").rstrip("/")

    @property
    def textfile_dir(self) -> Path:
        """Where training runs write their series for the node exporter to export."""
        return self.data_dir / "monitoring" / "textfile"

    def mlflow_auth(self, team: str) -> MlflowAuth | None:
        """The team's MLflow credentials, when the tracking store is a server (a local SQLite
        store has no users) and the environment holds the team's password. Read on each
        call, not at start-up: a worker's process serves every team's runs."""
        if not self.tracking.startswith(("http://", "https://")):
            return None
        password = os.environ.get(mlflow_password_variable(team))
        return (MlflowAuth(username=mlflow_username(team), password=SecretStr(password))
                if password else None)

    def database_url(self, name: str, driver: str = "postgresql", admin: bool = False,
                     redact: bool = False, env_password: bool = False,
                     with_password: bool = True) -> str:
        """The URL of one of the platform's PostgreSQL databases (``name``: prefect, mlflow,
        feast; or the admin's ``postgres``). ``redact`` hides the password (for messages);
        ``env_password`` writes it as ``${MLOPS_PG_PASSWORD}`` (for files a tool expands);
        without ``with_password`` the URL has none (libpq takes it from PGPASSWORD)."""
        user, secret = ((self.pg_admin_user, self.pg_admin_password) if admin
                        else (self.pg_user, self.pg_password))
        password = quote(secret.get_secret_value(), safe="") if secret else ""
        if not with_password:
            password = ""
        shown = "***" if redact else "${MLOPS_PG_PASSWORD}" if env_password else password
        auth = f"{user}:{shown}" if password else user
        database = name if admin else f"{self.pg_database_prefix}_{name}"
        return f"{driver}://{auth}@{self.pg_host}:{self.pg_port}/{database}"

    def s3_write_args(self) -> dict[str, str]:
        """What every S3 write asks for: server-side encryption (SSE-S3 or SSE-KMS)."""
        args = {"ServerSideEncryption": self.s3_sse}
        if self.s3_sse == "aws:kms" and self.s3_kms_key_id:
            args["SSEKMSKeyId"] = self.s3_kms_key_id
        return args

    def stage_dir(self, stage: str) -> Path:
        """The folder one stage writes under, created on demand."""
        path = self.data_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a dataset spec from YAML; every problem is named in one ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"dataset spec not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset spec {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"dataset spec {path} must be a mapping of keys to values")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"dataset spec {path} is invalid: {problems}") from None
