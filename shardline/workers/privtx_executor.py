"""The executor: one stakeholder's private EVM (its own anvil, never the public chain).

It runs a private call as the public sender (impersonated, so ``msg.sender`` is the same at every
stakeholder), reports the private contract's storage root before and after (``storageHash`` of
``eth_getProof``: the root of the contract's storage trie, equal wherever the same calls ran in
the same order), and can go back to the snapshot it took before the call (``evm_snapshot`` /
``evm_revert``). Reverting to a snapshot also drops every later snapshot, which is why the
facilitator keeps the journal of what ran after it and runs that again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from shardline.contracts.artifacts import load_artifact
from shardline.contracts.rpc import JsonRpc, RpcError

CALL_GAS = 2_000_000
DEPLOYER = "0x00000000000000000000000000000000005ec7e7"  # deploys the private contracts
FUNDS = hex(10**24)


EMPTY_CODE = "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"  # keccak("")


class ExecutorError(RuntimeError):
    """The private EVM refused or lost something it was asked to do."""


class ExecutorLost(ExecutorError):
    """The private EVM no longer holds a private contract it had: it was restarted without its
    state. The facilitator rebuilds it from the agreed history."""


@dataclass(frozen=True)
class Execution:
    snapshot: str
    old_root: bytes
    new_root: bytes
    ok: bool  # the private call's own status (a reverted call leaves the root as it was)


class Executor:
    def __init__(self, url: str) -> None:
        self.url = url
        self.rpc = JsonRpc(url, timeout_s=30.0)
        self._impersonated: set[str] = set()
        # A snapshot taken right after the last call, while its root was read: the state
        # before the next call, unless something else changed the state since (then None).
        self._ready: str | None = None
        self._sync = True  # the node mines and answers with the receipt in one call

    async def close(self) -> None:
        await self.rpc.close()

    async def _as(self, account: str) -> str:
        account = account.lower()
        if account not in self._impersonated:
            await self.rpc.call("anvil_impersonateAccount", [account])
            await self.rpc.call("anvil_setBalance", [account, FUNDS])
            self._impersonated.add(account)
        return account

    async def _send(self, tx: dict) -> dict:
        if self._sync:
            try:
                return await self.rpc.call("eth_sendTransactionSync", [tx])
            except RpcError as exc:
                if exc.code != -32601 and "not found" not in exc.message.lower():
                    raise
                self._sync = False  # an older node: send, then ask for the receipt
        tx_hash = await self.rpc.call("eth_sendTransaction", [tx])
        receipt = None
        for pause in (0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
            await asyncio.sleep(pause)
            receipt = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                break
        if receipt is None:
            raise ExecutorError(
                f"the private EVM at {self.url} did not mine {tx_hash} at once: start it "
                "without --block-time (the executor needs automine)"
            )
        return receipt

    async def deploy(self, name: str = "SharedInventory") -> str:
        """Deploy the private contract ``name`` out of band; returns its address."""
        self._ready = None
        sender = await self._as(DEPLOYER)
        receipt = await self._send(
            {"from": sender, "data": load_artifact(name).bytecode, "gas": hex(5_000_000)}
        )
        if int(receipt["status"], 16) != 1 or not receipt.get("contractAddress"):
            raise ExecutorError(f"deploying {name} on the private EVM at {self.url} failed")
        return str(receipt["contractAddress"])

    async def root(self, contract: str) -> bytes:
        """The contract's storage root; raises ExecutorLost when the contract is not there."""
        return self._root_of(
            contract, await self.rpc.call("eth_getProof", [contract, [], "latest"])
        )

    def _root_of(self, contract: str, proof: dict) -> bytes:
        if str(proof.get("codeHash", "")).lower() in (EMPTY_CODE, "0x" + "00" * 32):
            raise ExecutorLost(
                f"the private EVM at {self.url} has no contract at {contract}: it was restarted "
                "without its state"
            )
        return bytes.fromhex(proof["storageHash"][2:])

    def forget(self) -> None:
        """A fresh private EVM: nothing is impersonated or funded there yet."""
        self._impersonated.clear()
        self._ready = None

    async def execute(
        self, contract: str, sender: str, call: bytes, *, old_root: bytes | None = None
    ) -> Execution:
        """Run ``call``; ``old_root``, when the caller knows it, saves one eth_getProof."""
        old = old_root or await self.root(contract)
        snapshot, self._ready = self._ready, None
        if snapshot is None:
            snapshot = str(await self.rpc.call("evm_snapshot", []))
        try:
            receipt = await self._send(
                {
                    "from": await self._as(sender),
                    "to": contract,
                    "data": "0x" + call.hex(),
                    "gas": hex(CALL_GAS),
                }
            )
            # the next call's snapshot is taken in the request that reads this one's root
            # (one JSON-RPC batch: both see the state this call left)
            proof, ready = await self.rpc.batch(
                [("eth_getProof", [contract, [], "latest"]), ("evm_snapshot", [])]
            )
            new = self._root_of(contract, proof)
            self._ready = str(ready)
        except BaseException:
            # Whatever happened half-way is undone, so that trying again starts clean.
            with contextlib.suppress(ExecutorError):
                await self.revert(snapshot)  # a lost EVM has no snapshot: the rebuild sees to it
            raise
        return Execution(snapshot, old, new, int(receipt["status"], 16) == 1)

    async def revert(self, snapshot: str) -> None:
        self._ready = None
        self._impersonated.clear()  # the senders' funding may be undone with the rest
        if not await self.rpc.call("evm_revert", [snapshot]):
            raise ExecutorLost(
                f"the private EVM at {self.url} has no snapshot {snapshot} any more: it was "
                "restarted without its state"
            )
