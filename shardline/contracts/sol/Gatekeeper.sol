// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

import {TransportRegistry} from "./TransportRegistry.sol";

/// @notice The one thing the Gatekeeper needs from its Governor.
interface IGovernor {
    function gatekeeper() external view returns (address);
}

/// @title Gatekeeper
/// @notice Decides who may look up a transport's cargo sheet and records each lookup on chain.
///         Org nodes act on `LookupRequested`; nothing is served without it (or, in audit-after
///         mode, without it turning up soon after).
contract Gatekeeper {
    /// @notice Role of fire-brigade responders (held by the gateway accounts acting for them).
    bytes32 public constant RESPONDER = keccak256("RESPONDER");
    /// @notice Role of auditors.
    bytes32 public constant AUDITOR = keccak256("AUDITOR");

    /// @notice The account that manages roles.
    address public immutable admin;
    /// @notice The Governor that must name this contract for it to be in force.
    address public immutable governor;
    /// @notice Where transports are registered.
    TransportRegistry public immutable registry;

    /// @dev No state per lookup: a lookup is its event. A set of used guids grew the contract's
    ///      storage by a slot per lookup forever (20k gas each, and a node's work per block grew
    ///      with it: at 200 lookups/s a dev node fell behind within minutes). A guid is 16 random
    ///      bytes from the gateway; org nodes serve a guid once and note the requester with it,
    ///      so a guid used again by someone else is served nothing and flagged by the audit.
    mapping(bytes32 => mapping(address => bool)) private _roles;

    event RoleGranted(bytes32 indexed role, address indexed account);
    event RoleRevoked(bytes32 indexed role, address indexed account);
    event LookupRequested(
        bytes16 indexed guid,
        bytes32 indexed transportKey,
        address indexed requester,
        bytes32 ephemeralPk,
        uint32 transportVersion
    );

    modifier onlyAdmin() {
        require(msg.sender == admin, "only the gatekeeper admin may manage roles");
        _;
    }

    constructor(address governor_, TransportRegistry registry_) {
        admin = msg.sender;
        governor = governor_;
        registry = registry_;
    }

    /// @notice Give `account` the `role` (no event when it already has it).
    function grantRole(bytes32 role, address account) external onlyAdmin {
        if (!_roles[role][account]) {
            _roles[role][account] = true;
            emit RoleGranted(role, account);
        }
    }

    /// @notice Take the `role` from `account` (no event when it did not have it).
    function revokeRole(bytes32 role, address account) external onlyAdmin {
        if (_roles[role][account]) {
            _roles[role][account] = false;
            emit RoleRevoked(role, account);
        }
    }

    function hasRole(bytes32 role, address account) public view returns (bool) {
        return _roles[role][account];
    }

    /// @notice True when `account` may request lookups.
    function isAuthorised(address account) external view returns (bool) {
        return _roles[RESPONDER][account];
    }

    /// @notice Ask for a transport's cargo sheet; shares are to be sealed to `ephemeralPk`.
    /// @param guid A fresh random 16-byte id for this lookup (org nodes serve a guid once).
    /// @param transportKey The transport key (hash of the transport id).
    /// @param ephemeralPk The requester's one-time X25519 public key.
    function requestLookup(bytes16 guid, bytes32 transportKey, bytes32 ephemeralPk) external {
        _checkRequester();
        _request(guid, transportKey, ephemeralPk);
    }

    /// @notice Several lookups of one requester in one transaction, each checked and recorded
    ///         as `requestLookup` would; one bad entry reverts them all, with its reason.
    function requestLookups(
        bytes16[] calldata guids,
        bytes32[] calldata transportKeys,
        bytes32[] calldata ephemeralPks
    ) external {
        require(
            guids.length == transportKeys.length && guids.length == ephemeralPks.length,
            "lookup batch arrays differ in length"
        );
        _checkRequester();
        for (uint256 i = 0; i < guids.length; i++) {
            _request(guids[i], transportKeys[i], ephemeralPks[i]);
        }
    }

    function _checkRequester() private view {
        require(
            IGovernor(governor).gatekeeper() == address(this),
            "gatekeeper retired: use the current gatekeeper named by the governor"
        );
        require(
            _roles[RESPONDER][msg.sender],
            "requester not authorised: the account lacks the RESPONDER role"
        );
    }

    function _request(bytes16 guid, bytes32 transportKey, bytes32 ephemeralPk) private {
        require(guid != bytes16(0), "lookup guid must not be empty");
        require(ephemeralPk != bytes32(0), "ephemeral public key must not be empty");
        (uint32 version, bool active) = registry.status(transportKey);
        require(version != 0, "transport not registered");
        require(active, "transport is retired");
        emit LookupRequested(guid, transportKey, msg.sender, ephemeralPk, version);
    }
}
