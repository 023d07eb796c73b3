"""Plain JSON-RPC to an Ethereum node over one kept-alive HTTP connection pool.

The hot paths (sending a lookup's transaction, reading logs and headers, fetching a receipt) need
no ABI formatters or middleware, and web3's provider costs three to four times as much CPU per
call as a bare request. Everything here is a dict in, a dict out.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import orjson

_HEADERS = {"Content-Type": "application/json"}


class RpcError(RuntimeError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.method = method
        self.code = error.get("code")
        self.message = str(error.get("message", error))
        self.data = error.get("data")
        super().__init__(f"{method} failed: {self.message}")


class JsonRpc:
    """One node endpoint. Safe to share between the tasks of one event loop."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, connections: int = 16) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300),
                timeout=self.timeout,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def call(self, method: str, params: list[Any]) -> Any:
        """The call's ``result``; RpcError when the node answers with an error.

        Transport failures (node down, timeout) surface as OSError, aiohttp.ClientError or
        TimeoutError, for the caller to turn into a message about the node.
        """
        payload = orjson.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        )
        async with self._ensure().post(self.url, data=payload, headers=_HEADERS) as resp:
            body = orjson.loads(await resp.read())
        if "error" in body:
            raise RpcError(method, body["error"])
        return body.get("result")

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one request (a JSON-RPC batch); their results in the same order.

        The node may run the calls of a batch concurrently: batch only calls whose order does
        not matter. The first error raises RpcError, as ``call`` does.
        """
        first = next(self._ids)
        for _ in calls[1:]:
            next(self._ids)
        payload = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": first + i, "method": method, "params": params}
                for i, (method, params) in enumerate(calls)
            ]
        )
        async with self._ensure().post(self.url, data=payload, headers=_HEADERS) as resp:
            body = orjson.loads(await resp.read())
        if isinstance(body, dict):  # the whole batch refused
            raise RpcError(calls[0][0], body.get("error") or {"message": str(body)})
        by_id = {r.get("id"): r for r in body}
        results = []
        for i, (method, _) in enumerate(calls):
            r = by_id.get(first + i) or {"error": {"message": "no answer in the batch"}}
            if "error" in r:
                raise RpcError(method, r["error"])
            results.append(r.get("result"))
        return results

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            # let the connector's transports close before the loop goes away
            await asyncio.sleep(0)
