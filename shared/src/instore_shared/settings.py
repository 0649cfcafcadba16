"""Settings read from the environment, one class per service built from these parts.

Every field has a one-line docstring (pydantic reads it as the field description, and
``python -m instore_shared.settings_doc`` prints the table in the README from it).
Secrets are :class:`pydantic.SecretStr`: they print as ``**********``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BaseServiceSettings(BaseSettings):
    """Settings every service shares: Kafka connection and logging."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        use_attribute_docstrings=True,
        frozen=True,
    )

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated Kafka bootstrap servers (host:port)."""

    kafka_client_id_prefix: str = "instore"
    """Prefix of the Kafka client ids this process uses (the service name is appended)."""

    kafka_create_topics: bool = True
    """Create missing topics at start-up (turn off where topics are managed elsewhere, e.g. Strimzi)."""

    kafka_topic_partitions: int = Field(default=6, ge=1)
    """Partitions of a topic this process creates."""

    kafka_topic_replication_factor: int = Field(default=1, ge=1)
    """Replication factor of a topic this process creates (3 in production)."""

    log_level: str = "INFO"
    """Log level: DEBUG, INFO, WARNING or ERROR."""

    log_json: bool = True
    """Log one JSON object per line (false: coloured console lines for development)."""


class CommercetoolsSettings(BaseSettings):
    """Composable Commerce API client settings, named as the Merchant Center's API client export."""

    model_config = SettingsConfigDict(
        env_prefix="CTP_",
        case_sensitive=False,
        extra="ignore",
        use_attribute_docstrings=True,
        frozen=True,
    )

    project_key: str = "instore-demo"
    """Composable Commerce project key."""

    client_id: str = "local-client"
    """API client id (client credentials flow)."""

    client_secret: SecretStr = SecretStr("local-secret")
    """API client secret."""

    auth_url: str = "http://127.0.0.1:8989"
    """OAuth server base URL; the token endpoint is ``{auth_url}/oauth/token``."""

    api_url: str = "http://127.0.0.1:8989"
    """API base URL; calls go to ``{api_url}/{project_key}/...``."""

    scopes: str = ""
    """Space-separated OAuth scopes; empty means ``view_orders:{project_key}``."""

    timeout_seconds: float = Field(default=5.0, gt=0)
    """Timeout of one HTTP call to Composable Commerce, in seconds."""

    max_attempts: int = Field(default=4, ge=1, le=10)
    """Attempts of one call on 429, 5xx or network errors (bounded retries with jittered backoff)."""

    backoff_initial_seconds: float = Field(default=0.1, gt=0)
    """First backoff between attempts, in seconds (exponential with full jitter)."""

    backoff_max_seconds: float = Field(default=2.0, gt=0)
    """Longest backoff between attempts, in seconds."""

    def effective_scopes(self) -> str:
        """The scopes to request: the setting, else ``view_orders:{project_key}``."""
        return self.scopes or f"view_orders:{self.project_key}"
