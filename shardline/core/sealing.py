"""Sealing to one reader (libsodium sealed boxes) and Ed25519 signatures."""

from __future__ import annotations

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey


class SealError(ValueError):
    """A box that does not open with this key, or a key of the wrong shape."""


class SignatureInvalid(ValueError):
    """A signature that does not verify under the sender's registered key."""


def seal(plaintext: bytes, reader_public: bytes) -> bytes:
    if len(reader_public) != 32:
        raise SealError(f"a sealing key is 32 bytes, not {len(reader_public)}")
    return SealedBox(PublicKey(reader_public)).encrypt(plaintext)


def unseal(box: bytes, reader_secret: PrivateKey) -> bytes:
    try:
        return SealedBox(reader_secret).decrypt(box)
    except CryptoError as exc:
        raise SealError("the sealed box does not open with this reader's key") from exc


def sign(message: bytes, key: SigningKey) -> bytes:
    return key.sign(message).signature


def verify(message: bytes, signature: bytes, signer_public: bytes) -> None:
    try:
        VerifyKey(signer_public).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise SignatureInvalid("signature does not verify") from exc


def ephemeral_keypair() -> tuple[PrivateKey, bytes]:
    sk = PrivateKey.generate()
    return sk, bytes(sk.public_key)
