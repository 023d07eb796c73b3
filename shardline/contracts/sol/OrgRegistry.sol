// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

/// @title OrgRegistry
/// @notice The participants of a shardline network: org nodes that hold shares and gateways
///         that ask on behalf of responders. The deployer (owner) admits, updates and retires them.
/// @dev Keys are the participant's Ed25519 signing key and X25519 sealing key, 32 bytes each.
contract OrgRegistry {
    /// @notice Participant kind: an org node holding shares.
    uint8 public constant KIND_ORG = 1;
    /// @notice Participant kind: a gateway serving responders.
    uint8 public constant KIND_GATEWAY = 2;

    struct Participant {
        bytes32 signingKey;
        bytes32 sealingKey;
        address account;
        uint8 kind;
        bool active;
    }

    /// @notice The account that manages the registry.
    address public immutable owner;

    mapping(bytes32 => Participant) private _participants;
    mapping(address => bytes32) private _idOf;
    bytes32[] private _ids;

    event ParticipantRegistered(
        bytes32 indexed id, bytes32 signingKey, bytes32 sealingKey, address account, uint8 kind
    );
    event ParticipantUpdated(
        bytes32 indexed id, bytes32 signingKey, bytes32 sealingKey, address account, uint8 kind
    );
    event ParticipantDeactivated(bytes32 indexed id);

    modifier onlyOwner() {
        require(msg.sender == owner, "only the registry owner may do this");
        _;
    }

    constructor() {
        owner = msg.sender;
    }

    /// @notice Admit a participant.
    /// @param id The participant's id (ASCII name, right-padded with zeros).
    /// @param account The chain account the participant transacts from (zero: none).
    /// @param kind 1 for an org node, 2 for a gateway.
    function register(
        bytes32 id,
        bytes32 signingKey,
        bytes32 sealingKey,
        address account,
        uint8 kind
    ) external onlyOwner {
        require(id != bytes32(0), "participant id must not be empty");
        require(_participants[id].kind == 0, "participant already registered");
        require(kind == KIND_ORG || kind == KIND_GATEWAY, "kind must be 1 (org) or 2 (gateway)");
        _bind(id, account);
        _participants[id] = Participant(signingKey, sealingKey, account, kind, true);
        _ids.push(id);
        emit ParticipantRegistered(id, signingKey, sealingKey, account, kind);
    }

    /// @notice Replace a participant's keys and account (key rotation); its kind stays.
    function update(bytes32 id, bytes32 signingKey, bytes32 sealingKey, address account)
        external
        onlyOwner
    {
        Participant storage p = _participants[id];
        require(p.kind != 0, "participant not registered");
        if (account != p.account) {
            if (p.account != address(0)) {
                delete _idOf[p.account];
            }
            _bind(id, account);
        }
        p.signingKey = signingKey;
        p.sealingKey = sealingKey;
        p.account = account;
        emit ParticipantUpdated(id, signingKey, sealingKey, account, p.kind);
    }

    /// @notice Retire a participant; it stays listed but is no longer active.
    function deactivate(bytes32 id) external onlyOwner {
        Participant storage p = _participants[id];
        require(p.kind != 0, "participant not registered");
        require(p.active, "participant already deactivated");
        p.active = false;
        emit ParticipantDeactivated(id);
    }

    /// @notice A participant's record (all zero when unknown).
    function get(bytes32 id) external view returns (Participant memory) {
        return _participants[id];
    }

    /// @notice Every participant id ever registered, in order of registration.
    function ids() external view returns (bytes32[] memory) {
        return _ids;
    }

    /// @notice The participant bound to an account (zero when none).
    function idOf(address account) external view returns (bytes32) {
        return _idOf[account];
    }

    /// @notice True when `id` is an active org node.
    function isActiveOrg(bytes32 id) public view returns (bool) {
        Participant storage p = _participants[id];
        return p.active && p.kind == KIND_ORG;
    }

    /// @notice True when `account` belongs to an active org node.
    function isActiveOrgAccount(address account) external view returns (bool) {
        bytes32 id = _idOf[account];
        return id != bytes32(0) && isActiveOrg(id);
    }

    function _bind(bytes32 id, address account) private {
        if (account == address(0)) {
            return;
        }
        require(_idOf[account] == bytes32(0), "account already bound to another participant");
        _idOf[account] = id;
    }
}
