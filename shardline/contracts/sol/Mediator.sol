// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

/// @title Mediator
/// @notice Settles private transactions of a group of stakeholders on a public chain that never
///         sees their inputs or state. The sender submits the hash of a sealed payload and one
///         key wrap per stakeholder; each stakeholder executes the payload on its own private EVM
///         and votes (old state root, new state root); when the group's policy is met, or can no
///         longer be met, the mediator emits PrivateTxFini with the status and the agreed roots.
/// @dev Policies: unanimous (threshold == members) or k-of-n with a majority threshold (2k > n,
///      so two different outcomes can never both reach it). A YES also needs the agreed old root
///      to be the group's current root: the private states form one agreed chain of roots, and a
///      transaction executed on a state that was never agreed settles NO.
///      Votes come one transaction per member (msg.sender), signed by the members ahead of the
///      submission and carried by it (submitVoted), or as one BLS aggregate signature
///      (BN254, signatures in G1, keys in G2, checked with the pairing precompile) that anyone
///      may submit on behalf of the signers.
contract Mediator {
    uint8 public constant PENDING = 0;
    uint8 public constant YES = 1;
    uint8 public constant NO = 2;
    uint8 public constant FAILED = 3;

    uint256 internal constant P =
        21888242871839275222246405745257275088696311157297823662689037894645226208583;

    struct Group {
        address sender;
        uint8 threshold;
        uint8 size;
        uint32 timeout;
        bytes32 root;
        uint64 submitted;
    }

    struct Policy {
        uint8 threshold; // members that must agree: all of them for unanimous
        uint32 timeout; // seconds from submit until a transaction may be expired as FAILED
        bytes32 initialRoot; // storage root of the freshly deployed private contract
    }

    /// A member's vote cast ahead of the submission: it executed the pushed payload as the
    /// group's `seq`-th transaction and signed preVoteDigest(...) with its account key.
    struct PreVote {
        uint8 member;
        bytes32 oldRoot;
        bytes32 newRoot;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    struct PrivateTx {
        uint8 status;
        uint8 votes;
        uint8 best;
        uint64 deadline;
        uint64 seq;
        bytes32 oldRoot;
        bytes32 newRoot;
    }

    mapping(bytes32 => Group) private _groups;
    mapping(bytes32 => address[]) private _members;
    mapping(bytes32 => bytes32[]) private _sealKeys;
    mapping(bytes32 => uint256[4][]) private _blsKeys;
    mapping(bytes32 => mapping(bytes32 => PrivateTx)) private _txs;
    // group => payload hash => member index + 1 => keccak(oldRoot, newRoot) of its vote
    mapping(bytes32 => mapping(bytes32 => mapping(uint256 => bytes32))) private _votes;
    // keccak(group, payload hash, oldRoot, newRoot) => how many members voted exactly that
    mapping(bytes32 => uint8) private _tally;

    event GroupCreated(
        bytes32 indexed group,
        address sender,
        address[] members,
        bytes32[] sealKeys,
        uint8 threshold,
        uint32 timeout,
        bytes32 root
    );
    event PrivateTxInit(
        bytes32 indexed group,
        bytes32 indexed payloadHash,
        uint64 seq,
        bytes32 ephemeralPk,
        bytes[] wraps,
        uint64 deadline
    );
    event PrivateTxVote(
        bytes32 indexed group,
        bytes32 indexed payloadHash,
        uint8 member,
        bytes32 oldRoot,
        bytes32 newRoot
    );
    event PrivateTxFini(
        bytes32 indexed group,
        bytes32 indexed payloadHash,
        uint8 status,
        bytes32 oldRoot,
        bytes32 newRoot
    );

    // -- groups ------------------------------------------------------------------------------

    /// @param blsKeys one BN254 G2 key per member (x.im, x.re, y.im, y.re), or none at all
    /// @param pops each member's proof of possession: its signature (G1) on its own key
    function createGroup(
        bytes32 group,
        address senderSigner,
        address[] calldata members,
        bytes32[] calldata sealKeys,
        Policy calldata policy,
        uint256[4][] calldata blsKeys,
        uint256[2][] calldata pops
    ) external {
        require(_groups[group].size == 0, "group exists");
        require(senderSigner != address(0), "no sender");
        require(members.length > 0 && members.length <= 32, "members: 1 to 32");
        require(sealKeys.length == members.length, "one sealing key per member");
        uint8 threshold = policy.threshold;
        require(threshold > 0 && threshold <= members.length, "threshold out of range");
        require(2 * uint256(threshold) > members.length, "threshold must be a majority");
        require(policy.timeout > 0, "timeout must be positive");
        for (uint256 i = 0; i < members.length; i++) {
            require(members[i] != address(0), "zero member");
            for (uint256 j = 0; j < i; j++) require(members[j] != members[i], "duplicate member");
        }
        _setBlsKeys(group, members.length, blsKeys, pops);
        _groups[group] = Group(
            senderSigner,
            threshold,
            uint8(members.length),
            policy.timeout,
            policy.initialRoot,
            0
        );
        _members[group] = members;
        _sealKeys[group] = sealKeys;
        emit GroupCreated(
            group,
            senderSigner,
            members,
            sealKeys,
            threshold,
            policy.timeout,
            policy.initialRoot
        );
    }

    function _setBlsKeys(
        bytes32 group,
        uint256 size,
        uint256[4][] calldata blsKeys,
        uint256[2][] calldata pops
    ) internal {
        require(blsKeys.length == 0 || blsKeys.length == size, "one BLS key per member");
        require(pops.length == blsKeys.length, "one proof of possession per BLS key");
        for (uint256 i = 0; i < blsKeys.length; i++) {
            (uint256 hx, uint256 hy) = hashToG1(keccak256(abi.encode(blsKeys[i])));
            require(_pairing2(pops[i], hx, hy, blsKeys[i]), "bad proof of possession");
            _blsKeys[group].push(blsKeys[i]);
        }
    }

    function groupOf(
        bytes32 group
    )
        external
        view
        returns (
            address sender,
            address[] memory members,
            bytes32[] memory sealKeys,
            uint8 threshold,
            uint32 timeout,
            bytes32 root,
            uint64 submitted
        )
    {
        Group storage g = _groups[group];
        require(g.size > 0, "unknown group");
        return (g.sender, _members[group], _sealKeys[group], g.threshold, g.timeout, g.root, g.submitted);
    }

    // -- transactions ------------------------------------------------------------------------

    function submit(
        bytes32 group,
        bytes32 payloadHash,
        bytes32 ephemeralPk,
        bytes[] calldata wraps
    ) external {
        Group storage g = _sendersGroup(group);
        _submit(g, group, payloadHash, ephemeralPk, wraps);
    }

    /// @notice Several submissions to one group in one transaction, in this order.
    function submitMany(
        bytes32 group,
        bytes32[] calldata payloadHashes,
        bytes32[] calldata ephemeralPks,
        bytes[][] calldata wraps
    ) external {
        Group storage g = _sendersGroup(group);
        require(
            payloadHashes.length == ephemeralPks.length && ephemeralPks.length == wraps.length,
            "lengths differ"
        );
        for (uint256 i = 0; i < payloadHashes.length; i++) {
            _submit(g, group, payloadHashes[i], ephemeralPks[i], wraps[i]);
        }
    }

    /// @notice Submissions (in this order) together with the votes their members cast ahead:
    ///         each member executed the payload pushed to it as the group's next transaction
    ///         and signed preVoteDigest(group, payloadHash, seq, oldRoot, newRoot). When the
    ///         votes meet the policy, PrivateTxFini comes in this same transaction. A vote that
    ///         does not verify, names no member, or was cast for another position in the
    ///         group's sequence is left out: its member votes on chain as usual.
    function submitVoted(
        bytes32 group,
        bytes32[] calldata payloadHashes,
        bytes32[] calldata ephemeralPks,
        bytes[][] calldata wraps,
        PreVote[][] calldata votes
    ) external {
        Group storage g = _sendersGroup(group);
        require(
            payloadHashes.length == ephemeralPks.length &&
                ephemeralPks.length == wraps.length &&
                wraps.length == votes.length,
            "lengths differ"
        );
        for (uint256 i = 0; i < payloadHashes.length; i++) {
            uint64 seq = _submit(g, group, payloadHashes[i], ephemeralPks[i], wraps[i]);
            bytes32 seal = sealHash(ephemeralPks[i], wraps[i]);
            _preVotes(group, payloadHashes[i], seq, seal, g.size, votes[i]);
        }
    }

    function _preVotes(
        bytes32 group,
        bytes32 payloadHash,
        uint64 seq,
        bytes32 seal,
        uint8 size,
        PreVote[] calldata votes
    ) internal {
        address[] storage members = _members[group];
        for (uint256 j = 0; j < votes.length; j++) {
            if (_txs[group][payloadHash].status != PENDING) break;
            PreVote calldata pv = votes[j];
            if (pv.member >= size) continue;
            if (_votes[group][payloadHash][uint256(pv.member) + 1] != bytes32(0)) continue;
            // s in the lower half: one valid signature per vote (EIP-2)
            if (uint256(pv.s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0)
                continue;
            bytes32 digest = preVoteDigest(group, payloadHash, seq, seal, pv.oldRoot, pv.newRoot);
            address signer = ecrecover(digest, pv.v, pv.r, pv.s);
            if (signer == address(0) || signer != members[pv.member]) continue;
            _vote(group, payloadHash, pv.member, pv.oldRoot, pv.newRoot);
        }
    }

    function _submit(
        Group storage g,
        bytes32 group,
        bytes32 payloadHash,
        bytes32 ephemeralPk,
        bytes[] calldata wraps
    ) internal returns (uint64 seq) {
        require(wraps.length == g.size, "one wrap per member");
        PrivateTx storage t = _txs[group][payloadHash];
        require(t.deadline == 0, "replayed submit");
        uint64 deadline = uint64(block.timestamp) + g.timeout;
        seq = ++g.submitted;
        t.deadline = deadline;
        t.seq = seq;
        emit PrivateTxInit(group, payloadHash, seq, ephemeralPk, wraps, deadline);
    }

    function vote(bytes32 group, bytes32 payloadHash, bytes32 oldRoot, bytes32 newRoot) external {
        _vote(group, payloadHash, _memberIndex(group, msg.sender), oldRoot, newRoot);
    }

    /// @notice Several votes of one member in one transaction (in submission order).
    function voteMany(
        bytes32 group,
        bytes32[] calldata payloadHashes,
        bytes32[] calldata oldRoots,
        bytes32[] calldata newRoots
    ) external {
        require(
            payloadHashes.length == oldRoots.length && oldRoots.length == newRoots.length,
            "lengths differ"
        );
        uint256 index = _memberIndex(group, msg.sender);
        for (uint256 i = 0; i < payloadHashes.length; i++) {
            if (_txs[group][payloadHashes[i]].status != PENDING) continue; // settled meanwhile
            if (_votes[group][payloadHashes[i]][index + 1] != bytes32(0)) continue; // voted ahead
            _vote(group, payloadHashes[i], index, oldRoots[i], newRoots[i]);
        }
    }

    /// @notice The votes of the members in `signers` (bit i = member i), carried by one
    ///         aggregate BLS signature on voteDigest(...); anyone may submit it.
    function voteAggregate(
        bytes32 group,
        bytes32 payloadHash,
        bytes32 oldRoot,
        bytes32 newRoot,
        uint256 signers,
        uint256[2] calldata signature
    ) external {
        uint256[4][] storage keys = _blsKeys[group];
        require(keys.length > 0, "group has no BLS keys");
        require(signers != 0 && signers >> keys.length == 0, "bad signer set");
        (uint256 hx, uint256 hy) = hashToG1(voteDigest(group, payloadHash, oldRoot, newRoot));
        uint256 count;
        for (uint256 i = 0; i < keys.length; i++) if ((signers >> i) & 1 == 1) count++;
        uint256[] memory input = new uint256[](6 * (count + 1));
        input[0] = signature[0];
        input[1] = signature[1];
        // -G2 generator: e(sig, -g2) * prod e(H, pk_i) == 1
        input[2] = 11559732032986387107991004021392285783925812861821192530917403151452391805634;
        input[3] = 10857046999023057135944570762232829481370756359578518086990519993285655852781;
        input[4] = 17805874995975841540914202342111839520379459829704422454583296818431106115052;
        input[5] = 13392588948715843804641432497768002650278120570034223513918757245338268106653;
        uint256 k = 6;
        for (uint256 i = 0; i < keys.length; i++) {
            if ((signers >> i) & 1 == 0) continue;
            input[k] = hx;
            input[k + 1] = hy;
            input[k + 2] = keys[i][0];
            input[k + 3] = keys[i][1];
            input[k + 4] = keys[i][2];
            input[k + 5] = keys[i][3];
            k += 6;
        }
        require(_pairingCheck(input), "aggregate signature does not verify");
        for (uint256 i = 0; i < keys.length; i++) {
            if ((signers >> i) & 1 == 0) continue;
            if (_txs[group][payloadHash].status != PENDING) break;
            if (_votes[group][payloadHash][i + 1] != bytes32(0)) continue; // voted already
            _vote(group, payloadHash, i, oldRoot, newRoot);
        }
    }

    /// @notice Ends a transaction whose deadline passed without a decision as FAILED.
    function expire(bytes32 group, bytes32 payloadHash) external {
        PrivateTx storage t = _txs[group][payloadHash];
        require(t.deadline != 0, "unknown transaction");
        require(t.status == PENDING, "already settled");
        require(block.timestamp > t.deadline, "deadline not reached");
        t.status = FAILED;
        emit PrivateTxFini(group, payloadHash, FAILED, bytes32(0), bytes32(0));
    }

    function txOf(
        bytes32 group,
        bytes32 payloadHash
    )
        external
        view
        returns (uint8 status, uint8 votes, uint64 deadline, uint64 seq, bytes32 oldRoot, bytes32 newRoot)
    {
        PrivateTx storage t = _txs[group][payloadHash];
        require(t.deadline != 0, "unknown transaction");
        return (t.status, t.votes, t.deadline, t.seq, t.oldRoot, t.newRoot);
    }

    function voteDigest(
        bytes32 group,
        bytes32 payloadHash,
        bytes32 oldRoot,
        bytes32 newRoot
    ) public view returns (bytes32) {
        return
            keccak256(
                abi.encode(
                    "shardline.privtx.vote",
                    block.chainid,
                    address(this),
                    group,
                    payloadHash,
                    oldRoot,
                    newRoot
                )
            );
    }

    /// @notice What a member signs for a vote cast ahead of the submission (`submitVoted`):
    ///         bound to the transaction's position in the group's sequence, so that it counts
    ///         only where the member executed it, and to the key wraps it opened (`sealHash`),
    ///         so that it counts only if the chain carries those: what the chain carries is
    ///         what a member that was away, or rebuilds, opens later.
    function preVoteDigest(
        bytes32 group,
        bytes32 payloadHash,
        uint64 seq,
        bytes32 seal,
        bytes32 oldRoot,
        bytes32 newRoot
    ) public view returns (bytes32) {
        return
            keccak256(
                abi.encode(
                    "shardline.privtx.prevote",
                    block.chainid,
                    address(this),
                    group,
                    payloadHash,
                    seq,
                    seal,
                    oldRoot,
                    newRoot
                )
            );
    }

    /// @notice The ephemeral key and the key wraps of a submission, hashed in a chain:
    ///         h = ephemeralPk; h = keccak256(h || wrap) for each wrap in order.
    function sealHash(bytes32 ephemeralPk, bytes[] calldata wraps) public pure returns (bytes32 h) {
        h = ephemeralPk;
        for (uint256 i = 0; i < wraps.length; i++) h = keccak256(abi.encodePacked(h, wraps[i]));
    }

    // -- internals ---------------------------------------------------------------------------

    function _sendersGroup(bytes32 group) internal view returns (Group storage g) {
        g = _groups[group];
        require(g.size > 0, "unknown group");
        require(msg.sender == g.sender, "not the group's sender");
    }

    function _memberIndex(bytes32 group, address account) internal view returns (uint256) {
        address[] storage members = _members[group];
        require(members.length > 0, "unknown group");
        for (uint256 i = 0; i < members.length; i++) if (members[i] == account) return i;
        revert("not a member of the group");
    }

    function _vote(
        bytes32 group,
        bytes32 payloadHash,
        uint256 index,
        bytes32 oldRoot,
        bytes32 newRoot
    ) internal {
        PrivateTx storage t = _txs[group][payloadHash];
        require(t.deadline != 0, "unknown transaction");
        require(t.status == PENDING, "already settled");
        require(_votes[group][payloadHash][index + 1] == bytes32(0), "already voted");
        bytes32 pair = keccak256(abi.encode(oldRoot, newRoot));
        _votes[group][payloadHash][index + 1] = pair;
        // A new root of zero is a refusal (the member could not open or run the payload): it
        // counts as a vote but never towards an outcome.
        uint8 n = 0;
        if (newRoot != bytes32(0)) {
            n = ++_tally[keccak256(abi.encode(group, payloadHash, oldRoot, newRoot))];
        }
        t.votes += 1;
        if (n > t.best) t.best = n;
        emit PrivateTxVote(group, payloadHash, uint8(index), oldRoot, newRoot);

        Group storage g = _groups[group];
        if (n > 0 && n >= g.threshold) {
            // The agreed transaction must extend the group's agreed state.
            bool extends = oldRoot == g.root;
            t.status = extends ? YES : NO;
            t.oldRoot = oldRoot;
            t.newRoot = newRoot;
            if (extends) g.root = newRoot;
            emit PrivateTxFini(group, payloadHash, t.status, oldRoot, newRoot);
        } else if (uint256(g.size) - t.votes + t.best < g.threshold) {
            // Not enough members are left to reach the threshold on any outcome.
            t.status = NO;
            emit PrivateTxFini(group, payloadHash, NO, g.root, g.root);
        }
    }

    /// @notice Try-and-increment hash onto BN254 G1 (the message is public: no secret timing).
    function hashToG1(bytes32 message) public view returns (uint256 x, uint256 y) {
        for (uint256 ctr = 0; ; ctr++) {
            x = uint256(keccak256(abi.encodePacked(message, ctr))) % P;
            uint256 y2 = addmod(mulmod(mulmod(x, x, P), x, P), 3, P);
            y = _modexp(y2, (P + 1) / 4);
            if (mulmod(y, y, P) == y2) return (x, y);
        }
    }

    function _modexp(uint256 base, uint256 e) internal view returns (uint256 r) {
        bytes memory input = abi.encode(uint256(32), uint256(32), uint256(32), base, e, P);
        (bool ok, bytes memory out) = address(0x05).staticcall(input);
        require(ok, "modexp failed");
        r = abi.decode(out, (uint256));
    }

    function _pairing2(
        uint256[2] calldata sig,
        uint256 hx,
        uint256 hy,
        uint256[4] calldata key
    ) internal view returns (bool) {
        uint256[] memory input = new uint256[](12);
        input[0] = sig[0];
        input[1] = sig[1];
        input[2] = 11559732032986387107991004021392285783925812861821192530917403151452391805634;
        input[3] = 10857046999023057135944570762232829481370756359578518086990519993285655852781;
        input[4] = 17805874995975841540914202342111839520379459829704422454583296818431106115052;
        input[5] = 13392588948715843804641432497768002650278120570034223513918757245338268106653;
        input[6] = hx;
        input[7] = hy;
        input[8] = key[0];
        input[9] = key[1];
        input[10] = key[2];
        input[11] = key[3];
        return _pairingCheck(input);
    }

    function _pairingCheck(uint256[] memory input) internal view returns (bool) {
        (bool ok, bytes memory out) = address(0x08).staticcall(abi.encodePacked(input));
        return ok && out.length == 32 && abi.decode(out, (uint256)) == 1;
    }
}
