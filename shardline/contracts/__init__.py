"""shardline's Ethereum side: Solidity sources, compiled artifacts and an async client.

``Chain`` signs locally and sends raw transactions; ``deploy_all`` puts the four contracts on a
chain; the helpers in :mod:`.registry` are what workers, the gateway and the CLI call.
"""

from .artifacts import Artifact, ArtifactError, load_artifact
from .client import Chain, ChainError, ChainRevert, TxResult, revert_reason
from .deploy import Deployment, deploy_all, deploy_contract
from .registry import (
    KIND_GATEWAY,
    KIND_ORG,
    Participant,
    TransportInfo,
    current_gatekeeper,
    deactivate_participant,
    get_participant,
    get_transport,
    grant_role,
    has_role,
    list_participants,
    register_participant,
    register_transport,
    request_lookup,
    retire_transport,
    revoke_role,
    role_id,
    update_participant,
    update_transport,
)

__all__ = [
    "KIND_GATEWAY",
    "KIND_ORG",
    "Artifact",
    "ArtifactError",
    "Chain",
    "ChainError",
    "ChainRevert",
    "Deployment",
    "Participant",
    "TransportInfo",
    "TxResult",
    "current_gatekeeper",
    "deactivate_participant",
    "deploy_all",
    "deploy_contract",
    "get_participant",
    "get_transport",
    "grant_role",
    "has_role",
    "list_participants",
    "load_artifact",
    "register_participant",
    "register_transport",
    "request_lookup",
    "retire_transport",
    "revert_reason",
    "revoke_role",
    "role_id",
    "update_participant",
    "update_transport",
]
