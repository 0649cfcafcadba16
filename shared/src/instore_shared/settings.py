"""Settings read from the environment, one class per service built from these parts.

Every field has a one-line docstring (pydantic reads it as the field description, and
``python -m instore_shared.settings_doc`` prints the table in docs/configuration.md from it).
Secrets are :class:`pydantic.SecretStr`: they print as ``**********``.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, Self, TypeVar

from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from instore_shared.kafka.topics import TopicNames, check_prefix

_S = TypeVar("_S", bound=BaseSettings)


def load_settings(cls: type[_S], program: str) -> _S:
    """``cls()`` from the environment, or exit 2 naming each bad variable — never echoing values.

    pydantic's own message repeats every input (secrets included), so it is not printed.
    """
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        lines = [f"{program}: invalid settings:"]
        for error in exc.errors(include_input=False, include_url=False):
            name = "_".join(str(part) for part in error["loc"]).upper()
            lines.append(f"  {prefix}{name}: {error['msg']}" if name else f"  {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


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

    kafka_topic_prefix: str = ""
    """Put in front of every topic name and every default consumer group id (``dev.`` → ``dev.instore.webhooks.v1``),
    so several environments share one Kafka cluster; only a-z A-Z 0-9 . _ -, at most 208 characters. Empty: none."""

    kafka_create_topics: bool = True
    """Create missing topics at start-up (turn off where topics are managed elsewhere, e.g. Strimzi)."""

    kafka_topic_partitions: int = Field(default=6, ge=1)
    """Partitions of a topic this process creates."""

    kafka_topic_replication_factor: int = Field(default=1, ge=1)
    """Replication factor of a topic this process creates (3 in production)."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How to reach Kafka: PLAINTEXT, SSL (TLS, optionally with a client certificate), SASL_PLAINTEXT or SASL_SSL."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    """SASL mechanism when the protocol is SASL_*."""

    kafka_sasl_username: str = ""
    """SASL user name (required with SASL_*)."""

    kafka_sasl_password: SecretStr = SecretStr("")
    """SASL password (required with SASL_*)."""

    kafka_ssl_cafile: str = ""
    """PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); empty: the system's CAs."""

    kafka_ssl_certfile: str = ""
    """PEM client certificate for TLS client authentication (e.g. a Strimzi KafkaUser); empty: none."""

    kafka_ssl_keyfile: str = ""
    """PEM private key of ``KAFKA_SSL_CERTFILE``."""

    log_level: str = "INFO"
    """Log level: DEBUG, INFO, WARNING or ERROR."""

    log_json: bool = True
    """Log one JSON object per line (false: coloured console lines for development)."""

    http_max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    """Largest request line plus header fields an HTTP port of this service reads, in bytes (431 beyond)."""

    http_max_headers: int = Field(default=100, ge=10, le=1000)
    """Most header fields in one HTTP request (431 beyond)."""

    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """Time an HTTP client has to send a request's line and headers, in seconds (408 and closed after)."""

    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """Time an HTTP client has to send a request's body once its headers are in, in seconds (408 and closed after)."""

    @field_validator("kafka_topic_prefix")
    @classmethod
    def _legal_prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        """Each comma-separated entry is ``host:port`` (IPv6 in brackets) with a port 1–65535: a typo fails at
        start, naming the variable, instead of as a connection error deep in the Kafka client."""
        entries = [e.strip() for e in value.split(",")]
        for entry in entries:
            host, sep, port = entry.rpartition(":")
            if not (sep and host and port.isdigit() and 0 < int(port) < 65536) or (":" in host and not host.startswith("[")):
                raise ValueError(f"{entry!r} is not host:port (comma-separated list, e.g. kafka-0:9092,kafka-1:9092)")
        return ",".join(entries)

    @model_validator(mode="before")
    @classmethod
    def _prefix_default_groups(cls, data: Any) -> Any:
        """Each ``*_consumer_group`` field left unset gets ``KAFKA_TOPIC_PREFIX`` in front of its default
        (two environments on one cluster must not share a group); one set explicitly stays as given."""
        if not isinstance(data, dict):
            return data
        given = {str(k).lower(): v for k, v in data.items()}
        prefix = given.get("kafka_topic_prefix") or ""
        if not isinstance(prefix, str) or not prefix:
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            if name.endswith("_consumer_group") and name not in given and isinstance(field.default, str):
                out[name] = prefix + field.default
        return out

    def topic_names(self) -> TopicNames:
        """The topic names of this deployment (``KAFKA_TOPIC_PREFIX`` applied to the registry's)."""
        return TopicNames(self.kafka_topic_prefix)

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError("KAFKA_SECURITY_PROTOCOL=SASL_* needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return self

    def kafka_security(self) -> BaseSecurity | None:
        """The Kafka security settings as FastStream's security object (None for PLAINTEXT)."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return None
        ssl_context = None
        if protocol.endswith("SSL"):
            ssl_context = create_ssl_context(
                cafile=self.kafka_ssl_cafile or None,
                certfile=self.kafka_ssl_certfile or None,
                keyfile=self.kafka_ssl_keyfile or None,
            )
        if protocol == "SSL":
            return BaseSecurity(ssl_context=ssl_context)
        kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
        return kind[self.kafka_sasl_mechanism](
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password.get_secret_value(),
            ssl_context=ssl_context,
            use_ssl=protocol == "SASL_SSL",
        )

    def kafka_client_options(self) -> dict[str, Any]:
        """The same settings as aiokafka client keyword arguments (for our own producers and consumers)."""
        return parse_security(self.kafka_security())


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
    """Space-separated OAuth scopes; empty: what the service needs, each ``:{project_key}`` — cart-mapping ``view_orders``,
    order-finalization ``manage_orders view_orders view_payments manage_key_value_documents``,
    refund ``manage_orders view_orders manage_payments manage_key_value_documents``."""

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
