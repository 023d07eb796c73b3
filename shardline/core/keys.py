"""Key pairs of a participant: Ed25519 to sign, X25519 to receive sealed boxes, an Ethereum key.

Keys live in one JSON file per participant, readable by its owner only. Nothing here prints a
secret: the dataclass repr hides them.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from shardline.core import keystore


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or malformed."""


@dataclass(frozen=True)
class ParticipantKeys:
    participant_id: str
    signing_seed: bytes = field(repr=False)
    sealing_secret: bytes = field(repr=False)
    chain_key: bytes = field(repr=False)

    @classmethod
    def generate(cls, participant_id: str) -> ParticipantKeys:
        return cls(
            participant_id,
            secrets.token_bytes(32),
            secrets.token_bytes(32),
            secrets.token_bytes(32),
        )

    @cached_property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.signing_seed)

    @cached_property
    def sealing_key(self) -> PrivateKey:
        return PrivateKey(self.sealing_secret)

    @property
    def signing_public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def sealing_public(self) -> bytes:
        return bytes(self.sealing_key.public_key)

    @cached_property
    def chain_address(self) -> str:
        """The checksummed Ethereum address of ``chain_key``."""
        from eth_account import Account

        return Account.from_key(self.chain_key).address

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "participant_id": self.participant_id,
            "signing_seed": self.signing_seed.hex(),
            "sealing_secret": self.sealing_secret.hex(),
            "chain_key": self.chain_key.hex(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file was there before with looser rights
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)

    @classmethod
    def load(cls, path: Path) -> ParticipantKeys:
        try:
            data = json.loads(Path(path).read_text())
            if keystore.is_encrypted(data):
                data = _opened(data, Path(path))
            keys = cls(
                data["participant_id"],
                bytes.fromhex(data["signing_seed"]),
                bytes.fromhex(data["sealing_secret"]),
                bytes.fromhex(data["chain_key"]),
            )
            if not all(
                len(k) == 32 for k in (keys.signing_seed, keys.sealing_secret, keys.chain_key)
            ):
                raise ValueError("every key must be 32 bytes")
            return keys
        except FileNotFoundError as exc:
            raise KeyFileError(
                f"key file {path} does not exist: run `shardline up` to make keys"
            ) from exc
        except keystore.KeystoreError as exc:
            raise KeyFileError(str(exc)) from None
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyFileError(f"key file {path} is malformed: {exc}") from exc

    def save_encrypted(
        self,
        path: Path,
        password: str,
        *,
        kdf: str = "scrypt",
        iterations: int | None = None,
        password_source: dict[str, str] | None = None,
    ) -> None:
        """Write the keys as encrypted keystores (see :mod:`shardline.core.keystore`)."""
        data = keystore.encrypt(
            self.participant_id,
            {"chain": self.chain_key, "signing": self.signing_seed, "sealing": self.sealing_secret},
            password,
            kdf=kdf,
            iterations=iterations,
            password_source=password_source,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)


def _opened(data: dict, path: Path) -> dict:
    """An encrypted key file's content in the plain layout (in memory only)."""
    secrets_ = keystore.decrypt(data, path)
    return {
        "participant_id": data["participant_id"],
        "signing_seed": secrets_["signing"].hex(),
        "sealing_secret": secrets_["sealing"].hex(),
        "chain_key": secrets_["chain"].hex(),
    }
