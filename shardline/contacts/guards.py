"""FastAPI dependencies for the org node's routes: who is calling, and may they."""

from __future__ import annotations

from fastapi import Depends, Header, HTTPException, Path

from shardline.contacts import auth
from shardline.core import bearer


def make(secrets_: dict[str, bytes]):
    """``(principal, admin)`` dependencies for the orgs whose JWT secrets are given."""

    def principal(
        org: str = Path(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$"),
        authorization: str | None = Header(default=None),
    ) -> auth.Principal:
        if org not in secrets_:
            raise HTTPException(404, f"org {org} is not served by this node")
        token = bearer.presented(authorization)
        if not token:
            raise HTTPException(
                401,
                "send `Authorization: Bearer <token>` (`shardline contacts token`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            who = auth.verify(secrets_[org], token)
        except auth.TokenError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        if who.org != org:
            raise HTTPException(403, f"this token is for {who.org}, not {org}")
        return who

    def admin(who: auth.Principal = Depends(principal)) -> auth.Principal:
        if who.role != "admin":
            raise HTTPException(
                403,
                f"{who.subject} has the {who.role} role; loading and reading contacts needs admin",
            )
        return who

    return principal, admin
