"""Patient-controlled records: threshold proxy re-encryption with umbral-pre, as plain functions.

The owner encrypts a record under their own Umbral key; the ciphertext is addressed by its
SHA-256. To let a reader in, the owner splits a re-encryption key into n key fragments (kfrags),
m of which are needed, one per proxy. A proxy turns the record's capsule into a capsule fragment
(cfrag) for that reader; the reader checks each cfrag against the owner's keys and the capsule,
and opens the record from m good ones. No proxy, and no m-1 of them, can read the record.

Nothing here does I/O; the proxies, the reader flow and the chain sit on top.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import umbral_pre as umbral

from shardline.core.keys import KeyFileError, ParticipantKeys

UMBRAL_PK_BYTES = 33
CAPSULE_BYTES = 105
RECORD_ID_BYTES = 16


# ---- errors: each names the record and the reader, and says what to do ---------------------
class RecordError(Exception):
    """A record could not be stored, granted or read; ``str()`` is meant for the person asking."""

    def __init__(self, message: str, *, record_id: str = "", reader_id: str = "") -> None:
        self.record_id = record_id
        self.reader_id = reader_id
        super().__init__(message)


class UnknownRecord(RecordError):
    pass


class UnknownReader(RecordError):
    pass


class AccessRefused(RecordError):
    """No live grant: never granted, revoked or expired (``reason`` says which)."""

    def __init__(self, message: str, *, reason: str, record_id: str = "", reader_id: str = ""):
        self.reason = reason
        super().__init__(message, record_id=record_id, reader_id=reader_id)


class NotEnoughProxies(RecordError):
    pass


class TamperedCiphertext(RecordError):
    pass


class BadFragment(ValueError):
    """A key or capsule fragment that does not verify against the owner's keys."""


# ---- ids ------------------------------------------------------------------------------------
def new_record_id() -> str:
    return secrets.token_hex(RECORD_ID_BYTES)


def check_record_id(record_id: str) -> str:
    try:
        raw = bytes.fromhex(record_id)
    except ValueError:
        raw = b""
    if len(raw) != RECORD_ID_BYTES or record_id != record_id.lower():
        raise UnknownRecord(
            f"record id {record_id!r} is not 32 lower-case hex digits; "
            "`shardline records list` shows your records",
            record_id=record_id,
        )
    return record_id


def content_hash(ciphertext: bytes) -> bytes:
    """The blob store key and the on-chain binding of a record's ciphertext."""
    return hashlib.sha256(ciphertext).digest()


def ciphertext_matches(ciphertext: bytes, expected_hash: bytes) -> bool:
    return hmac.compare_digest(content_hash(ciphertext), expected_hash)


