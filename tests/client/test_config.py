from __future__ import annotations

import pytest

from airflow_provider_bitrix24.client.config import (
    DEFAULT_OAUTH_URL,
    OAuthCredentials,
    RateLimit,
    WebhookAuth,
    is_loopback,
    parse_connection,
)
from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError

CODE = "fake-webhook-0000"


def test_webhook_url_in_host_is_split_into_user_and_code():
    config = parse_connection(host=f"https://portal.bitrix24.com/rest/7/{CODE}/")
    assert config.base_url == "https://portal.bitrix24.com"
    assert config.auth == WebhookAuth(user_id=7, code=CODE)
    assert config.rate_limit == RateLimit(50, 2.0)


def test_split_form_accepts_host_without_scheme_and_with_port():
    config = parse_connection(host="portal.bitrix24.com:8443", login="3", password=CODE)
    assert config.base_url == "https://portal.bitrix24.com:8443"
    assert config.auth == WebhookAuth(user_id=3, code=CODE)


def test_port_field_is_added_to_host():
    assert parse_connection(host="portal.example", login="1", password=CODE, port=444).base_url == (
        "https://portal.example:444"
    )


@pytest.mark.parametrize("host", ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9000", "http://127.9.9.9"])
def test_plain_http_is_accepted_for_loopback(host):
    assert parse_connection(host=host, login="1", password=CODE).base_url.startswith("http://")


def test_oauth_form_reads_extras_and_defaults_the_token_endpoint():
    config = parse_connection(
        host="https://portal.bitrix24.com",
        extra={"auth_type": "oauth", "client_id": "app.1", "client_secret": "s3cr3t-xx", "refresh_token": "r-1"},
    )
    assert isinstance(config.auth, OAuthCredentials)
    assert config.auth.oauth_url == DEFAULT_OAUTH_URL
    assert config.auth.access_token is None


def test_legacy_prefixed_extras_are_read():
    config = parse_connection(host=f"https://p.bitrix24.com/rest/1/{CODE}", extra={"extra__bitrix24__timeout": "12"})
    assert config.timeout == 12.0


def test_common_extras():
    config = parse_connection(
        host=f"https://p.bitrix24.com/rest/1/{CODE}/",
        extra={"timeout": 5, "verify": "false", "max_retries": 0, "rate_limit": {"burst": 10, "per_second": 1}},
    )
    assert (config.timeout, config.verify, config.max_retries) == (5.0, False, 0)
    assert config.rate_limit == RateLimit(10, 1.0)
    assert parse_connection(host=f"https://p/rest/1/{CODE}", extra={"rate_limit": "enterprise"}).rate_limit == (
        RateLimit(250, 5.0)
    )
    assert parse_connection(host=f"https://p/rest/1/{CODE}", extra={"verify": "/etc/ca.pem"}).verify == "/etc/ca.pem"


BAD = [
    # (fields, field named in the error, words in the problem)
    ({"host": ""}, "host", "empty"),
    ({"host": None}, "host", "empty"),
    ({"host": "http://portal.bitrix24.com/rest/1/abc/"}, "host", "plain http"),
    ({"host": "http://10.0.0.5", "login": "1", "password": CODE}, "host", "plain http"),
    ({"host": "ftp://portal.bitrix24.com", "login": "1", "password": CODE}, "host", "scheme"),
    ({"host": "https://portal.bitrix24.com/rest/1/abc/?x=1"}, "host", "query"),
    ({"host": "https://portal.bitrix24.com/crm/"}, "host", "path"),
    ({"host": "https://portal.bitrix24.com/rest/0/abc/"}, "host (webhook user id)", "positive integer"),
    ({"host": "https://portal.bitrix24.com/rest/x/abc/"}, "host (webhook user id)", "positive integer"),
    ({"host": "https://portal.bitrix24.com/rest/1/abc/", "login": "1"}, "login/password", "must be empty"),
    ({"host": "https://portal.bitrix24.com"}, "password", "empty"),
    ({"host": "https://portal.bitrix24.com", "password": CODE}, "login", "empty"),
    ({"host": "https://portal.bitrix24.com", "login": "abc", "password": CODE}, "login", "positive integer"),
    ({"host": "https://portal.bitrix24.com", "login": "1", "password": "has space"}, "password", "characters"),
    ({"host": "https://portal.bitrix24.com:99999", "login": "1", "password": CODE}, "host", "valid URL"),
    ({"host": "https://p.bitrix24.com:443", "login": "1", "password": CODE, "port": 80}, "port", "disagrees"),
    ({"host": "https://p.bitrix24.com", "extra": {"auth_type": "saml"}}, "extra.auth_type", "webhook"),
    ({"host": "https://p.bitrix24.com", "extra": {"auth_type": "oauth"}}, "extra.client_id", "required"),
    (
        {"host": "https://p.bitrix24.com", "extra": {"auth_type": "oauth", "client_id": "a", "client_secret": "b"}},
        "extra.refresh_token",
        "required",
    ),
    (
        {
            "host": "https://p.bitrix24.com",
            "extra": {
                "auth_type": "oauth",
                "client_id": "a",
                "client_secret": "b",
                "refresh_token": "c",
                "oauth_url": "http://oauth.example/",
            },
        },
        "extra.oauth_url",
        "plain http",
    ),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"timeout": 0}}, "extra.timeout", "> 0"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"timeout": "soon"}}, "extra.timeout", "number"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"max_retries": -1}}, "extra.max_retries", "integer"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"max_retries": True}}, "extra.max_retries", "integer"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"max_retries": False}}, "extra.max_retries", "integer"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"rate_limit": "turbo"}}, "extra.rate_limit", "unknown preset"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"rate_limit": {"burst": 5}}}, "extra.rate_limit", "both"),
    (
        {"host": f"https://p/rest/1/{CODE}", "extra": {"rate_limit": {"burst": 5, "per_second": 0}}},
        "extra.rate_limit.per_second",
        "> 0",
    ),
    ({"host": f"https://p/rest/1/{CODE}", "extra": {"verify": 3}}, "extra.verify", "CA bundle"),
    ({"host": f"https://p/rest/1/{CODE}", "extra": "[]"}, "extra", "JSON object"),
]


@pytest.mark.parametrize(("fields", "field", "problem"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_malformed_connection_names_the_field(fields, field, problem):
    with pytest.raises(Bitrix24ConfigError) as info:
        parse_connection(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(f"INVALID_CONNECTION: {field}: ")
    assert problem in str(info.value)


def test_config_errors_never_echo_the_webhook_code():
    secret = "sup3r-secret-code with space"
    with pytest.raises(Bitrix24ConfigError) as info:
        parse_connection(host="https://p.bitrix24.com", login="1", password=secret)
    assert secret not in str(info.value)
    assert "sup3r" not in repr(info.value)


def test_reprs_hide_secrets():
    config = parse_connection(host=f"https://p.bitrix24.com/rest/1/{CODE}/")
    assert CODE not in repr(config)
    oauth = parse_connection(
        host="https://p.bitrix24.com",
        extra={"auth_type": "oauth", "client_id": "a", "client_secret": "cs-123456", "refresh_token": "rt-123456"},
    )
    assert "cs-123456" not in repr(oauth)
    assert "rt-123456" not in repr(oauth)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("portal.bitrix24.com", False),
        ("localhost.evil.com", False),
    ],
)
def test_is_loopback(name, expected):
    assert is_loopback(name) is expected
