"""Contract calls without web3's call path: calldata encoded and answers decoded with eth-abi.

web3's ``ContractFunction.call`` validates the ABI, runs the call through its formatters and
middleware and maps every output through its normalizers: about 2 ms of CPU per read, four
times the call itself. An MPC server reads the Market for each input it checks and a client
polls a job's state, so those milliseconds add up on a shared machine. ``Chain.read`` and
``Chain.transact`` encode the function web3 already built (its selector and normalized
arguments) with a ``ViewCodec``, and a read returns what web3 would: addresses checksummed,
arrays as lists, structs as tuples, one output bare and several as a list.
``tests/integration/test_contracts.py`` holds the two paths equal on every function of the
deployed contracts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import is_checksum_address, to_checksum_address
from eth_utils.abi import collapse_if_tuple


@dataclass(frozen=True)
class ViewCodec:
    selector: bytes
    inputs: tuple[str, ...]  # the ABI types, as eth-abi takes them (made once, not per call)
    input_params: tuple[dict, ...]
    outputs: tuple[str, ...]
    output_params: tuple[dict, ...]

    @classmethod
    def of(cls, fn: Any) -> ViewCodec:
        abi = fn.abi
        if abi.get("type") != "function":  # receive and fallback: web3 sends no selector
            raise ValueError(f"{abi.get('type')} is not a function call")
        inputs, outputs = tuple(abi.get("inputs", [])), tuple(abi.get("outputs", []))
        return cls(
            bytes.fromhex(fn.selector.removeprefix("0x")),
            tuple(collapse_if_tuple(p) for p in inputs),
            inputs,
            tuple(collapse_if_tuple(p) for p in outputs),
            outputs,
        )

    def calldata(self, arguments: Any) -> bytes:
        """Raises (eth-abi's EncodingError, TypeError, ValueError) on arguments eth-abi will
        not take as they are, such as a hex string for ``bytes32``, and on an address that is
        not checksummed, which eth-abi would take and web3 refuses; the caller then lets web3
        convert or refuse."""
        args = tuple(arguments or ())
        for param, value in zip(self.input_params, args, strict=False):
            _map(param, value, _checksummed)
        return self.selector + abi_encode(self.inputs, args)

    def result(self, raw: bytes) -> Any:
        """Raises eth-abi's DecodingError when ``raw`` does not decode (no contract there)."""
        values = abi_decode(self.outputs, raw)
        out = [_map(p, v, _as_web3) for p, v in zip(self.output_params, values, strict=True)]
        return out[0] if len(out) == 1 else out


def _map(param: dict, value: Any, leaf: Callable[[str, Any], Any]) -> Any:
    """``value`` of ABI ``param`` with ``leaf(type, v)`` applied to each scalar in it: arrays
    come back as lists, tuples as tuples."""
    kind = param["type"]
    if kind.endswith("]"):
        inner = dict(param, type=kind[: kind.rindex("[")])
        return [_map(inner, v, leaf) for v in value]
    if kind == "tuple":
        return tuple(_map(c, v, leaf) for c, v in zip(param["components"], value, strict=True))
    return leaf(kind, value)


def _checksummed(kind: str, value: Any) -> Any:
    """An argument as web3 takes it: an address must be checksummed."""
    if kind == "address" and not (isinstance(value, str) and is_checksum_address(value)):
        raise ValueError(f"{value!r} is not a checksummed address")
    return value


def _as_web3(kind: str, value: Any) -> Any:
    """An answer as web3 gives it: addresses checksummed."""
    return to_checksum_address(value) if kind == "address" else value


_CODECS: dict[tuple[str, str], ViewCodec] = {}


def codec(fn: Any) -> ViewCodec:
    """The codec of a built contract function, made once per contract address and signature."""
    key = (fn.address, fn.signature)
    found = _CODECS.get(key)
    if found is None:
        found = _CODECS[key] = ViewCodec.of(fn)
    return found


def block_param(block: int | str) -> str:
    return hex(block) if isinstance(block, int) else block
