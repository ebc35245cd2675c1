from __future__ import annotations

import pytest

from airflow_provider_bitrix24.client.config import (
    DEFAULT_OAUTH_URL,
    OAuthCredentials,
    RateLimit,
    WebhookAuth,
    field_title,
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
    ({"host": "https://portal.bitrix24.com/rest/0/abc/"}, "host", "user ID (/rest/<user>/...) is not a positive"),
    ({"host": "https://portal.bitrix24.com/rest/x/abc/"}, "host", "user ID (/rest/<user>/...) is not a positive"),
    ({"host": "https://portal.bitrix24.com/rest/1/a%20b/"}, "host", "code contains characters"),
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
    assert str(info.value).startswith(f"INVALID_CONNECTION: {field_title(field)}: ")
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


@pytest.mark.parametrize(
    ("fields", "title"),
    [
        ({"host": "https://p.bitrix24.com", "password": CODE}, "Webhook user ID (login)"),
        ({"host": "https://p.bitrix24.com", "login": "1"}, "Webhook code (password)"),
        ({"host": ""}, "Portal or webhook URL (host)"),
        ({"host": f"https://p/rest/1/{CODE}", "extra": {"rate_limit": "x"}}, "Rate limit (extra.rate_limit)"),
        (
            {"host": f"https://p/rest/1/{CODE}", "extra": {"rate_limit": {"burst": 0, "per_second": 1}}},
            "Rate limit (extra.rate_limit.burst)",
        ),
        ({"host": f"https://p/rest/1/{CODE}", "extra": {"timeout": -1}}, "Timeout (seconds) (extra.timeout)"),
        ({"host": "https://p", "extra": {"auth_type": "oauth"}}, "OAuth client ID (extra.client_id)"),
        (
            {
                "host": "https://p",
                "extra": {
                    "auth_type": "oauth",
                    "client_id": "a",
                    "client_secret": "b",
                    "refresh_token": "c",
                    "expires_at": "soon",
                },
            },
            "Extra Fields JSON (extra.expires_at)",
        ),
    ],
)
def test_errors_name_the_label_the_user_sees_and_the_stored_field(fields, title):
    with pytest.raises(Bitrix24ConfigError) as info:
        parse_connection(**fields)
    assert str(info.value).startswith(f"INVALID_CONNECTION: {title}: ")
    assert info.value.label == title.rsplit(" (", 1)[0]


def test_the_empty_webhook_hint_names_each_field_by_its_label():
    with pytest.raises(Bitrix24ConfigError) as info:
        parse_connection(host="https://p.bitrix24.com")
    message = str(info.value)
    for title in ("Portal or webhook URL (host)", "Webhook user ID (login)", "Webhook code (password)"):
        assert title in message


SECRET = "Zq9-secret-code-7781"
SECRET_PLACES = {
    "code typed into login": {"host": "https://p.bitrix24.com", "login": SECRET, "password": "abc"},
    "code in login and in a webhook URL": {"host": f"https://p.bitrix24.com/rest/1/{SECRET}/", "login": SECRET},
    "webhook URL over http": {"host": f"http://portal.example.com/rest/1/{SECRET}/"},
    "webhook URL on a .localhost name": {"host": f"http://portal.localhost/rest/1/{SECRET}/"},
    "code as the host name over http": {"host": f"http://{SECRET}.example.com", "login": "1", "password": "abc"},
    "webhook URL with a query": {"host": f"https://p.bitrix24.com/rest/1/{SECRET}/?x=1"},
    "webhook URL with a fragment": {"host": f"https://p.bitrix24.com/rest/1/{SECRET}/#top"},
    "code in the port": {"host": f"https://p.bitrix24.com:{SECRET}/rest/1/abc/"},
    "webhook URL with another scheme": {"host": f"ftp://p.bitrix24.com/rest/1/{SECRET}/"},
    "webhook URL with user:password": {"host": f"https://1:{SECRET}@p.bitrix24.com/"},
    "code as the user id of a webhook URL": {"host": f"https://p.bitrix24.com/rest/{SECRET}/abc/"},
    "code with a space in a webhook URL": {"host": f"https://p.bitrix24.com/rest/1/{SECRET}%20x/"},
    "code in a path that is no webhook": {"host": f"https://p.bitrix24.com/crm/{SECRET}/"},
    "code in a longer webhook path": {"host": f"https://p.bitrix24.com/rest/1/{SECRET}/profile/"},
    "webhook URL with a disagreeing port": {"host": f"https://p.bitrix24.com:444/rest/1/{SECRET}/", "port": 443},
    "webhook URL with oauth": {"host": f"https://p.bitrix24.com/rest/1/{SECRET}/", "extra": {"auth_type": "oauth"}},
    "password with a slash": {"host": "https://p.bitrix24.com", "login": "1", "password": f"{SECRET}/x"},
    "oauth endpoint over http": {
        "host": "https://p.bitrix24.com",
        "extra": {
            "auth_type": "oauth",
            "client_id": "a",
            "client_secret": "b",
            "refresh_token": "c",
            "oauth_url": f"http://oauth.example/{SECRET}/",
        },
    },
    "oauth endpoint with user:password": {
        "host": "https://p.bitrix24.com",
        "extra": {
            "auth_type": "oauth",
            "client_id": "a",
            "client_secret": "b",
            "refresh_token": "c",
            "oauth_url": f"https://a:{SECRET}@oauth.example/",
        },
    },
    "oauth with a login": {
        "host": "https://p.bitrix24.com",
        "login": SECRET,
        "extra": {"auth_type": "oauth", "client_id": "a", "client_secret": "b", "refresh_token": "c"},
    },
}


@pytest.mark.parametrize("fields", SECRET_PLACES.values(), ids=SECRET_PLACES.keys())
def test_config_errors_never_repeat_a_value_that_may_be_a_secret(fields):
    import pickle
    import traceback

    with pytest.raises(Bitrix24ConfigError) as info:
        parse_connection(**fields)
    error = info.value
    texts = [str(error), repr(error), repr(error.args), "".join(traceback.format_exception(error))]
    texts.append(str(pickle.loads(pickle.dumps(error))))
    for text in texts:
        assert SECRET not in text
        assert SECRET[:8] not in text


@pytest.mark.parametrize(
    "value",
    [
        '{"burst": 10, "per_second": 1}',
        '  {"burst": 10, "per_second": 1.0}\n',
        {"burst": 10, "per_second": 1},
        {"burst": "10", "per_second": "1"},
        # Airflow 2's form shows a stored object as a Python dict and saves what it shows.
        "{'burst': 10, 'per_second': 1}",
    ],
)
def test_rate_limit_accepts_a_mapping_or_its_json_text(value):
    config = parse_connection(host=f"https://p/rest/1/{CODE}", extra={"rate_limit": value})
    assert config.rate_limit == RateLimit(10, 1.0)


@pytest.mark.parametrize(
    ("value", "expected"), [("standard", (50, 2.0)), (" Enterprise ", (250, 5.0)), ("", (50, 2.0))]
)
def test_rate_limit_accepts_a_preset_name(value, expected):
    config = parse_connection(host=f"https://p/rest/1/{CODE}", extra={"rate_limit": value})
    assert config.rate_limit == RateLimit(*expected)


@pytest.mark.parametrize(
    ("value", "field", "problem"),
    [
        ('{"burst": 10, "per_second": 1', "extra.rate_limit", "not valid JSON"),
        ('{"burst": 10}', "extra.rate_limit", "needs both burst and per_second"),
        ('{"burst": 10, "per_second": 1, "x": 2}', "extra.rate_limit", "unknown keys"),
        ('{"burst": -1, "per_second": 1}', "extra.rate_limit.burst", "positive integer"),
        ("[10, 1]", "extra.rate_limit", "unknown preset"),
        ("{10, 1}", "extra.rate_limit", "got set"),
        ("{__import__('os')}", "extra.rate_limit", "not valid JSON"),
        (12, "extra.rate_limit", "got int"),
    ],
)
def test_rate_limit_errors_show_the_accepted_forms(value, field, problem):
    with pytest.raises(Bitrix24ConfigError) as info:
        parse_connection(host=f"https://p/rest/1/{CODE}", extra={"rate_limit": value})
    assert info.value.field == field
    assert problem in str(info.value)
    if field == "extra.rate_limit":
        assert 'standard or enterprise or {"burst": N, "per_second": R}' in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("LOCALHOST", True),
        ("127.255.255.254", True),
        ("[::1]", True),
        ("::1", True),
        ("x.localhost", False),
        ("localhost.", False),
        ("localhost.localdomain", False),
        ("128.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),
        ("[::ffff:7f00:1]", False),
        ("127.1", False),
        ("", False),
    ],
)
def test_loopback_is_decided_by_the_address_alone(name, expected):
    assert is_loopback(name) is expected


def test_plain_http_to_a_localhost_subdomain_is_refused():
    with pytest.raises(Bitrix24ConfigError, match="plain http"):
        parse_connection(host="http://portal.localhost:8080", login="1", password=CODE)
