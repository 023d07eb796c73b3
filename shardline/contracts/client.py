"""A small async client for shardline's contracts: local signing, a nonce manager, clear reverts.

Transactions are signed here (contract calls with ``txsign``, what web3 must build with
eth-account) and sent with ``eth_sendRawTransaction``; the node never holds a key. To keep many
transactions per second cheap, nothing is asked of the node per call beyond the send itself:
the nonce is counted locally (fetched once per account, resynced after a nonce error), fees are
cached from the latest base fee and refreshed every few seconds, and the gas limit is a fixed
argument instead of an estimate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3
from web3._utils.error_formatters_utils import raise_contract_logic_error_on_revert
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractConstructor, AsyncContractFunction
from web3.exceptions import ContractLogicError, Web3Exception, Web3RPCError
from web3.types import TxParams, TxReceipt

from shardline.core.gas import GasPolicy, GasPolicyError

from . import views
from .artifacts import load_artifact
from .rpc import JsonRpc, RpcError
from .txsign import sign_eip1559

ERROR_STRING_SELECTOR = "0x08c379a0"  # Error(string), what require(cond, "reason") reverts with
FEE_TTL_SECONDS = 5.0
DEFAULT_PRIORITY_FEE = 1_000_000_000  # 1 gwei, when the node cannot suggest one
CONNECT_TIMEOUT_SECONDS = 10.0
RECEIPT_TIMEOUT_SECONDS = 60.0
DROPPED_CHECK_S = 1.0  # how often a transaction not yet mined is checked to be still pending

_NONCE_ERRORS = (
    "nonce too low",
    "nonce too high",
    "invalid nonce",
    "replacement transaction underpriced",
)
_FEE_ERRORS = (
    "less than block base fee",
    "max fee per gas less than",
    "fee cap less than",
    "transaction underpriced",
)


class ChainError(RuntimeError):
    """The chain could not be reached or refused what was asked of it."""


class TxDropped(ChainError):
    """The node no longer knows a transaction it took: a reorg or a restart dropped it."""

    def __init__(self, tx_hash: str, rpc_url: str) -> None:
        self.tx_hash = tx_hash
        super().__init__(
            f"transaction {tx_hash} is neither mined nor pending at {rpc_url}: "
            "a reorg or a node restart dropped it; send it again"
        )


class ChainRevert(ChainError):
    """A contract call or transaction reverted; ``reason`` is the contract's revert string."""

    def __init__(self, reason: str, *, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        super().__init__(reason if tx_hash is None else f"{reason} (transaction {tx_hash})")


@dataclass
class TxResult:
    """A sent transaction: its hash and, once mined, its receipt."""

    tx_hash: str
    receipt: TxReceipt | None = None

    @property
    def block_number(self) -> int | None:
        return None if self.receipt is None else self.receipt["blockNumber"]

    @property
    def contract_address(self) -> str | None:
        """The address of the contract a creation transaction deployed."""
        if self.receipt is None:
            return None
        return self.receipt.get("contractAddress")


def revert_reason(exc: BaseException) -> str:
    """The revert string carried by web3's ContractLogicError (or a readable fallback)."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith(ERROR_STRING_SELECTOR):
        decoded = _decode_error_string(data)
        if decoded is not None:
            return decoded
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        message = str(exc)
    for prefix in ("execution reverted: ", "execution reverted:", "Reverted "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    message = message.strip()
    if not message or message == "execution reverted":
        return "execution reverted (the contract gave no reason)"
    return message


def _calldata(fn: AsyncContractFunction | AsyncContractConstructor, value: int) -> bytes | None:
    """A contract function's calldata, encoded as web3 encodes it (``views``); None for what
    web3 must build: a constructor, arguments eth-abi will not take as given, or value sent to
    a function that is not payable (web3 refuses that before anything is signed)."""
    if not isinstance(fn, AsyncContractFunction):
        return None
    if value and fn.abi.get("stateMutability") != "payable":
        return None
    try:
        return views.codec(fn).calldata(fn.arguments)
    except (EncodingError, TypeError, ValueError, KeyError, AttributeError):
        return None


def as_web3_error(exc: RpcError) -> BaseException:
    """The exception web3 raises for the same JSON-RPC error (a panic's code in words, as
    web3 gives it), so that a reason reads the same whichever path made the call."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    try:
        raise_contract_logic_error_on_revert({"error": error})  # type: ignore[typeddict-item]
    except ContractLogicError as web3_error:
        return web3_error
    except Exception:  # an error web3 does not take for a revert: its message as it is
        return exc
    return exc


def _decode_error_string(data: str) -> str | None:
    try:
        (reason,) = abi_decode(["string"], bytes.fromhex(data[len(ERROR_STRING_SELECTOR) :]))
    except Exception:  # malformed revert data: the caller falls back to the message
        return None
    return str(reason)


class _NonceManager:
    """Hands out consecutive nonces for one account; sends are serialised so none is skipped."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.next: int | None = None
        # After a dropped transaction, count from the mined nonce: later transactions of ours
        # may wait in the pool behind the gap, and "pending" would count past it.
        self.count_from = "pending"


@dataclass
class _Fees:
    max_fee: int = 0
    priority_fee: int = 0
    fetched_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Chain:
    """One connection to an Ethereum node, shared by everything in a process."""

    def __init__(self, w3: AsyncWeb3, rpc_url: str, chain_id: int) -> None:
        self.w3 = w3
        self.rpc_url = rpc_url
        self.chain_id = chain_id
        self._nonces: dict[str, _NonceManager] = {}
        self._fees = _Fees()
        self._contracts: dict[tuple[str, str], AsyncContract] = {}
        self.rpc = JsonRpc(rpc_url)
        self.gas_policy = GasPolicy()  # the stack's `gas` settings replace it

    # -- connection -------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        rpc_url: str,
        *,
        expected_chain_id: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> Chain:
        """Connect to the node at ``rpc_url`` and check that it answers with a chain id."""
        w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
        # We set chainId ourselves and sign locally: skip the per-call eth_chainId check.
        for name in ("validation", "ens_name_to_address"):
            try:
                w3.middleware_onion.remove(name)
            except (ValueError, Web3Exception):
                pass
        try:
            chain_id = await asyncio.wait_for(w3.eth.chain_id, connect_timeout)
        except (OSError, aiohttp.ClientError, TimeoutError, Web3Exception, ValueError) as exc:
            await w3.provider.disconnect()
            raise ChainError(
                f"cannot reach the Ethereum node at {rpc_url} ({type(exc).__name__}: {exc}); "
                "start the local stack with `shardline up` (or `make up`), or point shardline "
                "at a running node's JSON-RPC URL"
            ) from exc
        if expected_chain_id is not None and chain_id != expected_chain_id:
            await w3.provider.disconnect()
            raise ChainError(
                f"the node at {rpc_url} is on chain id {chain_id}, not the expected "
                f"{expected_chain_id}; check the RPC URL or the deployment file you are using"
            )
        return cls(w3, rpc_url, chain_id)

    async def close(self) -> None:
        """Close the HTTP session(s) to the node."""
        await self.rpc.close()
        await self.w3.provider.disconnect()

    async def __aenter__(self) -> Chain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- contracts --------------------------------------------------------------------------

    def contract(self, name: str, address: str) -> AsyncContract:
        """The contract ``name`` (an artifact name, e.g. "Gatekeeper") at ``address``."""
        checksum = Web3.to_checksum_address(address)
        key = (name, checksum)
        found = self._contracts.get(key)
        if found is None:
            found = self.w3.eth.contract(address=checksum, abi=load_artifact(name).abi)
            self._contracts[key] = found
        return found

    def factory(self, name: str) -> type[AsyncContract]:
        """A contract class (ABI and bytecode, no address) for deploying ``name``."""
        artifact = load_artifact(name)
        return self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)

    # -- reads ------------------------------------------------------------------------------

    async def read(self, fn: AsyncContractFunction, *, block: int | str = "latest") -> Any:
        """Call a view function; a revert becomes ChainRevert with the contract's reason.

        In plain JSON-RPC (``views``): web3's call path costs four times the call. Arguments
        eth-abi will not encode as given, and an answer that does not decode (no contract at
        the address), go through web3, for its conversions and its error."""
        data = _calldata(fn, 0)
        if data is not None:
            call = {"to": fn.address, "data": "0x" + data.hex()}
            raw = await self._eth_call(call, block)
            try:
                return views.codec(fn).result(bytes.fromhex(str(raw).removeprefix("0x")))
            except (DecodingError, ValueError):
                pass
        async with self._rpc_errors():
            try:
                return await fn.call(block_identifier=block)
            except ContractLogicError as exc:
                raise ChainRevert(revert_reason(exc)) from exc

    async def simulate(
        self,
        account_address: str,
        fn: AsyncContractFunction,
        *,
        block: int | str = "latest",
    ) -> Any:
        """Run ``fn`` with eth_call as if sent from ``account_address``; nothing is mined.

        Returns the function's result, or raises ChainRevert with the contract's revert string.
        """
        async with self._rpc_errors():
            try:
                return await fn.call(
                    {"from": Web3.to_checksum_address(account_address)}, block_identifier=block
                )
            except ContractLogicError as exc:
                raise ChainRevert(revert_reason(exc)) from exc

    async def simulate_call(
        self, account_address: str, to: str, data: bytes, *, block: int | str = "latest"
    ) -> str:
        """``simulate`` for ready calldata, in plain JSON-RPC; returns the raw result."""
        call = {"from": account_address, "to": to, "data": "0x" + data.hex()}
        return str(await self._eth_call(call, block))

    async def _eth_call(self, call: dict, block: int | str) -> Any:
        """eth_call in plain JSON-RPC: what web3 takes for a revert (code 3, "execution
        reverted", revert data) is ChainRevert with the reason as web3 words it; any other error
        (a block the node lacks, a rate limit) is the node's, ChainError."""
        async with self._rpc_errors():
            try:
                return await self.rpc.call("eth_call", [call, views.block_param(block)])
            except RpcError as exc:
                web3_error = as_web3_error(exc)
                if isinstance(web3_error, ContractLogicError):
                    raise ChainRevert(revert_reason(web3_error)) from exc
                raise ChainError(
                    f"the node at {self.rpc_url} could not run a call to {call['to']}: "
                    f"{exc.message}"
                ) from exc

    # -- transactions -----------------------------------------------------------------------

    async def transact(
        self,
        account: LocalAccount,
        fn: AsyncContractFunction | AsyncContractConstructor,
        *,
        gas: int = 500_000,
        value: int = 0,
        wait: bool = True,
        receipt_timeout: float = RECEIPT_TIMEOUT_SECONDS,
    ) -> TxResult:
        """Sign ``fn`` (a contract function or constructor call) with ``account`` and send it.

        With ``wait`` the receipt is awaited and a reverted transaction raises ChainRevert with
        the contract's reason; without, the result holds only the hash (see :meth:`wait`).
        """
        data = _calldata(fn, value)
        if data is not None:  # 0.2 ms to encode and sign, against 2 ms through web3
            tx_hash = await self.send_call(account, fn.address, data, gas=gas, value=value)
        else:
            fields = await self._tx_fields(gas, value)
            async with self._rpc_errors():
                tx = await fn.build_transaction({"from": account.address, **fields})
            tx_hash = await self._send(account, tx)
        result = TxResult(tx_hash)
        if wait:
            await self.wait(result, receipt_timeout=receipt_timeout)
        return result

    async def wait(
        self, tx: TxResult | str, *, receipt_timeout: float = RECEIPT_TIMEOUT_SECONDS
    ) -> TxResult:
        """Await a sent transaction's receipt; raises ChainRevert if it reverted."""
        result = tx if isinstance(tx, TxResult) else TxResult(tx)
        await self.mined(result.tx_hash, receipt_timeout=receipt_timeout)
        async with self._rpc_errors():
            receipt = await self.w3.eth.get_transaction_receipt(result.tx_hash)
        result.receipt = receipt
        if receipt["status"] != 1:
            reason = await self._replay_reason(result.tx_hash, receipt)
            raise ChainRevert(reason, tx_hash=result.tx_hash)
        return result

    def resync_nonce(self, address: str) -> None:
        """Forget the counted nonce: after a dropped transaction the chain's count is behind."""
        manager = self._nonces.get(address)
        if manager is not None:
            manager.next = None
            manager.count_from = "latest"

    async def still_mined(
        self, tx_hash: str, *, receipt_timeout: float = RECEIPT_TIMEOUT_SECONDS
    ) -> bool:
        """After a reorg: is a transaction that was mined in a block of the canonical chain (or
        pending again, and then mined)? False when the node no longer knows it."""
        try:
            await self.mined(tx_hash, receipt_timeout=receipt_timeout)
        except TxDropped:
            return False
        return True

    async def mined(
        self, tx_hash: str, *, receipt_timeout: float = RECEIPT_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """The raw receipt (hex fields) once the transaction is in a block.

        Polls with JSON-RPC at 1, 2, 4 ... ms, then every 50 ms: an automining node answers on
        the first or second poll, a node with a block time on the first after its block.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + receipt_timeout
        pause = 0.0
        next_known_check = loop.time() + DROPPED_CHECK_S
        async with self._rpc_errors():
            while True:
                receipt = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
                if receipt:
                    return receipt
                if loop.time() > next_known_check:  # not mined yet: is it still pending?
                    next_known_check = loop.time() + DROPPED_CHECK_S
                    if not await self.rpc.call("eth_getTransactionByHash", [tx_hash]):
                        if await self.rpc.call("eth_getTransactionReceipt", [tx_hash]):
                            continue  # mined between the two calls
                        raise TxDropped(tx_hash, self.rpc_url)
                if loop.time() > deadline:
                    raise ChainError(
                        f"transaction {tx_hash} was not mined within {receipt_timeout:.0f} s; "
                        f"check that the node at {self.rpc_url} is mining (anvil with "
                        "--block-time needs a timeout longer than its block time)"
                    )
                await asyncio.sleep(pause)
                pause = min(0.05, max(0.001, 2 * pause))

    async def send_call(
        self, account: LocalAccount, to: str, data: bytes, *, gas: int, value: int = 0
    ) -> str:
        """Sign and send a call of ``data`` to ``to``; returns the hash, waits for nothing.

        The cheap path for a transaction sent many times a second: no ABI formatting, no
        estimate, fees and nonce from the local caches.
        """
        tx = {"type": 2, "to": to, "data": data, **await self._tx_fields(gas, value)}
        return await self._send(account, tx, fast=True)  # type: ignore[arg-type]

    async def _tx_fields(self, gas: int, value: int) -> dict[str, Any]:
        """Gas, value, the cached fees and the chain id of a transaction to sign."""
        max_fee, priority_fee = await self._current_fees()
        return {
            "gas": gas,
            "value": value,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority_fee,
            "chainId": self.chain_id,
            "nonce": 0,  # replaced under the account's lock
        }

    # -- internals --------------------------------------------------------------------------

    @asynccontextmanager
    async def _rpc_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ChainError(
                f"lost the Ethereum node at {self.rpc_url} ({type(exc).__name__}: {exc}); "
                "check that it is still running (`shardline status`)"
            ) from exc

    async def _current_fees(self, *, refresh: bool = False) -> tuple[int, int]:
        fees = self._fees
        async with fees.lock:
            if refresh or time.monotonic() - fees.fetched_at > FEE_TTL_SECONDS:
                async with self._rpc_errors():
                    block = await self.w3.eth.get_block("latest")
                    base_fee = int(block.get("baseFeePerGas") or 0)
                    suggested: int | None = None
                    if self.gas_policy.priority_fee_gwei is None:
                        try:
                            suggested = int(await self.w3.eth.max_priority_fee)
                        except (Web3RPCError, ValueError):
                            suggested = DEFAULT_PRIORITY_FEE
                try:
                    max_fee, priority = self.gas_policy.fees(base_fee, suggested)
                except GasPolicyError as exc:
                    raise ChainError(f"not sending to {self.rpc_url}: {exc}") from None
                fees.max_fee = max_fee
                fees.priority_fee = priority
                fees.fetched_at = time.monotonic()
            return fees.max_fee, fees.priority_fee

    async def _send(self, account: LocalAccount, tx: TxParams, *, fast: bool = False) -> str:
        manager = self._nonces.setdefault(account.address, _NonceManager())
        tx = dict(tx)  # type: ignore[assignment]
        async with manager.lock:
            for attempt in range(3):
                try:
                    if manager.next is None:
                        async with self._rpc_errors():
                            manager.next = int(
                                await self.rpc.call(
                                    "eth_getTransactionCount",
                                    [account.address, manager.count_from],
                                ),
                                16,
                            )
                        manager.count_from = "pending"
                    tx["nonce"] = manager.next
                    if fast:
                        raw, signed_hash = sign_eip1559(account.key, tx)  # type: ignore[arg-type]
                    else:
                        signed = account.sign_transaction(tx)
                        raw, signed_hash = signed.raw_transaction, "0x" + signed.hash.hex()
                    async with self._rpc_errors():
                        tx_hash = await self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
                except RpcError as exc:
                    lowered = exc.message.lower()
                    if "already known" in lowered:  # this very transaction is in the node's pool
                        manager.next += 1  # (a resend): it is sent, not to be signed again
                        return signed_hash
                    if attempt < 2 and any(s in lowered for s in _NONCE_ERRORS):
                        manager.next = None  # resync from the chain and try again
                        continue
                    if attempt < 2 and any(s in lowered for s in _FEE_ERRORS):
                        max_fee, priority = await self._current_fees(refresh=True)
                        tx["maxFeePerGas"], tx["maxPriorityFeePerGas"] = max_fee, priority
                        continue
                    manager.next = None
                    raise ChainError(
                        f"the node at {self.rpc_url} refused a transaction from "
                        f"{account.address}: {exc.message}"
                    ) from exc
                except BaseException:
                    manager.next = None  # we do not know whether the node took the nonce
                    raise
                manager.next += 1
                return str(tx_hash)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _replay_reason(self, tx_hash: str, receipt: TxReceipt) -> str:
        """Why a mined transaction reverted: replay it with eth_call at its block."""
        async with self._rpc_errors():
            sent = await self.w3.eth.get_transaction(tx_hash)
            if receipt["gasUsed"] >= sent["gas"]:
                return (
                    f"out of gas: the transaction used all of its {sent['gas']} gas; "
                    "send it with a larger gas limit"
                )
            call: TxParams = {
                "from": sent["from"],
                "data": sent["input"],
                "value": sent["value"],
                "gas": sent["gas"],
            }
            if sent.get("to"):
                call["to"] = sent["to"]
            try:
                await self.w3.eth.call(call, block_identifier=receipt["blockNumber"])
            except ContractLogicError as exc:
                return revert_reason(exc)
        return (
            "the transaction reverted, but replaying it at block "
            f"{receipt['blockNumber']} succeeded, so the reason is unknown"
        )
