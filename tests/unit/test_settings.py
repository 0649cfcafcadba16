"""Settings: secrets never print, bad settings are named without their values, Kafka security maps to clients."""

from __future__ import annotations

import pytest

from instore_gateway.settings import GatewaySettings
from instore_shared.settings import load_settings

KEY = "callback-key-that-must-not-print"


def test_invalid_settings_name_the_variable_and_never_echo_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INSTORE_CALLBACK_API_KEY", KEY)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "sasl-password-that-must-not-print")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GATEWAY_HTTP_PORT", "not-a-port")
    with pytest.raises(SystemExit) as info:
        load_settings(GatewaySettings, "instore-gateway")
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "GATEWAY_HTTP_PORT" in err
    assert KEY not in err and "sasl-password-that-must-not-print" not in err


def test_missing_callback_api_key_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("INSTORE_CALLBACK_API_KEY", raising=False)
    with pytest.raises(SystemExit):
        load_settings(GatewaySettings, "instore-gateway")
    assert "INSTORE_CALLBACK_API_KEY" in capsys.readouterr().err


def test_secrets_do_not_print() -> None:
    settings = GatewaySettings(
        instore_callback_api_key=KEY,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password="pw-secret",
    )
    assert KEY not in repr(settings) and "pw-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("protocol", "mechanism", "expected"),
    [
        ("PLAINTEXT", "SCRAM-SHA-512", {}),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512", {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512"}),
        ("SASL_SSL", "PLAIN", {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}),
        ("SSL", "SCRAM-SHA-512", {"security_protocol": "SSL"}),
    ],
)
def test_kafka_security_becomes_aiokafka_options(protocol: str, mechanism: str, expected: dict[str, str]) -> None:
    settings = GatewaySettings(
        instore_callback_api_key=KEY,
        kafka_security_protocol=protocol,  # type: ignore[arg-type]
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="u",  # type: ignore[arg-type]
        kafka_sasl_password="p",
    )
    options = settings.kafka_client_options()
    assert {k: options[k] for k in expected} == expected
    assert (options.get("ssl_context") is not None) == protocol.endswith("SSL")
    if protocol.startswith("SASL"):
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")


def test_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="KAFKA_SSL_KEYFILE"):
        GatewaySettings(instore_callback_api_key=KEY, kafka_ssl_certfile="/tmp/cert.pem")


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = GatewaySettings(instore_callback_api_key=KEY, gateway_trusted_proxies=" 10.0.0.0/8, 192.0.2.7 ,, ::1")
    assert settings.trusted_proxies() == ["10.0.0.0/8", "192.0.2.7", "::1"]
    assert GatewaySettings(instore_callback_api_key=KEY).trusted_proxies() == []
    for bad in ("*", "ingress.local", "10.0.0.0/33"):  # "*" would let every client choose its address
        with pytest.raises(ValueError, match="GATEWAY_TRUSTED_PROXIES"):
            GatewaySettings(instore_callback_api_key=KEY, gateway_trusted_proxies=bad)


@pytest.mark.parametrize("value", ["127.0.0.1:9092", "kafka-0:9092, kafka-1:9093", "[::1]:9092"])
def test_bootstrap_servers_take_host_port_lists(value: str) -> None:
    settings = GatewaySettings(instore_callback_api_key="k" * 32, kafka_bootstrap_servers=value)
    assert settings.kafka_bootstrap_servers == value.replace(" ", "")


@pytest.mark.parametrize("value", ["", "kafka", "a:b:c", "kafka:0", "kafka:65536", ":9092", "::1:9092", "kafka:9092,"])
def test_bootstrap_servers_that_are_not_host_port_are_refused_at_start(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INSTORE_CALLBACK_API_KEY", "k" * 32)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", value)
    with pytest.raises(SystemExit) as exit_:
        load_settings(GatewaySettings, "instore-gateway")
    assert exit_.value.code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err
