"""Deploy shardline's contracts and describe where they live."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from .client import Chain, ChainError

DEPLOY_GAS = 5_000_000
MARKET_MIN_STAKE = 10**18  # wei an MPC server stakes at least (1 ether on the local chain)


@dataclass(frozen=True)
class Deployment:
    """The addresses of one deployment and the block it started at (where log scans begin)."""

    org_registry: str
    transport_registry: str
    gatekeeper: str
    governor: str
    block: int
    chain_id: int
    records_registry: str = ""  # empty in deployments made before the records capability
    list_agreements: str = ""  # empty in deployments made before distribution lists
    mediator: str = ""  # empty in deployments made before private transactions
    market: str = ""  # empty in deployments made before analytics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        optional = ("records_registry", "list_agreements", "mediator", "market")
        names = [f.name for f in fields(cls) if f.name not in optional]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(
                f"deployment record lacks {', '.join(missing)}; "
                "redeploy (`shardline up` deploys the contracts) or fix the deployment file"
            )
        return cls(
            org_registry=Web3.to_checksum_address(data["org_registry"]),
            transport_registry=Web3.to_checksum_address(data["transport_registry"]),
            gatekeeper=Web3.to_checksum_address(data["gatekeeper"]),
            governor=Web3.to_checksum_address(data["governor"]),
            block=int(data["block"]),
            chain_id=int(data["chain_id"]),
            records_registry=Web3.to_checksum_address(data["records_registry"])
            if data.get("records_registry")
            else "",
            list_agreements=Web3.to_checksum_address(data["list_agreements"])
            if data.get("list_agreements")
            else "",
            mediator=Web3.to_checksum_address(data["mediator"]) if data.get("mediator") else "",
            market=Web3.to_checksum_address(data["market"]) if data.get("market") else "",
        )


async def deploy_contract(
    chain: Chain, admin: LocalAccount, name: str, *args: Any, gas: int = DEPLOY_GAS
) -> str:
    """Deploy the compiled contract ``name`` with constructor ``args``; returns its address."""
    result = await chain.transact(admin, chain.factory(name).constructor(*args), gas=gas)
    address = result.contract_address
    if not address:
        raise ChainError(f"deploying {name} (transaction {result.tx_hash}) created no contract")
    return Web3.to_checksum_address(address)


async def deploy_all(chain: Chain, admin: LocalAccount) -> Deployment:
    """Deploy Governor, OrgRegistry, TransportRegistry and Gatekeeper; point the governor at it.

    ``admin`` becomes the owner of the governor and the org registry and the gatekeeper's admin.
    """
    start_block = await chain.w3.eth.block_number
    governor = await deploy_contract(chain, admin, "Governor")
    org_registry = await deploy_contract(chain, admin, "OrgRegistry")
    transport_registry = await deploy_contract(chain, admin, "TransportRegistry", org_registry)
    gatekeeper = await deploy_contract(chain, admin, "Gatekeeper", governor, transport_registry)
    await chain.transact(admin, chain.contract("Governor", governor).functions.upgrade(gatekeeper))
    records_registry = await deploy_contract(chain, admin, "RecordsRegistry", org_registry)
    list_agreements = await deploy_contract(chain, admin, "ListAgreements", org_registry)
    mediator = await deploy_contract(chain, admin, "Mediator")
    market = await deploy_contract(
        chain, admin, "Market", org_registry, MARKET_MIN_STAKE, gas=7_000_000
    )
    return Deployment(
        org_registry=org_registry,
        transport_registry=transport_registry,
        gatekeeper=gatekeeper,
        governor=governor,
        block=start_block + 1,
        chain_id=chain.chain_id,
        records_registry=records_registry,
        list_agreements=list_agreements,
        mediator=mediator,
        market=market,
    )
