// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

import {OrgRegistry} from "./OrgRegistry.sol";

/// @title ListAgreements
/// @notice What two orgs of a distribution list agreed on: who serves each contact they share.
/// @dev The chain holds only digests. Each org of a pair records the SHA-256 of the pair's
///      canonical agreement (the two bid tables: blinded values and keyed bids, no contact
///      detail) under its own org id; equal digests from both sides show they agreed, and the
///      document shown later must hash to them. A record is final: it cannot be overwritten.
contract ListAgreements {
    OrgRegistry public immutable orgs;

    // list id => pair id => org id => digest
    mapping(bytes16 => mapping(bytes32 => mapping(bytes32 => bytes32))) private _digests;

    event AgreementRecorded(
        bytes16 indexed listId, bytes32 indexed pairId, bytes32 indexed org, bytes32 digest
    );

    constructor(OrgRegistry orgRegistry) {
        orgs = orgRegistry;
    }

    /// @notice Record the sender org's digest of a pair's agreement.
    function record(bytes16 listId, bytes32 pairId, bytes32 digest) external {
        bytes32 org = orgs.idOf(msg.sender);
        require(org != bytes32(0) && orgs.isActiveOrg(org), "only an active org may record");
        require(digest != bytes32(0), "digest must not be empty");
        require(
            _digests[listId][pairId][org] == bytes32(0),
            "this org already recorded its agreement for this pair"
        );
        _digests[listId][pairId][org] = digest;
        emit AgreementRecorded(listId, pairId, org, digest);
    }

    /// @notice The digest an org recorded for a pair, or zero.
    function digestOf(bytes16 listId, bytes32 pairId, bytes32 org) external view returns (bytes32) {
        return _digests[listId][pairId][org];
    }
}
