// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

/// @title Governor
/// @notice The stable address of shardline's authorisation: it names the current Gatekeeper.
///         Upgrading points it at a new Gatekeeper; the old one then refuses every request.
contract Governor {
    /// @notice The account allowed to upgrade and to hand over ownership.
    address public owner;
    /// @notice The Gatekeeper currently in force (zero before the first upgrade).
    address public gatekeeper;

    event GatekeeperUpgraded(address indexed previous, address indexed current);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Put a new Gatekeeper in force.
    function upgrade(address newGatekeeper) external {
        require(msg.sender == owner, "only the governor owner may upgrade");
        require(newGatekeeper != address(0), "new gatekeeper must not be the zero address");
        address previous = gatekeeper;
        require(newGatekeeper != previous, "new gatekeeper is already current");
        gatekeeper = newGatekeeper;
        emit GatekeeperUpgraded(previous, newGatekeeper);
    }

    /// @notice Hand the governor to another account.
    function transferOwnership(address newOwner) external {
        require(msg.sender == owner, "only the governor owner may transfer ownership");
        require(newOwner != address(0), "new owner must not be the zero address");
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