# ---- keys -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartyKeys:
    """A records party (a patient who owns records, or a reader such as a hospital).

    ``participant`` signs bus messages (Ed25519), receives sealed boxes (X25519) and sends chain
    transactions; ``umbral_secret`` decrypts (the owner's own records, or re-encrypted ones for a
    reader); ``signer_secret`` signs the key fragments an owner hands to proxies.
    """

    participant: ParticipantKeys
    umbral_secret: bytes = field(repr=False)
    signer_secret: bytes = field(repr=False)

    @classmethod
    def generate(cls, party_id: str) -> PartyKeys:
        return cls(
            ParticipantKeys.generate(party_id),
            umbral.SecretKey.random().to_be_bytes(),
            umbral.SecretKey.random().to_be_bytes(),
        )

    @property
    def id(self) -> str:
        return self.participant.participant_id

    @property
    def umbral_sk(self) -> umbral.SecretKey:
        return umbral.SecretKey.from_be_bytes(self.umbral_secret)

    @property
    def umbral_pk(self) -> bytes:
        return self.umbral_sk.public_key().to_compressed_bytes()

    @property
    def signer(self) -> umbral.Signer:
        return umbral.Signer(umbral.SecretKey.from_be_bytes(self.signer_secret))

    @property
    def verifying_pk(self) -> bytes:
        return self.signer.verifying_key().to_compressed_bytes()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        p = self.participant
        data = {
            "participant_id": p.participant_id,
            "signing_seed": p.signing_seed.hex(),
            "sealing_secret": p.sealing_secret.hex(),
            "chain_key": p.chain_key.hex(),
            "umbral_secret": self.umbral_secret.hex(),
            "signer_secret": self.signer_secret.hex(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)

    @classmethod
    def load(cls, path: Path) -> PartyKeys:
        participant = ParticipantKeys.load(path)
        try:
            data = json.loads(Path(path).read_text())
            keys = cls(
                participant,
                bytes.fromhex(data["umbral_secret"]),
                bytes.fromhex(data["signer_secret"]),
            )
            keys.umbral_sk, keys.signer  # noqa: B018 (a malformed scalar fails here, not later)
            return keys
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyFileError(
                f"key file {path} is not a records key file ({exc}): make one with "
                "`shardline records keygen <id>`"
            ) from exc


# Parsing a key or a capsule checks its curve points, which costs about as much as a
# re-encryption; keys and capsules are immutable values, so each is parsed once per process.
@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> umbral.PublicKey:
    return umbral.PublicKey.from_compressed_bytes(raw)


@functools.lru_cache(maxsize=4096)
def _capsule(raw: bytes) -> umbral.Capsule:
    return umbral.Capsule.from_bytes(raw)


def public_key(raw: bytes, what: str) -> umbral.PublicKey:
    try:
        return _public_key(bytes(raw))
    except (ValueError, TypeError) as exc:
        raise BadFragment(f"{what} is not a valid Umbral public key: {exc}") from None


# ---- on-chain state as values ---------------------------------------------------------------
@dataclass(frozen=True)
class Party:
    id: str
    account: str
    signing_pk: bytes
    sealing_pk: bytes
    umbral_pk: bytes
    verifying_pk: bytes


@dataclass(frozen=True)
class RecordInfo:
    record_id: str
    owner: str
    content_hash: bytes
    capsule: bytes
    size: int


LIVE, REVOKED, EXPIRED, NOT_GRANTED = "live", "revoked", "expired", "not granted"


@dataclass(frozen=True)
class Grant:
    record_id: str
    reader: str
    threshold: int
    proxies: tuple[str, ...]
    expires_at: int
    version: int
    revoked: bool

    def status(self, now: float) -> str:
        """``now`` is the later of the caller's clock and the chain's: expiry errs on refusing."""
        if self.version == 0:
            return NOT_GRANTED
        if self.revoked:
            return REVOKED
        if now >= self.expires_at:
            return EXPIRED
        return LIVE

    def refusal(self, now: float) -> AccessRefused | None:
        status = self.status(now)
        if status == LIVE:
            return None
        what = {
            NOT_GRANTED: "has no grant",
            REVOKED: "had its grant revoked by the owner",
            EXPIRED: f"had a grant that expired at {self.expires_at} (unix time)",
        }[status]
        return AccessRefused(
            f"reader {self.reader} {what} for record {self.record_id}; "
            "ask the record's owner for a new grant",
            reason=status,
            record_id=self.record_id,
            reader_id=self.reader,
        )


# ---- the cryptography -----------------------------------------------------------------------
def encrypt(owner_umbral_pk: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """(capsule, ciphertext) under the owner's key; the ciphertext carries its own MAC."""
    capsule, ciphertext = umbral.encrypt(public_key(owner_umbral_pk, "owner key"), plaintext)
    return bytes(capsule), bytes(ciphertext)


def decrypt_own(owner: PartyKeys, capsule: bytes, ciphertext: bytes) -> bytes:
    return bytes(umbral.decrypt_original(owner.umbral_sk, load_capsule(capsule), ciphertext))


def load_capsule(raw: bytes) -> umbral.Capsule:
    try:
        return _capsule(bytes(raw))
    except (ValueError, TypeError) as exc:
        raise BadFragment(f"not a capsule: {exc}") from None


def make_kfrags(
    owner: PartyKeys, reader_umbral_pk: bytes, threshold: int, shares: int
) -> list[bytes]:
    """n key fragments, m of which re-encrypt for the reader; signed by the owner's signer."""
    if not 1 <= threshold <= shares:
        raise ValueError(f"threshold {threshold} must be between 1 and the {shares} proxies")
    kfrags = umbral.generate_kfrags(
        delegating_sk=owner.umbral_sk,
        receiving_pk=public_key(reader_umbral_pk, "reader key"),
        signer=owner.signer,
        threshold=threshold,
        shares=shares,
        sign_delegating_key=True,
        sign_receiving_key=True,
    )
    return [bytes(k) for k in kfrags]


def verify_kfrag(
    raw: bytes, verifying_pk: bytes, owner_umbral_pk: bytes, reader_umbral_pk: bytes
) -> umbral.VerifiedKeyFrag:
    """A proxy accepts a kfrag only when the owner signed it for this owner and reader."""
    try:
        return umbral.KeyFrag.from_bytes(bytes(raw)).verify(
            verifying_pk=public_key(verifying_pk, "owner verifying key"),
            delegating_pk=public_key(owner_umbral_pk, "owner key"),
            receiving_pk=public_key(reader_umbral_pk, "reader key"),
        )
    except (ValueError, TypeError, umbral.VerificationError) as exc:
        raise BadFragment(f"key fragment does not verify: {exc}") from None


def reencrypt(capsule: bytes, kfrag: umbral.VerifiedKeyFrag) -> bytes:
    return bytes(umbral.reencrypt(capsule=load_capsule(capsule), kfrag=kfrag))


@dataclass(frozen=True)
class ReadContext:
    """What a reader needs to check cfrags and open a record; all of it from the chain."""

    record: RecordInfo
    owner: Party
    reader: Party
    threshold: int

    def verify_cfrag(self, raw: bytes) -> umbral.VerifiedCapsuleFrag:
        try:
            return umbral.CapsuleFrag.from_bytes(bytes(raw)).verify(
                capsule=load_capsule(self.record.capsule),
                verifying_pk=public_key(self.owner.verifying_pk, "owner verifying key"),
                delegating_pk=public_key(self.owner.umbral_pk, "owner key"),
                receiving_pk=public_key(self.reader.umbral_pk, "reader key"),
            )
        except (ValueError, TypeError, umbral.VerificationError) as exc:
            raise BadFragment(f"capsule fragment does not verify: {exc}") from None


@dataclass
class CfragCollector:
    """Gathers capsule fragments from proxies: a bad one is named and never used.

    ``add`` verifies a fragment as it comes (``CapsuleFrag.verify``, about as costly as a
    re-encryption). ``take`` only parses it, and ``open`` verifies the fragments it took only
    when the m of them do not open the record: a read whose fragments are good pays for no
    verification, and one with a bad fragment names it and goes on with the others. That is
    safe because opening checks the combination itself: umbral-pre's ``decrypt_reencrypted``
    refuses fragments whose combination does not match the capsule's own check ("internal
    validation failed"), and the key they give must pass the DEM's MAC over the whole
    ciphertext, which no proxy can aim at (the key is a hash of a Diffie-Hellman value only the
    reader can compute). So m fragments that open the record were correct re-encryptions and
    the plaintext is the owner's; only a fragment whose re-encryption is right but whose proof
    is not goes unnamed, and it changed nothing.
    """

    ctx: ReadContext
    good: dict[str, umbral.VerifiedCapsuleFrag] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    # proxy -> the fragment as it came, for those taken without verification
    unchecked: dict[str, bytes] = field(default_factory=dict)
    _seen: dict[bytes, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return len(self.good) >= self.ctx.threshold

    def _fresh(self, proxy: str, raw: bytes) -> bool:
        """Not yet heard from this proxy, and not a copy of another proxy's fragment."""
        if proxy in self.good or proxy in self.bad:
            return False
        copied = self._seen.get(raw)
        if copied is not None:
            self.bad[proxy] = f"capsule fragment does not verify: it is a copy of {copied}'s"
            return False
        self._seen[raw] = proxy
        return True

    def add(self, proxy: str, raw: bytes) -> bool:
        raw = bytes(raw)
        if not self._fresh(proxy, raw):
            return False
        try:
            self.good[proxy] = self.ctx.verify_cfrag(raw)
        except BadFragment as exc:
            self.bad[proxy] = str(exc)
            return False
        return True

    def take(self, proxy: str, raw: bytes) -> bool:
        """Keep a fragment parsed but not verified; ``open`` verifies it if it must."""
        raw = bytes(raw)
        if not self._fresh(proxy, raw):
            return False
        try:
            self.good[proxy] = umbral.CapsuleFrag.from_bytes(raw).skip_verification()
        except (ValueError, TypeError) as exc:
            self.bad[proxy] = f"capsule fragment does not verify: not a capsule fragment ({exc})"
            return False
        self.unchecked[proxy] = raw
        return True

    def check(self) -> list[str]:
        """Verify the fragments taken unverified; the bad ones move to ``bad`` (returned)."""
        dropped = []
        for proxy, raw in list(self.unchecked.items()):
            del self.unchecked[proxy]
            try:
                self.good[proxy] = self.ctx.verify_cfrag(raw)
            except BadFragment as exc:
                del self.good[proxy]
                self.bad[proxy] = str(exc)
                dropped.append(proxy)
        return dropped

    def open(self, reader: PartyKeys, ciphertext: bytes, *, hash_checked: bool = False):
        """The plaintext, or None when a fragment taken unverified proved bad (it is named in
        ``bad`` and the collector wants more); ``TamperedCiphertext`` when the fragments are
        good and the ciphertext does not open."""
        try:
            return self.decrypt(reader, ciphertext, hash_checked=hash_checked)
        except TamperedCiphertext:
            if self.unchecked and self.check():
                return None
            raise

    def refuse(self, proxy: str, reason: str) -> None:
        self.refused[proxy] = reason

    def shortfall(self, proxies: tuple[str, ...]) -> NotEnoughProxies:
        r = self.ctx.record.record_id
        silent = [
            p for p in proxies if p not in self.good and p not in self.bad and p not in self.refused
        ]
        parts = [f"{len(self.good)} good capsule fragment(s) of {self.ctx.threshold} needed"]
        if self.bad:
            parts.append("bad: " + "; ".join(f"{p} ({why})" for p, why in self.bad.items()))
        if self.refused:
            parts.append("refused: " + "; ".join(f"{p} ({why})" for p, why in self.refused.items()))
        if silent:
            parts.append("no answer: " + ", ".join(silent))
        return NotEnoughProxies(
            f"record {r} for reader {self.ctx.reader.id}: "
            + "; ".join(parts)
            + "; nothing was decrypted. Try again when more proxies are online",
            record_id=r,
            reader_id=self.ctx.reader.id,
        )

    def decrypt(self, reader: PartyKeys, ciphertext: bytes, *, hash_checked: bool = False) -> bytes:
        """All or nothing: the DEM's MAC fails on any tampering, so no partial plaintext.

        ``hash_checked``: the caller has already checked that the ciphertext hashes to the
        record's on-chain content hash (the blob store does, as it reads), so it is not hashed
        again here.
        """
        r = self.ctx.record
        if not hash_checked and not ciphertext_matches(ciphertext, r.content_hash):
            raise TamperedCiphertext(
                f"the stored ciphertext of record {r.record_id} does not match its on-chain "
                f"hash (tampered or corrupted); nothing was decrypted for reader {reader.id}",
                record_id=r.record_id,
                reader_id=reader.id,
            )
        cfrags = list(self.good.values())[: self.ctx.threshold]
        try:
            return bytes(
                umbral.decrypt_reencrypted(
                    receiving_sk=reader.umbral_sk,
                    delegating_pk=public_key(self.ctx.owner.umbral_pk, "owner key"),
                    capsule=load_capsule(r.capsule),
                    verified_cfrags=cfrags,
                    ciphertext=ciphertext,
                )
            )
        except (ValueError, TypeError) as exc:
            raise TamperedCiphertext(
                f"record {r.record_id} does not decrypt for reader {reader.id} ({exc}); "
                "nothing was decrypted",
                record_id=r.record_id,
                reader_id=reader.id,
            ) from None
