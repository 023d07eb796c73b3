"""The credential an HTTP request presents: ``Authorization: Bearer <credential>`` (the scheme
in any case, RFC 7235), or an ``X-API-Key`` header where a route takes one."""

from __future__ import annotations


def presented(authorization: str | None, api_key: str | None = None) -> str:
    """The key or token presented, or "" when there is none (then the caller answers 401)."""
    if api_key and api_key.strip():
        return api_key.strip()
    scheme, _, credential = (authorization or "").strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""
