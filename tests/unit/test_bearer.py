"""What credential an HTTP request presents to the gateway's, records' and contacts' APIs."""

from __future__ import annotations

import pytest

from shardline.core.bearer import presented


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        ("Bearer k-123", None, "k-123"),
        ("bearer k-123", None, "k-123"),  # the scheme is case-insensitive (RFC 7235)
        ("BEARER   k-123  ", None, "k-123"),
        ("Bearer k-123", "k-456", "k-456"),  # X-API-Key, where a route takes it, comes first
        (None, " k-456 ", "k-456"),
        ("Bearer k-123", "  ", "k-123"),
        ("k-123", None, ""),  # no scheme: not taken for a key
        ("Basic dXNlcjpwYXNz", None, ""),
        ("Bearer", None, ""),
        ("", None, ""),
        (None, None, ""),
    ],
)
def test_the_credential_presented(authorization, api_key, expected):
    assert presented(authorization, api_key) == expected
