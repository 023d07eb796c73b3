"""Private transactions, the pure part: sealed payloads, key wraps, vote digests, the policy.

A payload (an ABI-encoded call to the private contract) is encrypted once under a fresh key with
XChaCha20-Poly1305; the key is wrapped for each stakeholder by X25519 with one ephemeral key per
transaction, BLAKE2b as the KDF and ChaCha20-Poly1305 (ECIES). The payload hash that goes on
chain is the SHA3-256 of the ciphertext, which is also the ciphertext's name in the blob store,
so whatever is fetched is checked against the chain before it is opened. Every AEAD binds the
group, and every wrap also the payload hash and the stakeholder's index, so neither a wrap nor a
ciphertext can be moved to another transaction or group.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import IntEnum

from eth_abi import encode as abi_encode
from eth_keys import keys
from eth_keys.exceptions import BadSignature, ValidationError
from eth_utils import keccak
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

KEY_BYTES = 32
NONCE_BYTES = 24  # XChaCha20-Poly1305: a random nonce is safe
WRAP_BYTES = KEY_BYTES + 16
# keccak256(rlp("")): the storage root of an account with no storage
EMPTY_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
ZERO_ROOT = bytes(32)


class Status(IntEnum):
    """A private transaction's status on the mediator (``PENDING`` until it settles)."""

    PENDING = 0
    YES = 1
    NO = 2
    FAILED = 3


class PrivTxError(ValueError):
    """A private transaction that cannot be opened or settled; says which and why."""


class PayloadHashMismatch(PrivTxError):
    """The ciphertext does not hash to the payload hash on chain: it was swapped or damaged."""


class WrapError(PrivTxError):
    """The key wrap for this stakeholder does not open (wrong key, or tampered)."""


class PayloadError(PrivTxError):
    """The ciphertext hashes right but does not decrypt under the unwrapped key."""


@dataclass(frozen=True)
class SealedPayload:
    ciphertext: bytes  # nonce || XChaCha20-Poly1305(payload)
    payload_hash: bytes  # SHA3-256(ciphertext)
    ephemeral_pk: bytes  # X25519, 32 bytes
    wraps: tuple[bytes, ...]  # one per stakeholder, in the group's member order


def payload_hash(ciphertext: bytes) -> bytes:
    return hashlib.sha3_256(ciphertext).digest()


def _wrap_key(shared: bytes, ephemeral_pk: bytes, member_pk: bytes) -> bytes:
    return hashlib.blake2b(
        shared + ephemeral_pk + member_pk, digest_size=KEY_BYTES, person=b"shardline.wrap"
    ).digest()


def _wrap_ad(group: bytes, phash: bytes, index: int) -> bytes:
    return b"shardline.privtx.wrap" + group + phash + index.to_bytes(2, "big")


def seal_payload(payload: bytes, group: bytes, member_pks: list[bytes]) -> SealedPayload:
    """Encrypt ``payload`` for the group's members (X25519 public keys, in member order)."""
    if len(group) != 32:
        raise PrivTxError(f"a group id is 32 bytes, not {len(group)}")
    for i, pk in enumerate(member_pks):
        if len(pk) != 32:
            raise PrivTxError(f"member {i}'s sealing key is {len(pk)} bytes, not 32")
    key = secrets.token_bytes(KEY_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        payload, b"shardline.privtx.payload" + group, nonce, key
    )
    phash = payload_hash(ciphertext)
    eph_sk = secrets.token_bytes(32)
    eph_pk = sodium.crypto_scalarmult_base(eph_sk)
    wraps = []
    for i, pk in enumerate(member_pks):
        shared = sodium.crypto_scalarmult(eph_sk, pk)
        wraps.append(
            sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
                key, _wrap_ad(group, phash, i), bytes(12), _wrap_key(shared, eph_pk, pk)
            )
        )
    return SealedPayload(ciphertext, phash, eph_pk, tuple(wraps))


def unwrap_key(
    wrap: bytes, ephemeral_pk: bytes, member_sk: bytes, group: bytes, phash: bytes, index: int
) -> bytes:
    """The payload key from this member's wrap; raises WrapError if it does not open."""
    if len(wrap) != WRAP_BYTES or len(ephemeral_pk) != 32:
        raise WrapError(f"wrap {index} is malformed ({len(wrap)} bytes, expected {WRAP_BYTES})")
    member_pk = sodium.crypto_scalarmult_base(member_sk)
    try:
        shared = sodium.crypto_scalarmult(member_sk, ephemeral_pk)
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
            wrap,
            _wrap_ad(group, phash, index),
            bytes(12),
            _wrap_key(shared, ephemeral_pk, member_pk),
        )
    except (CryptoError, ValueError) as exc:
        raise WrapError(
            f"the key wrap for member {index} of payload {phash.hex()} does not open with this "
            "member's sealing key: the sender used another key, or the wrap was tampered with"
        ) from exc


def open_payload(ciphertext: bytes, key: bytes, group: bytes, expected_hash: bytes) -> bytes:
    """The plaintext call, after checking the ciphertext against the on-chain payload hash."""
    got = payload_hash(ciphertext)
    if not hmac.compare_digest(got, expected_hash):
        raise PayloadHashMismatch(
            f"the ciphertext fetched for payload {expected_hash.hex()} hashes to {got.hex()}: "
            "it is not the one submitted on chain; it is ignored"
        )
    if len(ciphertext) < NONCE_BYTES + 16:
        raise PayloadError(f"payload {expected_hash.hex()} is too short to be a ciphertext")
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext[NONCE_BYTES:],
            b"shardline.privtx.payload" + group,
            ciphertext[:NONCE_BYTES],
            key,
        )
    except CryptoError as exc:
        raise PayloadError(
            f"payload {expected_hash.hex()} does not decrypt under its wrapped key"
        ) from exc


