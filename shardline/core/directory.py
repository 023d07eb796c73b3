"""Who is who on the bus: participant id -> public keys, as the on-chain registry says.

Workers fill it from their own chain endpoint; the bus layer only reads it. An unknown sender
triggers one refresh before a message is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

ORG = 1
GATEWAY = 2


@dataclass(frozen=True)
class Participant:
    id: str
    signing_pk: bytes
    sealing_pk: bytes
    account: str
    kind: int
    active: bool = True


class UnknownParticipant(LookupError):
    pass


class Directory:
    def __init__(
        self,
        participants: Iterable[Participant] = (),
        refresh: Callable[[], Awaitable[Iterable[Participant]]] | None = None,
    ) -> None:
        self._by_id = {p.id: p for p in participants}
        self._refresh = refresh

    def set(self, participants: Iterable[Participant]) -> None:
        self._by_id = {p.id: p for p in participants}

    async def refresh(self) -> None:
        if self._refresh is not None:
            self.set(await self._refresh())

    def get(self, participant_id: str) -> Participant:
        p = self._by_id.get(participant_id)
        if p is None or not p.active:
            raise UnknownParticipant(
                f"{participant_id!r} is not an active participant in the on-chain org registry"
            )
        return p

    async def resolve(self, participant_id: str) -> Participant:
        try:
            return self.get(participant_id)
        except UnknownParticipant:
            await self.refresh()
            return self.get(participant_id)

    def orgs(self) -> list[Participant]:
        return [p for p in self._by_id.values() if p.kind == ORG and p.active]
