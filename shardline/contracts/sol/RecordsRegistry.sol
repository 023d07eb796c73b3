// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

import {OrgRegistry} from "./OrgRegistry.sol";

/// @title RecordsRegistry
/// @notice Patient-controlled records: who owns a record, which reader may have it re-encrypted
///         by which proxies (org nodes), until when, and the owner's revocations.
/// @dev The chain never sees a record: only the SHA-256 of its ciphertext and its Umbral capsule
///      (public by design). Proxies check a grant here before every re-encryption, and drop
///      their key fragment on `AccessRevoked`.
contract RecordsRegistry {
    struct Party {
        bytes32 signingKey; // Ed25519: signs the party's bus messages
        bytes32 sealingKey; // X25519: capsule fragments are sealed to it
        bytes umbralKey; // compressed secp256k1 (33 bytes): records are encrypted or re-encrypted to it
        bytes verifyingKey; // compressed secp256k1 (33 bytes): checks the owner's key fragments
        address account;
    }

    struct Record {
        bytes32 owner;
        bytes32 contentHash;
        bytes capsule;
        uint64 size;
    }

    struct Grant {
        uint8 threshold;
        bytes32[] proxies;
        uint64 expiresAt;
        uint32 version;
        bool revoked;
    }

    OrgRegistry public immutable orgs;

    mapping(bytes32 => Party) private _parties;
    mapping(bytes16 => Record) private _records;
    mapping(bytes16 => mapping(bytes32 => Grant)) private _grants;
    mapping(bytes32 => bytes16[]) private _recordsOf;
    mapping(bytes16 => bytes32[]) private _readersOf;
    mapping(bytes32 => bytes16[]) private _grantedTo;

    event PartyRegistered(bytes32 indexed id, address indexed account);
    event RecordRegistered(bytes16 indexed recordId, bytes32 indexed owner, bytes32 contentHash);
    event AccessGranted(
        bytes16 indexed recordId,
        bytes32 indexed reader,
        uint32 version,
        uint8 threshold,
        bytes32[] proxies,
        uint64 expiresAt
    );
    event AccessRevoked(bytes16 indexed recordId, bytes32 indexed reader, uint32 version);

    constructor(OrgRegistry orgRegistry) {
        orgs = orgRegistry;
    }

    modifier onlyOwner(bytes16 recordId) {
        Record storage r = _records[recordId];
        require(r.owner != bytes32(0), "record not registered");
        require(
            _parties[r.owner].account == msg.sender,
            "only the record's owner may grant or revoke access"
        );
        _;
    }

    /// @notice Register a records party (a patient or a reader) bound to the sender's account.
    function registerParty(
        bytes32 id,
        bytes32 signingKey,
        bytes32 sealingKey,
        bytes calldata umbralKey,
        bytes calldata verifyingKey
    ) external {
        require(id != bytes32(0), "party id must not be empty");
        require(_parties[id].account == address(0), "party id already registered");
        require(orgs.get(id).kind == 0, "party id is taken by an org node");
        require(umbralKey.length == 33 && verifyingKey.length == 33, "keys must be 33 bytes");
        _parties[id] = Party(signingKey, sealingKey, umbralKey, verifyingKey, msg.sender);
        emit PartyRegistered(id, msg.sender);
    }

    /// @notice Register a record of `owner` (the sender must be the owner's account).
    function registerRecord(
        bytes16 recordId,
        bytes32 owner,
        bytes32 contentHash,
        bytes calldata capsule,
        uint64 size
    ) external {
        require(recordId != bytes16(0), "record id must not be empty");
        require(_parties[owner].account == msg.sender, "only the owner's account may register");
        require(_records[recordId].owner == bytes32(0), "record already registered");
        require(contentHash != bytes32(0) && capsule.length > 0, "hash and capsule are required");
        _records[recordId] = Record(owner, contentHash, capsule, size);
        _recordsOf[owner].push(recordId);
        emit RecordRegistered(recordId, owner, contentHash);
    }

    /// @notice Let `reader` have the record re-encrypted by `threshold` of `proxies` until
    ///         `expiresAt` (unix seconds). A new grant replaces the last one (its version grows).
    function grant(
        bytes16 recordId,
        bytes32 reader,
        uint8 threshold,
        bytes32[] calldata proxies,
        uint64 expiresAt
    ) external onlyOwner(recordId) {
        require(_parties[reader].account != address(0), "unknown reader");
        require(
            threshold >= 1 && threshold <= proxies.length,
            "threshold must be between 1 and the number of proxies"
        );
        require(expiresAt > block.timestamp, "expiry must be in the future");
        for (uint256 i = 0; i < proxies.length; i++) {
            require(orgs.isActiveOrg(proxies[i]), "unknown or inactive org among the proxies");
            for (uint256 j = 0; j < i; j++) {
                require(proxies[j] != proxies[i], "duplicate proxy");
            }
        }
        Grant storage g = _grants[recordId][reader];
        if (g.version == 0) {
            _readersOf[recordId].push(reader);
            _grantedTo[reader].push(recordId);
        }
        uint32 version = g.version + 1;
        g.threshold = threshold;
        g.proxies = proxies;
        g.expiresAt = expiresAt;
        g.version = version;
        g.revoked = false;
        emit AccessGranted(recordId, reader, version, threshold, proxies, expiresAt);
    }

    /// @notice End a reader's access: every proxy refuses from this block on.
    function revoke(bytes16 recordId, bytes32 reader) external onlyOwner(recordId) {
        Grant storage g = _grants[recordId][reader];
        require(g.version != 0, "no grant to revoke");
        require(!g.revoked, "grant already revoked");
        g.revoked = true;
        emit AccessRevoked(recordId, reader, g.version);
    }

    function party(bytes32 id) external view returns (Party memory) {
        return _parties[id];
    }

    function record(bytes16 recordId) external view returns (Record memory) {
        require(_records[recordId].owner != bytes32(0), "record not registered");
        return _records[recordId];
    }

    /// @notice A grant (all zero when none) and the chain's time, in one call.
    function grantOf(bytes16 recordId, bytes32 reader)
        external
        view
        returns (Grant memory, uint64 chainTime)
    {
        return (_grants[recordId][reader], uint64(block.timestamp));
    }

    function recordsOf(bytes32 owner) external view returns (bytes16[] memory) {
        return _recordsOf[owner];
    }

    function readersOf(bytes16 recordId) external view returns (bytes32[] memory) {
        return _readersOf[recordId];
    }

    function grantedTo(bytes32 reader) external view returns (bytes16[] memory) {
        return _grantedTo[reader];
    }
}
