// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

/// @title SharedInventory
/// @notice The example private contract: stock that stakeholders of a supply agreement hold,
///         reserve for and hand over to each other. It is deployed out of band on each
///         stakeholder's private EVM and never on the public chain; only its storage root is
///         voted on. It reads nothing from its environment (no time, no block), so every
///         stakeholder that runs the same calls in the same order gets the same storage root.
contract SharedInventory {
    // holder => sku => units
    mapping(address => mapping(bytes32 => uint256)) public stockOf;
    // sku => units across all holders
    mapping(bytes32 => uint256) public totalOf;
    uint256 public moves;

    event Moved(bytes32 indexed sku, address indexed from, address indexed to, uint256 units);

    /// @notice Bring units of `sku` into the caller's stock (goods received).
    function receiveGoods(bytes32 sku, uint256 units) external {
        require(units > 0, "no units");
        stockOf[msg.sender][sku] += units;
        totalOf[sku] += units;
        moves += 1;
        emit Moved(sku, address(0), msg.sender, units);
    }

    /// @notice Hand `units` of the caller's `sku` over to `to`.
    function transfer(bytes32 sku, address to, uint256 units) external {
        require(units > 0, "no units");
        require(stockOf[msg.sender][sku] >= units, "not enough stock");
        stockOf[msg.sender][sku] -= units;
        stockOf[to][sku] += units;
        moves += 1;
        emit Moved(sku, msg.sender, to, units);
    }

    /// @notice Ship units of the caller's `sku` out of the shared inventory.
    function ship(bytes32 sku, uint256 units) external {
        require(units > 0, "no units");
        require(stockOf[msg.sender][sku] >= units, "not enough stock");
        stockOf[msg.sender][sku] -= units;
        totalOf[sku] -= units;
        moves += 1;
        emit Moved(sku, msg.sender, address(0), units);
    }
}