def vote_digest(
    chain_id: int, mediator: str, group: bytes, phash: bytes, old_root: bytes, new_root: bytes
) -> bytes:
    """What a member signs for an aggregate vote; equal to ``Mediator.voteDigest``."""
    return keccak(
        abi_encode(
            ["string", "uint256", "address", "bytes32", "bytes32", "bytes32", "bytes32"],
            ["shardline.privtx.vote", chain_id, mediator, group, phash, old_root, new_root],
        )
    )


_PREVOTE_TAG = b"shardline.privtx.prevote"
# abi.encode(string, uint256, address, bytes32, bytes32, uint64, bytes32, bytes32, bytes32): nine
# head words (the string's is its offset, 9 * 32), then the string's length and its padded bytes
_PREVOTE_TAIL = len(_PREVOTE_TAG).to_bytes(32, "big") + _PREVOTE_TAG.ljust(
    -(-len(_PREVOTE_TAG) // 32) * 32, b"\0"
)


def seal_hash(ephemeral_pk: bytes, wraps) -> bytes:
    """``Mediator.sealHash``: h = ephemeral key; h = keccak(h || wrap) for each wrap in order."""
    h = bytes(ephemeral_pk)
    for w in wraps:
        h = keccak(h + bytes(w))
    return h


def pre_vote_digest(
    chain_id: int,
    mediator: str,
    group: bytes,
    phash: bytes,
    seq: int,
    seal: bytes,
    old_root: bytes,
    new_root: bytes,
) -> bytes:
    """What a member signs for a vote cast ahead of the submission; equal to
    ``Mediator.preVoteDigest``. It names the transaction's position in the group's sequence,
    so the vote counts only where the member executed it, and the key wraps it opened
    (``seal_hash``), so it counts only if the chain carries those. (ABI-encoded by hand: it is
    on the hot path of every private transaction; a test checks it against eth_abi.)"""
    if not all(len(x) == 32 for x in (group, phash, seal, old_root, new_root)):
        raise ValueError("group, payload hash, seal hash and roots are 32 bytes each")
    return keccak(
        b"".join(
            (
                (9 * 32).to_bytes(32, "big"),
                chain_id.to_bytes(32, "big"),
                bytes(12) + bytes.fromhex(mediator.removeprefix("0x")),
                group,
                phash,
                seq.to_bytes(32, "big"),
                seal,
                old_root,
                new_root,
                _PREVOTE_TAIL,
            )
        )
    )


@dataclass(frozen=True)
class PreVote:
    """A member's vote on a pushed payload, signed (secp256k1) by its chain account."""

    member: int
    old_root: bytes
    new_root: bytes
    sig: bytes  # r (32) || s (32) || v (1: 0 or 1)

    def vrs(self) -> tuple[int, bytes, bytes]:
        """v (27 or 28), r and s, as ``ecrecover`` takes them."""
        return 27 + self.sig[64], self.sig[:32], self.sig[32:64]


def sign_pre_vote(account_key: bytes | keys.PrivateKey, digest: bytes) -> bytes:
    """A signature on ``digest`` (no message prefix) as r || s || v, s in the lower half."""
    key = account_key if isinstance(account_key, keys.PrivateKey) else keys.PrivateKey(account_key)
    return key.sign_msg_hash(digest).to_bytes()


def pre_vote_signer(digest: bytes, sig: bytes) -> str | None:
    """The checksummed address that signed ``digest``, or None for a signature that is not one."""
    try:
        return keys.Signature(sig).recover_public_key_from_msg_hash(digest).to_checksum_address()
    except (BadSignature, ValidationError, ValueError):
        return None


# -- the policy ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    status: Status
    old_root: bytes
    new_root: bytes
    odd: tuple[int, ...]  # members whose vote differs from the agreed or the most common one
    silent: tuple[int, ...]  # members that have not voted


def check_policy(size: int, threshold: int) -> None:
    if not 1 <= threshold <= size:
        raise PrivTxError(f"threshold {threshold} is out of range for {size} stakeholders")
    if 2 * threshold <= size:
        raise PrivTxError(
            f"threshold {threshold} of {size} is not a majority: two different outcomes could "
            f"both reach it; use at least {size // 2 + 1}"
        )


def decide(
    votes: dict[int, tuple[bytes, bytes]], size: int, threshold: int, group_root: bytes
) -> Decision:
    """The mediator's rule, as a function of the votes so far (member index -> (old, new)).

    A new root of zero is a refusal. YES when ``threshold`` members agree on (old, new) and old
    is the group's root; NO when they
    agree on another base, or when no outcome can reach the threshold any more; else PENDING.
    """
    counts: dict[tuple[bytes, bytes], int] = {}
    for pair in votes.values():
        if pair[1] != ZERO_ROOT:  # a refusal counts as a vote, never towards an outcome
            counts[pair] = counts.get(pair, 0) + 1
    silent = tuple(i for i in range(size) if i not in votes)
    best = max(counts.items(), key=lambda kv: kv[1], default=None)
    ref = best[0] if best else (group_root, group_root)
    odd = tuple(sorted(i for i, pair in votes.items() if pair != ref))
    if best and best[1] >= threshold:
        status = Status.YES if ref[0] == group_root else Status.NO
        return Decision(status, ref[0], ref[1], odd, silent)
    if (best[1] if best else 0) + len(silent) < threshold:
        return Decision(Status.NO, group_root, group_root, odd, silent)
    return Decision(Status.PENDING, group_root, group_root, odd, silent)
