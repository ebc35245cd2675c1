"""The secret scan of the suite finds a canary wherever it hides: log text, return values, chained exceptions."""

from __future__ import annotations

from tests.reliability.canary import CANARIES, CODE, LeakScan


def _chained() -> BaseException:
    """A clean exception whose cause (shown in its traceback) holds the secret."""
    try:
        try:
            raise ValueError(f"https://portal.example.com/rest/1/{CODE}/profile")
        except ValueError as cause:
            raise RuntimeError("wrapped") from cause
    except RuntimeError as exc:
        return exc


def test_scan_finds_a_canary_when_it_hides_in_any_kind_of_text():
    scan = LeakScan()
    scan.add("clean log", "Bitrix24 profile -> HTTP 200 https://portal.example.com/rest/1/***/profile")
    assert scan.leaks() == []
    scan.add("return value", {"url": f"https://portal.example.com/rest/1/{CODE}/"})
    scan.exception("exception", _chained())
    assert {origin for origin, _ in scan.leaks()} == {"return value", "exception"}


def test_scan_looks_for_rotated_tokens_when_told_about_them():
    scan = LeakScan()
    scan.add("log", "token rotated-token-1234 used")
    assert scan.leaks() == []
    scan.secret("rotated-token-1234")
    assert scan.leaks() == [("log", "rotated-token-1234")]
    assert set(CANARIES) <= scan.secrets
