// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity ^0.8.24;

import {OrgRegistry} from "./OrgRegistry.sol";

/// @title Market
/// @notice Statistics over secret-shared data, paid for and settled here. MPC servers (org
///         nodes) stake; producers contribute shared rows to a data set; a consumer opens a job
///         with a deposit; the servers chosen by reputation commit to and reveal their output
///         shares, one-time padded with the consumer's shared mask; the consumer accepts, or
///         names cheaters with evidence this contract checks (Reed-Solomon consistency over
///         GF(2^61 - 1)); silence past the deadline is a fault. Settlement pays producers and
///         honest servers, or refunds the consumer and slashes the faulty.
/// @dev Payments are credited to `balanceOf` and taken with `withdraw` (pull payments).
contract Market {
    uint256 public constant P = (1 << 61) - 1;
    uint16 public constant PRODUCER_BPS = 3000; // producers' part of a job's price
    int64 public constant REPUTATION_START = 100;
    int64 public constant REPUTATION_HONEST = 1;
    int64 public constant REPUTATION_FAULT = 50;
    uint16 public constant MAX_WIDTH = 256;

    enum Status {
        None,
        Open,
        Done,
        Failed,
        Refused
    }

    struct Server {
        uint256 stake;
        int64 reputation;
        uint32 jobs;
        uint32 faults;
        uint32 active;
        address account;
    }

    struct Dataset {
        address curator;
        uint8 threshold;
        uint32 k;
        bytes schema;
        bytes32[] servers;
    }

    struct Contribution {
        bytes32 producer;
        bytes32 digest;
        uint32 rows;
    }

    struct Producer {
        address account;
        bytes32 signingKey;
    }

    struct Job {
        bytes32 dataset;
        address consumer;
        uint256 price;
        bytes32 consumerKey;
        uint64 commitDeadline;
        uint64 revealDeadline;
        uint64 acceptDeadline;
        uint32 inputs;
        uint32 producers;
        uint16 width;
        uint8 committed;
        uint8 revealed;
        uint8 refused;
        Status status;
        uint256 perProducer;
        bytes spec;
        bytes32[] servers;
        uint8[] xs;
        bytes32[] maskCommits;
    }

    struct Slot {
        bytes32 commitment;
        uint256 countShare;
        bool committed;
        bool revealed;
        bool refused;
        bool cheater;
        uint256[] masked;
    }

    OrgRegistry public immutable orgs;
    uint256 public immutable minStake;

    mapping(bytes32 => Server) private _servers;
    bytes32[] private _serverIds;
    mapping(bytes32 => Dataset) private _datasets;
    mapping(bytes32 => Contribution[]) private _contributions;
    mapping(bytes32 => Producer) private _producers;
    mapping(bytes32 => mapping(bytes32 => uint32)) private _producerNumber; // 1-based, per data set
    mapping(bytes32 => uint32) public producerCount;
    mapping(uint256 => Job) private _jobs;
    mapping(uint256 => mapping(uint8 => Slot)) private _slots;
    mapping(uint256 => mapping(bytes32 => bool)) private _claimed;
    mapping(address => uint256) public balanceOf;
    uint256 public jobCount;

    event ServerStaked(bytes32 indexed server, uint256 stake);
    event DatasetCreated(bytes32 indexed dataset, uint8 threshold, uint32 k, bytes32[] servers);
    event Contributed(
        bytes32 indexed dataset, bytes32 indexed producer, uint32 index, bytes32 digest, uint32 rows
    );
    event JobOpened(
        uint256 indexed job,
        bytes32 indexed dataset,
        address consumer,
        uint256 price,
        bytes32[] servers,
        uint8[] xs,
        bytes spec,
        bytes[] maskBoxes
    );
    event Committed(uint256 indexed job, bytes32 indexed server, uint256 countShare);
    event Revealed(uint256 indexed job, bytes32 indexed server);
    event Refusal(uint256 indexed job, bytes32 indexed server);
    event CheaterNamed(uint256 indexed job, bytes32 indexed server);
    event Slashed(uint256 indexed job, bytes32 indexed server, uint256 amount, string why);
    event JobSettled(uint256 indexed job, Status status);

    constructor(OrgRegistry orgRegistry, uint256 minimumStake) {
        orgs = orgRegistry;
        minStake = minimumStake;
    }

    // -- servers ---------------------------------------------------------------------------

    /// @notice Stake (or add stake) as the MPC server of the sender's org.
    function stake() external payable {
        bytes32 id = orgs.idOf(msg.sender);
        require(id != bytes32(0) && orgs.isActiveOrg(id), "only an active org's account may serve");
        Server storage s = _servers[id];
        if (s.account == address(0)) {
            s.account = msg.sender;
            s.reputation = REPUTATION_START;
            _serverIds.push(id);
        }
        s.stake += msg.value;
        require(s.stake >= minStake, "stake below the minimum");
        emit ServerStaked(id, s.stake);
    }

    /// @notice Take stake back (credited to balanceOf) while serving no open job.
    function unstake(uint256 amount) external {
        bytes32 id = orgs.idOf(msg.sender);
        Server storage s = _servers[id];
        require(s.account == msg.sender, "not a staked server");
        require(s.active == 0, "the server is in an open job");
        require(amount <= s.stake, "more than the stake");
        s.stake -= amount;
        balanceOf[msg.sender] += amount;
        emit ServerStaked(id, s.stake);
    }

    function server(bytes32 id) external view returns (Server memory) {
        return _servers[id];
    }

    function serverIds() external view returns (bytes32[] memory) {
        return _serverIds;
    }

    // -- data sets and producers ------------------------------------------------------------

    function createDataset(
        bytes32 id,
        bytes calldata schema,
        uint8 threshold,
        uint32 k,
        bytes32[] calldata servers
    ) external {
        require(id != bytes32(0), "data set id must not be empty");
        require(_datasets[id].curator == address(0), "data set already exists");
        require(threshold >= 1, "threshold must be at least 1");
        require(servers.length >= 3 * uint256(threshold) + 1, "too few servers: need 3t+1");
        require(servers.length <= 32, "at most 32 servers");
        for (uint256 i = 0; i < servers.length; i++) {
            require(_servers[servers[i]].account != address(0), "a server has no stake");
            for (uint256 j = 0; j < i; j++) {
                require(servers[i] != servers[j], "a server is listed twice");
            }
        }
        Dataset storage d = _datasets[id];
        d.curator = msg.sender;
        d.threshold = threshold;
        d.k = k;
        d.schema = schema;
        d.servers = servers;
        emit DatasetCreated(id, threshold, k, servers);
    }

    function dataset(bytes32 id) external view returns (Dataset memory) {
        return _datasets[id];
    }

    /// @notice Record a producer's shared rows (the servers take them from the bus and check
    ///         them against `digest`); registers the producer for rewards on first use.
    function contribute(
        bytes32 datasetId,
        bytes32 producerId,
        bytes32 signingKey,
        bytes32 digest,
        uint32 rows
    ) external {
        require(_datasets[datasetId].curator != address(0), "unknown data set");
        require(producerId != bytes32(0) && rows > 0, "empty producer id or no rows");
        Producer storage p = _producers[producerId];
        if (p.account == address(0)) {
            p.account = msg.sender;
            p.signingKey = signingKey;
        }
        require(p.account == msg.sender, "producer id belongs to another account");
        require(p.signingKey == signingKey, "producer signing key cannot change");
        if (_producerNumber[datasetId][producerId] == 0) {
            producerCount[datasetId] += 1;
            _producerNumber[datasetId][producerId] = producerCount[datasetId];
        }
        _contributions[datasetId].push(Contribution(producerId, digest, rows));
        emit Contributed(
            datasetId, producerId, uint32(_contributions[datasetId].length - 1), digest, rows
        );
    }

    function producer(bytes32 id) external view returns (Producer memory) {
        return _producers[id];
    }

    function contributionCount(bytes32 datasetId) external view returns (uint256) {
        return _contributions[datasetId].length;
    }

    function contribution(bytes32 datasetId, uint256 index)
        external
        view
        returns (Contribution memory)
    {
        return _contributions[datasetId][index];
    }

    // -- choosing servers ---------------------------------------------------------------------

    /// @notice The 3t+1 servers the next job on `datasetId` gets: the data set's servers with at
    ///         least the minimum stake, best reputation first (ties: the data set's order).
    function chooseServers(bytes32 datasetId) public view returns (bytes32[] memory chosen) {
        Dataset storage d = _datasets[datasetId];
        require(d.curator != address(0), "unknown data set");
        uint256 need = 3 * uint256(d.threshold) + 1;
        uint256 n = d.servers.length;
        bytes32[] memory pool = new bytes32[](n);
        uint256 m = 0;
        for (uint256 i = 0; i < n; i++) {
            if (_servers[d.servers[i]].stake >= minStake) pool[m++] = d.servers[i];
        }
        require(m >= need, "too few servers with stake for this data set: need 3t+1");
        chosen = new bytes32[](need);
        bool[] memory used = new bool[](m);
        for (uint256 c = 0; c < need; c++) {
            uint256 best = type(uint256).max;
            for (uint256 i = 0; i < m; i++) {
                if (used[i]) continue;
                if (
                    best == type(uint256).max
                        || _servers[pool[i]].reputation > _servers[pool[best]].reputation
                ) best = i;
            }
            used[best] = true;
            chosen[c] = pool[best];
        }
    }

    // -- jobs -----------------------------------------------------------------------------------

    /// @notice Open a job. `servers` must be `chooseServers(datasetId)` (the mask is shared for
    ///         them); `maskCommits[i]` is keccak256(abi.encode(consumerKey, i, mask_i, salt_i))
    ///         and `maskBoxes[i]` that mask share sealed to server i.
    struct JobRequest {
        bytes32 dataset;
        bytes spec;
        uint16 width;
        bytes32 consumerKey;
        bytes32[] servers;
        bytes32[] maskCommits;
        bytes[] maskBoxes;
        uint64 commitWindow;
        uint64 revealWindow;
    }

    function openJob(JobRequest calldata r) external payable returns (uint256 jobId) {
        require(msg.value > 0, "a job needs a deposit");
        require(r.width >= 1 && r.width <= MAX_WIDTH, "output width out of range");
        bytes32[] memory chosen = chooseServers(r.dataset);
        require(
            keccak256(abi.encode(chosen)) == keccak256(abi.encode(r.servers)),
            "the servers are not the ones chosen now: ask chooseServers again"
        );
        require(
            r.maskCommits.length == r.servers.length && r.maskBoxes.length == r.servers.length,
            "one mask per server"
        );
        require(r.commitWindow > 0 && r.revealWindow > 0, "windows must be positive");
        jobId = ++jobCount;
        Job storage j = _jobs[jobId];
        j.dataset = r.dataset;
        j.consumer = msg.sender;
        j.price = msg.value;
        j.consumerKey = r.consumerKey;
        j.commitDeadline = uint64(block.timestamp) + r.commitWindow;
        j.revealDeadline = j.commitDeadline + r.revealWindow;
        j.acceptDeadline = j.revealDeadline + r.revealWindow;
        j.inputs = uint32(_contributions[r.dataset].length);
        j.producers = producerCount[r.dataset];
        j.width = r.width;
        j.status = Status.Open;
        j.spec = r.spec;
        j.servers = r.servers;
        j.maskCommits = r.maskCommits;
        _placeServers(j);
        emit JobOpened(jobId, r.dataset, msg.sender, msg.value, r.servers, j.xs, r.spec, r.maskBoxes);
    }

    function _placeServers(Job storage j) private {
        bytes32[] storage all = _datasets[j.dataset].servers;
        for (uint256 i = 0; i < j.servers.length; i++) {
            _servers[j.servers[i]].active += 1;
            for (uint8 x = 0; x < all.length; x++) {
                if (all[x] == j.servers[i]) j.xs.push(x + 1);
            }
        }
    }

    function job(uint256 id) external view returns (Job memory) {
        return _jobs[id];
    }

    function slot(uint256 id, uint8 i) external view returns (Slot memory) {
        return _slots[id][i];
    }

    function _slotOf(Job storage j, address account) private view returns (uint8) {
        bytes32 id = orgs.idOf(account);
        for (uint8 i = 0; i < j.servers.length; i++) {
            if (j.servers[i] == id && _servers[id].account == account) return i;
        }
        revert("the sender is not a server of this job");
    }

    function _revealPhase(Job storage j) private view returns (bool) {
        return j.committed == j.servers.length || block.timestamp > j.commitDeadline;
    }

    /// @notice Commit to an output share: keccak256(abi.encode(job, slot, masked, salt)); the
    ///         count share (unmasked) lets every server check the job selects at least k rows.
    function commit(uint256 id, bytes32 commitment, uint256 countShare) external {
        Job storage j = _jobs[id];
        require(j.status == Status.Open, "the job is not open");
        require(block.timestamp <= j.commitDeadline, "the commit deadline has passed");
        uint8 i = _slotOf(j, msg.sender);
        Slot storage s = _slots[id][i];
        require(!s.committed, "already committed");
        s.committed = true;
        s.commitment = commitment;
        s.countShare = countShare;
        j.committed += 1;
        emit Committed(id, j.servers[i], countShare);
    }

    function reveal(uint256 id, uint256[] calldata masked, bytes32 salt) external {
        Job storage j = _jobs[id];
        require(j.status == Status.Open, "the job is not open");
        require(_revealPhase(j), "not every server has committed yet");
        require(block.timestamp <= j.revealDeadline, "the reveal deadline has passed");
        uint8 i = _slotOf(j, msg.sender);
        Slot storage s = _slots[id][i];
        require(s.committed && !s.revealed && !s.refused, "nothing to reveal");
        require(masked.length == j.width, "wrong output width");
        require(
            keccak256(abi.encode(id, i, masked, salt)) == s.commitment,
            "the output does not match the commitment"
        );
        for (uint256 k = 0; k < masked.length; k++) {
            require(masked[k] < P, "an output value is outside the field");
        }
        s.masked = masked;
        s.revealed = true;
        j.revealed += 1;
        emit Revealed(id, j.servers[i]);
    }

    /// @notice A server refuses a job whose filter selects fewer than k rows (or whose mask share
    ///         does not match the consumer's commitment); when all but t servers refuse, the
    ///         consumer gets the deposit back. A refusing server is never slashed, nor paid.
    function refuse(uint256 id) external {
        Job storage j = _jobs[id];
        require(j.status == Status.Open, "the job is not open");
        require(_revealPhase(j), "not every server has committed yet");
        uint8 i = _slotOf(j, msg.sender);
        Slot storage s = _slots[id][i];
        require(s.committed && !s.revealed && !s.refused, "nothing to refuse");
        s.refused = true;
        j.refused += 1;
        emit Refusal(id, j.servers[i]);
        uint256 t = _datasets[j.dataset].threshold;
        if (j.refused >= j.servers.length - t) {
            j.status = Status.Refused;
            balanceOf[j.consumer] += j.price;
            for (uint8 x = 0; x < j.servers.length; x++) {
                _servers[j.servers[x]].active -= 1;
            }
            emit JobSettled(id, Status.Refused);
        }
    }

    /// @notice Name the servers whose output is off the polynomial the others agree on. The
    ///         consumer opens every mask share (checked against its commitments and for being a
    ///         degree-t sharing); the unmasked outputs of the others (at least 2t+1) must agree,
    ///         and each named server's must not.
    function accuse(
        uint256 id,
        uint8[] calldata cheaters,
        uint256[][] calldata masks,
        bytes32[] calldata maskSalts
    ) external {
        Job storage j = _jobs[id];
        require(j.status == Status.Open, "the job is not open");
        require(msg.sender == j.consumer, "only the job's consumer may accuse");
        uint256 t = _datasets[j.dataset].threshold;
        require(cheaters.length >= 1 && cheaters.length <= t, "name 1 to t servers");
        _checkMasks(id, masks, maskSalts);
        uint256[] memory honest = _others(id, cheaters);
        require(honest.length >= 2 * t + 1, "too few other outputs to outvote");
        uint256[][] memory outs = _vectors(id, masks, true);
        require(_consistent(id, outs, honest), "the other outputs do not agree");
        uint256[] memory base = _base(id, honest);
        for (uint256 c = 0; c < cheaters.length; c++) {
            require(
                !_onCurve(id, outs, base, cheaters[c]),
                "a named server's output agrees with the others"
            );
            _slots[id][cheaters[c]].cheater = true;
            emit CheaterNamed(id, j.servers[cheaters[c]]);
        }
    }

    function _checkMasks(uint256 id, uint256[][] calldata masks, bytes32[] calldata maskSalts)
        private
        view
    {
        Job storage j = _jobs[id];
        uint256 n = j.servers.length;
        require(masks.length == n && maskSalts.length == n, "open every mask share");
        uint256[] memory all = new uint256[](n);
        for (uint8 i = 0; i < n; i++) {
            require(masks[i].length == j.width, "wrong mask width");
            require(
                keccak256(abi.encode(j.consumerKey, i, masks[i], maskSalts[i])) == j.maskCommits[i],
                "a mask share does not match its commitment"
            );
            all[i] = i;
        }
        require(
            _consistent(id, _vectors(id, masks, false), all), "the mask is not a degree-t sharing"
        );
    }

    function _others(uint256 id, uint8[] calldata cheaters)
        private
        view
        returns (uint256[] memory honest)
    {
        uint256 n = _jobs[id].servers.length;
        bool[] memory named = new bool[](n);
        for (uint256 c = 0; c < cheaters.length; c++) {
            require(cheaters[c] < n && !named[cheaters[c]], "bad cheater index");
            require(_slots[id][cheaters[c]].revealed, "a named server revealed nothing");
            named[cheaters[c]] = true;
        }
        honest = new uint256[](n - cheaters.length);
        uint256 h = 0;
        for (uint256 i = 0; i < n; i++) {
            if (named[i]) continue;
            require(_slots[id][uint8(i)].revealed, "every other server must have revealed");
            honest[h++] = i;
        }
    }

    /// @notice The consumer takes the result: settle now.
    function accept(uint256 id) external {
        Job storage j = _jobs[id];
        require(j.status == Status.Open, "the job is not open");
        require(msg.sender == j.consumer, "only the job's consumer may accept");
        require(j.revealed == j.servers.length, "not every server has revealed");
        _settle(id, j);
    }

    /// @notice Anyone, after the deadlines: a server that did not reveal is faulty (refund and
    ///         slash); when all revealed and the consumer neither accepted nor accused in time,
    ///         the servers are paid.
    function finalise(uint256 id) external {
        Job storage j = _jobs[id];
        require(j.status == Status.Open, "the job is not open");
        require(block.timestamp > j.revealDeadline, "the reveal deadline has not passed");
        if (j.revealed == j.servers.length) {
            require(block.timestamp > j.acceptDeadline, "the consumer may still accept or accuse");
        }
        _settle(id, j);
    }

    function _settle(uint256 id, Job storage j) private {
        uint256 n = j.servers.length;
        bool complete = j.revealed == n;
        uint256 good = 0;
        for (uint8 i = 0; i < n; i++) {
            Slot storage s = _slots[id][i];
            if (s.revealed && !s.cheater) good++;
        }
        uint256 fee = 0;
        if (complete) {
            uint256 producersPart = 0;
            if (j.producers > 0) {
                j.perProducer = (j.price * PRODUCER_BPS / 10000) / j.producers;
                producersPart = j.perProducer * j.producers;
            }
            fee = (j.price - producersPart) / good;
            balanceOf[j.consumer] += j.price - producersPart - fee * good;
            j.status = Status.Done;
        } else {
            balanceOf[j.consumer] += j.price;
            j.status = Status.Failed;
        }
        for (uint8 i = 0; i < n; i++) {
            Slot storage s = _slots[id][i];
            Server storage srv = _servers[j.servers[i]];
            srv.active -= 1;
            srv.jobs += 1;
            if (s.cheater) {
                _slash(id, j, i, "wrong output");
            } else if (!s.revealed && !s.refused) {
                _slash(id, j, i, "silent past the deadline");
            } else if (complete) {
                balanceOf[srv.account] += fee;
                srv.reputation += REPUTATION_HONEST;
            }
        }
        emit JobSettled(id, j.status);
    }

    function _slash(uint256 id, Job storage j, uint8 i, string memory why) private {
        Server storage srv = _servers[j.servers[i]];
        uint256 amount = srv.stake / 2;
        srv.stake -= amount;
        srv.faults += 1;
        srv.reputation -= REPUTATION_FAULT;
        balanceOf[j.consumer] += amount;
        emit Slashed(id, j.servers[i], amount, why);
    }

    // -- producers' rewards and withdrawals -------------------------------------------------------

    /// @notice Credit the sender's rewards as producer `producerId` for settled jobs on data sets
    ///         it had joined when each job opened.
    function claim(bytes32 producerId, uint256[] calldata jobIds) external {
        require(_producers[producerId].account == msg.sender, "not this producer's account");
        uint256 total = 0;
        for (uint256 k = 0; k < jobIds.length; k++) {
            Job storage j = _jobs[jobIds[k]];
            uint32 number = _producerNumber[j.dataset][producerId];
            if (
                j.status != Status.Done || number == 0 || number > j.producers
                    || _claimed[jobIds[k]][producerId]
            ) continue;
            _claimed[jobIds[k]][producerId] = true;
            total += j.perProducer;
        }
        balanceOf[msg.sender] += total;
    }

    function claimed(uint256 id, bytes32 producerId) external view returns (bool) {
        return _claimed[id][producerId];
    }

    function withdraw() external {
        uint256 amount = balanceOf[msg.sender];
        require(amount > 0, "nothing to withdraw");
        balanceOf[msg.sender] = 0;
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        require(ok, "the transfer failed");
    }

    // -- Reed-Solomon checks over GF(P) -----------------------------------------------------------

    /// @dev The mask shares (unmask = false) or the unmasked outputs, one vector per slot.
    function _vectors(uint256 id, uint256[][] calldata masks, bool unmask)
        private
        view
        returns (uint256[][] memory v)
    {
        Job storage j = _jobs[id];
        v = new uint256[][](j.servers.length);
        for (uint256 i = 0; i < v.length; i++) {
            v[i] = new uint256[](j.width);
            Slot storage s = _slots[id][uint8(i)];
            bool open = unmask && s.revealed;
            for (uint256 k = 0; k < j.width; k++) {
                uint256 m = masks[i][k] % P;
                v[i][k] = open ? addmod(s.masked[k], P - m, P) : m;
            }
        }
    }

    function _weights(uint8[] storage xs, uint256[] memory base, uint256 point)
        private
        view
        returns (uint256[] memory w)
    {
        w = new uint256[](base.length);
        for (uint256 a = 0; a < base.length; a++) {
            uint256 num = 1;
            uint256 den = 1;
            for (uint256 b = 0; b < base.length; b++) {
                if (a == b) continue;
                uint256 xb = xs[base[b]];
                num = mulmod(num, addmod(point, P - xb, P), P);
                den = mulmod(den, addmod(xs[base[a]], P - xb, P), P);
            }
            w[a] = mulmod(num, _inverse(den), P);
        }
    }

    /// @dev True when the vector of slot `target` is the one the slots in `base` predict.
    function _onCurve(uint256 id, uint256[][] memory v, uint256[] memory base, uint256 target)
        private
        view
        returns (bool)
    {
        uint256[] memory w = _weights(_jobs[id].xs, base, _jobs[id].xs[target]);
        for (uint256 k = 0; k < v[target].length; k++) {
            uint256 acc = 0;
            for (uint256 a = 0; a < base.length; a++) {
                acc = addmod(acc, mulmod(w[a], v[base[a]][k], P), P);
            }
            if (acc != v[target][k]) return false;
        }
        return true;
    }

    function _base(uint256 id, uint256[] memory members) private view returns (uint256[] memory base) {
        uint256 t = _datasets[_jobs[id].dataset].threshold;
        base = new uint256[](t + 1);
        for (uint256 a = 0; a <= t; a++) {
            base[a] = members[a];
        }
    }

    function _consistent(uint256 id, uint256[][] memory v, uint256[] memory members)
        private
        view
        returns (bool)
    {
        uint256[] memory base = _base(id, members);
        for (uint256 m = base.length; m < members.length; m++) {
            if (!_onCurve(id, v, base, members[m])) return false;
        }
        return true;
    }

    function _inverse(uint256 a) private view returns (uint256 r) {
        bytes memory input = abi.encode(uint256(32), uint256(32), uint256(32), a, P - 2, P);
        (bool ok, bytes memory out) = address(0x05).staticcall(input);
        require(ok, "modexp failed");
        r = abi.decode(out, (uint256));
    }
}
