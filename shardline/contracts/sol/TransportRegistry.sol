// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

import {OrgRegistry} from "./OrgRegistry.sol";

/// @title TransportRegistry
/// @notice What the chain knows of a hazardous-goods transport: the commitment to its cargo sheet,
///         the t-of-n org set holding the shares, and the company that registered it.
/// @dev A transport is known only by its key (a hash of its id), so the log does not list fleets.
contract TransportRegistry {
    /// @dev Two storage slots a transport: the commitment, and one word holding the rest with
    ///      the id of its org set, which is stored once for all the transports that share it.
    ///      Every slot is gas on a real chain (a new one costs 20k) and, on an anvil, work at
    ///      every block (it hashes the whole state again): with 264 transports registered, a
    ///      block of the embedded chain cost 3.1x one with none at eight slots a transport,
    ///      1.6x at two.
    struct Transport {
        bytes32 commitment;
        address company;
        uint32 version;
        uint32 orgSet; // 1-based index into _orgSets
        uint8 threshold;
        bool active;
    }

    /// @notice The registry of participants this registry trusts.
    OrgRegistry public immutable orgs;

    mapping(bytes32 => Transport) private _transports;
    /// @dev Each distinct org set (in order: a share's x is its org's place in it) once, and
    ///      its index by the hash of the set.
    bytes32[][] private _orgSets;
    mapping(bytes32 => uint32) private _orgSetIndex;

    event TransportRegistered(
        bytes32 indexed key,
        address indexed company,
        bytes32 commitment,
        uint8 threshold,
        bytes32[] orgIds,
        uint32 version
    );
    event TransportUpdated(
        bytes32 indexed key,
        address indexed company,
        bytes32 commitment,
        uint8 threshold,
        bytes32[] orgIds,
        uint32 version
    );
    event TransportRetired(bytes32 indexed key, address indexed company);

    constructor(OrgRegistry orgRegistry) {
        orgs = orgRegistry;
    }

    modifier onlyCompany(bytes32 key) {
        Transport storage t = _transports[key];
        require(t.version != 0, "transport not registered");
        require(
            msg.sender == t.company,
            "only the registering company may update or retire this transport"
        );
        require(t.active, "transport is retired");
        _;
    }

    /// @notice Register a transport; the sender (an active org account) becomes its company.
    /// @param key The transport key (hash of the transport id).
    /// @param commitment The commitment to the shared cargo sheet.
    /// @param threshold How many org shares reconstruct the sheet.
    /// @param orgIds The orgs holding one share each.
    function register(
        bytes32 key,
        bytes32 commitment,
        uint8 threshold,
        bytes32[] calldata orgIds
    ) external {
        require(orgs.isActiveOrgAccount(msg.sender), "only a registered org may register transports");
        require(key != bytes32(0), "transport key must not be empty");
        require(_transports[key].version == 0, "transport already registered");
        _checkShape(commitment, threshold, orgIds);
        _transports[key] = Transport(commitment, msg.sender, 1, _orgSetOf(orgIds), threshold, true);
        emit TransportRegistered(key, msg.sender, commitment, threshold, orgIds, 1);
    }

    /// @notice Replace a transport's commitment and org set (for instance after a reshare).
    function update(
        bytes32 key,
        bytes32 commitment,
        uint8 threshold,
        bytes32[] calldata orgIds
    ) external onlyCompany(key) {
        _checkShape(commitment, threshold, orgIds);
        uint32 version = _transports[key].version + 1;
        _transports[key] =
            Transport(commitment, msg.sender, version, _orgSetOf(orgIds), threshold, true);
        emit TransportUpdated(key, msg.sender, commitment, threshold, orgIds, version);
    }

    /// @notice Retire a transport: no further lookups are authorised for it.
    function retire(bytes32 key) external onlyCompany(key) {
        _transports[key].active = false;
        emit TransportRetired(key, msg.sender);
    }

    /// @notice A registered transport's record.
    function get(bytes32 key)
        external
        view
        returns (
            bytes32 commitment,
            uint8 threshold,
            bytes32[] memory orgIds,
            address company,
            uint32 version,
            bool active
        )
    {
        Transport storage t = _transports[key];
        require(t.version != 0, "transport not registered");
        return (t.commitment, t.threshold, _orgSets[t.orgSet - 1], t.company, t.version, t.active);
    }

    /// @notice True when `key` was ever registered (retired transports included).
    function exists(bytes32 key) external view returns (bool) {
        return _transports[key].version != 0;
    }

    /// @notice Cheap status read for the Gatekeeper: version 0 means not registered.
    function status(bytes32 key) external view returns (uint32 version, bool active) {
        Transport storage t = _transports[key];
        return (t.version, t.active);
    }

    /// @dev The index of this org set, stored now if no transport had it before.
    function _orgSetOf(bytes32[] calldata orgIds) private returns (uint32 index) {
        bytes32 h = keccak256(abi.encode(orgIds));
        index = _orgSetIndex[h];
        if (index == 0) {
            _orgSets.push(orgIds);
            index = uint32(_orgSets.length);
            _orgSetIndex[h] = index;
        }
    }

    function _checkShape(bytes32 commitment, uint8 threshold, bytes32[] calldata orgIds)
        private
        view
    {
        require(commitment != bytes32(0), "commitment must not be empty");
        require(
            threshold >= 1 && threshold <= orgIds.length,
            "threshold must be between 1 and the number of orgs"
        );
        for (uint256 i = 0; i < orgIds.length; i++) {
            require(orgs.isActiveOrg(orgIds[i]), "unknown or inactive org in the org set");
            for (uint256 j = 0; j < i; j++) {
                require(orgIds[j] != orgIds[i], "duplicate org in the org set");
            }
        }
    }
}
