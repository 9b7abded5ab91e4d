// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TaskRegistry, version 2
/// @notice Wasm tasks requested on chain and their results, written by executors the owner
/// authorised. A task names its module by IPFS CID, an entry function and a JSON input.
///
/// Version 1 tasks (`submitTask` with five arguments) are 1-of-1, carry no fee and no deadline,
/// and one executor writes the result with `submitResult(s)`, as before.
///
/// Version 2 tasks (`submitTask` with eight arguments, payable) are k-of-n: up to `replicas` (n)
/// executors commit to a result hash, then reveal it; `quorum` (k) reveals that agree complete
/// the task and share the fee held in escrow.
/// - Commitment: `keccak256(abi.encode(bytes32 resultHash, address executor, bytes32 salt))`,
///   96 bytes hashed (each a 32-byte word; the address left-padded with zeros).
/// - Commit window: from submission to the midpoint between submission and the deadline
///   (`commitEnd`). Reveals open when all n have committed or the window has closed, and end at
///   the deadline.
/// - Agreement: two reveals agree when `ok`, `result` and `resultHash` are all equal (the
///   commitment binds `resultHash`; a revealer who changes `ok` or `result` disagrees).
/// - When k agree, `TaskCompleted` is emitted once; each agreeing executor is credited
///   `fee / k`, the remainder (`fee % k` wei) goes back to the requester. Others who revealed
///   are recorded as disagreeing (their locked stake goes to the requester); those who committed
///   but had not revealed are recorded as missed (their stake is released). Reveals after that
///   revert (batches skip them).
/// - By the deadline without quorum anyone may `expireTask`: the fee goes back to the
///   requester, unrevealed commits are recorded as missed and every stake is released.
/// Payments are credits withdrawn with `claim` (pull); stake is deposited and withdrawn by the
/// executor and locked per commit.
contract TaskRegistry {
    /// Largest task input, in bytes.
    uint256 public constant MAX_INPUT_BYTES = 16 * 1024;
    /// Largest result value stored on chain, in bytes.
    uint256 public constant MAX_RESULT_BYTES = 1024;
    /// Largest number of replicas (n) of one task.
    uint256 public constant MAX_REPLICAS = 16;

    /// Where a task is: `None` for an id never given.
    enum Status {
        None,
        Pending,
        Completed,
        Expired
    }

    /// What one executor has done for one task.
    enum Part {
        None,
        Committed,
        Revealed,
        Agreed,
        Disagreed,
        Missed
    }

    /// What is kept of a task. The input itself is in its `TaskSubmitted` event; its hash is
    /// kept here so storage stays small. Times are unix seconds; `deadline` 0 means none (v1).
    struct Task {
        address requester;
        Status status;
        bool ok;
        uint64 fuel;
        uint8 replicas;
        uint8 quorum;
        uint32 timeoutSec;
        uint8 commits;
        uint40 deadline;
        uint40 commitEnd;
        uint128 fee;
        bytes32 inputHash;
        bytes32 envelopeHash;
        address executor;
        string wasmCid;
        string entry;
        string result;
    }

    /// One executor's part in one task: the commitment, replaced on reveal by the agreement key
    /// `keccak256(abi.encode(ok, keccak256(result), resultHash))`, and the stake it locked.
    struct Entry {
        bytes32 hash;
        Part part;
        uint96 stake;
    }

    /// An executor's track record over all tasks.
    struct Record {
        uint64 agreed;
        uint64 disagreed;
        uint64 missed;
    }

    /// An executor's stake: what it deposited, and how much of it commits hold.
    struct Stake {
        uint128 deposited;
        uint128 locked;
    }

    /// One reveal of a batch.
    struct Reveal {
        uint256 taskId;
        bool ok;
        string result;
        bytes32 resultHash;
        bytes32 salt;
    }

    /// Where one task stands for one executor (`progressOf`): what an operator reads before each
    /// step of a k-of-n task, many tasks in one call.
    struct Progress {
        Status status;
        uint8 replicas;
        uint8 commits;
        uint40 commitEnd;
        uint40 deadline;
        uint64 fuel;
        uint32 timeoutSec;
        Part part;
        string wasmCid;
        string entry;
    }

    /// The account that authorises executors and sets the stake.
    address public immutable owner;
    /// The id the next task gets (ids start at 1).
    uint256 public nextTaskId = 1;
    /// The stake, in wei, an executor locks per commit (0: no stake).
    uint96 public stakeRequired;
    /// Accounts allowed to submit results.
    mapping(address => bool) public executors;
    /// Each executor's agreed, disagreed and missed counts.
    mapping(address => Record) public records;
    /// Each executor's stake.
    mapping(address => Stake) public stakes;
    /// Wei each account may `claim` (fees, refunds, slashed stake).
    mapping(address => uint256) public credits;
    mapping(uint256 => Task) private tasks;
    mapping(uint256 => address[MAX_REPLICAS]) private committers;
    mapping(uint256 => mapping(address => Entry)) private entries;

    /// A task was requested (both versions).
    event TaskSubmitted(
        uint256 indexed taskId,
        address indexed requester,
        string wasmCid,
        string entry,
        string input,
        uint64 fuel,
        uint32 timeoutSec
    );
    /// A v2 task's terms (emitted after its `TaskSubmitted`).
    event TaskTerms(
        uint256 indexed taskId, uint8 replicas, uint8 quorum, uint40 deadline, uint40 commitEnd, uint128 fee
    );
    /// Emitted once per task: `executor` wrote the result (v1) or made the quorum (v2);
    /// `agreeing` lists every executor whose result agreed.
    event TaskCompleted(
        uint256 indexed taskId,
        address indexed executor,
        bool ok,
        string result,
        bytes32 envelopeHash,
        address[] agreeing
    );
    /// A task without quorum by its deadline ended; `refund` wei credited to the requester.
    event TaskExpired(uint256 indexed taskId, address indexed requester, uint256 refund);
    /// An executor committed to a result of a task.
    event ResultCommitted(uint256 indexed taskId, address indexed executor, bytes32 commitment);
    /// An executor revealed the result it committed to.
    event ResultRevealed(
        uint256 indexed taskId, address indexed executor, bool ok, bytes32 resultHash
    );
    /// An executor's outcome in a task: `Agreed`, `Disagreed` or `Missed`.
    event ExecutorRecorded(uint256 indexed taskId, address indexed executor, Part part);
    /// A disagreeing executor's locked stake went to the task's requester.
    event StakeSlashed(
        uint256 indexed taskId, address indexed executor, address indexed requester, uint256 amount
    );
    /// `amount` wei became claimable by `account` (a fee share, a remainder, a refund, a stake).
    event Credited(uint256 indexed taskId, address indexed account, uint256 amount);
    /// An account withdrew its credit.
    event Claimed(address indexed account, uint256 amount);
    /// The owner set the stake per commit.
    event StakeRequiredSet(uint96 amount);
    /// An executor added stake.
    event StakeDeposited(address indexed executor, uint256 amount);
    /// An executor withdrew free stake.
    event StakeWithdrawn(address indexed executor, uint256 amount);
    /// The owner allowed or forbade an executor.
    event ExecutorSet(address indexed executor, bool allowed);

    error NotOwner(address caller);
    error NotExecutor(address caller);
    error EmptyCid();
    error EmptyEntry();
    error InputTooLarge(uint256 size, uint256 max);
    error ResultTooLarge(uint256 size, uint256 max);
    error UnknownTask(uint256 taskId);
    error AlreadyCompleted(uint256 taskId);
    error LengthMismatch();
    error BadReplication(uint256 replicas, uint256 quorum);
    error BadDeadline(uint256 deadline, uint256 now);
    error FeeTooLarge(uint256 fee);
    error NeedsCommitReveal(uint256 taskId);
    error CommitsStarted(uint256 taskId);
    /// A v1 task (no deadline) takes no commits: write it with `submitResult(s)`.
    error DirectOnly(uint256 taskId);
    error TaskExpiredAlready(uint256 taskId);
    error DeadlinePassed(uint256 taskId, uint256 deadline);
    error CommitWindowClosed(uint256 taskId, uint256 commitEnd);
    error CommitsFull(uint256 taskId, uint256 replicas);
    error AlreadyCommitted(uint256 taskId, address executor);
    error StakeTooLow(uint256 free, uint256 required);
    error NotCommitted(uint256 taskId, address executor);
    error AlreadyRevealed(uint256 taskId, address executor);
    error RevealTooEarly(uint256 taskId, uint256 commitEnd);
    error CommitmentMismatch(uint256 taskId, address executor);
    error NotExpirable(uint256 taskId);
    error DeadlineNotReached(uint256 taskId, uint256 deadline);
    error NothingToClaim(address account);
    error StakeLocked(uint256 free, uint256 asked);
    error TransferFailed(address to, uint256 amount);

    constructor() {
        owner = msg.sender;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyExecutor() {
        if (!executors[msg.sender]) revert NotExecutor(msg.sender);
        _;
    }

    /// @notice Allows or forbids `executor` to submit results (owner only).
    function setExecutor(address executor, bool allowed) external onlyOwner {
        executors[executor] = allowed;
        emit ExecutorSet(executor, allowed);
    }

    /// @notice Sets the stake an executor locks per commit, in wei (owner only; 0 for none).
    /// Commits made before keep the stake they locked.
    function setStakeRequired(uint96 amount) external onlyOwner {
        stakeRequired = amount;
        emit StakeRequiredSet(amount);
    }

    /// @notice Requests a 1-of-1 task with no fee and no deadline (v1); returns its id.
    /// `fuel` 0 means the coordinator's default, as does `timeoutSec` 0.
    function submitTask(
        string calldata wasmCid,
        string calldata entry,
        string calldata input,
        uint64 fuel,
        uint32 timeoutSec
    ) external returns (uint256 taskId) {
        taskId = _submit(wasmCid, entry, input, fuel, timeoutSec);
    }

    /// @notice Requests a k-of-n task whose fee (`msg.value`) is held in escrow; returns its id.
    /// `1 <= quorum <= replicas <= 16`; `deadline` (unix seconds) must be in the future.
    function submitTask(
        string calldata wasmCid,
        string calldata entry,
        string calldata input,
        uint64 fuel,
        uint32 timeoutSec,
        uint8 replicas,
        uint8 quorum,
        uint40 deadline
    ) external payable returns (uint256 taskId) {
        if (quorum == 0 || quorum > replicas || replicas > MAX_REPLICAS) {
            revert BadReplication(replicas, quorum);
        }
        if (deadline <= block.timestamp) revert BadDeadline(deadline, block.timestamp);
        if (msg.value > type(uint128).max) revert FeeTooLarge(msg.value);
        taskId = _submit(wasmCid, entry, input, fuel, timeoutSec);
        Task storage task = tasks[taskId];
        uint40 commitEnd = uint40(block.timestamp + (deadline - block.timestamp) / 2);
        task.replicas = replicas;
        task.quorum = quorum;
        task.deadline = deadline;
        task.commitEnd = commitEnd;
        task.fee = uint128(msg.value);
        emit TaskTerms(taskId, replicas, quorum, deadline, commitEnd, uint128(msg.value));
    }

    /// Checks and stores a task as 1-of-1 with no fee and no deadline.
    function _submit(
        string calldata wasmCid,
        string calldata entry,
        string calldata input,
        uint64 fuel,
        uint32 timeoutSec
    ) private returns (uint256 taskId) {
        if (bytes(wasmCid).length == 0) revert EmptyCid();
        if (bytes(entry).length == 0) revert EmptyEntry();
        if (bytes(input).length > MAX_INPUT_BYTES) {
            revert InputTooLarge(bytes(input).length, MAX_INPUT_BYTES);
        }
        taskId = nextTaskId++;
        Task storage task = tasks[taskId];
        task.requester = msg.sender;
        task.status = Status.Pending;
        task.fuel = fuel;
        task.replicas = 1;
        task.quorum = 1;
        task.timeoutSec = timeoutSec;
        task.inputHash = keccak256(bytes(input));
        task.wasmCid = wasmCid;
        task.entry = entry;
        emit TaskSubmitted(taskId, msg.sender, wasmCid, entry, input, fuel, timeoutSec);
    }

    /// @notice Records a 1-of-1 task's result directly, once (authorised executors only); the
    /// fee, if any, is credited to the executor.
    function submitResult(uint256 taskId, bool ok, string calldata result, bytes32 envelopeHash)
        external
        onlyExecutor
    {
        Task storage task = tasks[taskId];
        if (task.status == Status.Completed) revert AlreadyCompleted(taskId);
        _write(taskId, task, ok, result, envelopeHash);
    }

    /// @notice Records many 1-of-1 results in one transaction (authorised executors only), by
    /// the rules of `submitResult` except one: a task no longer pending (completed or expired)
    /// is skipped instead of reverting the batch, so a batch sent again after a crash writes only
    /// what is missing. Returns how many results it wrote.
    function submitResults(
        uint256[] calldata taskIds,
        bool[] calldata oks,
        string[] calldata results,
        bytes32[] calldata envelopeHashes
    ) external onlyExecutor returns (uint256 written) {
        uint256 count = taskIds.length;
        if (oks.length != count || results.length != count || envelopeHashes.length != count) {
            revert LengthMismatch();
        }
        for (uint256 i = 0; i < count; i++) {
            Task storage task = tasks[taskIds[i]];
            if (task.status == Status.Completed || task.status == Status.Expired) continue;
            _write(taskIds[i], task, oks[i], results[i], envelopeHashes[i]);
            written++;
        }
    }

    /// Writes a direct result to a task that is not completed.
    function _write(
        uint256 taskId,
        Task storage task,
        bool ok,
        string calldata result,
        bytes32 envelopeHash
    ) private {
        if (task.status == Status.None) revert UnknownTask(taskId);
        if (task.status == Status.Expired) revert TaskExpiredAlready(taskId);
        if (task.replicas != 1) revert NeedsCommitReveal(taskId);
        if (task.commits != 0) revert CommitsStarted(taskId);
        if (task.deadline != 0 && block.timestamp >= task.deadline) {
            revert DeadlinePassed(taskId, task.deadline);
        }
        address[] memory agreeing = new address[](1);
        agreeing[0] = msg.sender;
        _complete(taskId, task, ok, result, envelopeHash, agreeing);
    }

    /// @notice Commits to a result of task `taskId` (authorised executors only):
    /// `commitment = keccak256(abi.encode(resultHash, msg.sender, salt))`. The first n commits
    /// are taken, one per executor, before the commit window closes; the stake is locked.
    function commitResult(uint256 taskId, bytes32 commitment) external onlyExecutor {
        _commit(taskId, commitment, false);
    }

    /// @notice Many commits in one transaction, by the rules of `commitResult` except that a
    /// task that no longer takes commits (full, window closed, completed, expired) or that this
    /// executor already committed to with the same commitment is skipped. Returns how many it
    /// wrote.
    function commitResults(uint256[] calldata taskIds, bytes32[] calldata commitments)
        external
        onlyExecutor
        returns (uint256 written)
    {
        if (commitments.length != taskIds.length) revert LengthMismatch();
        for (uint256 i = 0; i < taskIds.length; i++) {
            if (_commit(taskIds[i], commitments[i], true)) written++;
        }
    }

    /// Takes one commit; in a batch (`skip`) returns false instead of reverting where the
    /// batch rules say so.
    function _commit(uint256 taskId, bytes32 commitment, bool skip) private returns (bool) {
        Task storage task = tasks[taskId];
        Status status = task.status;
        if (status == Status.None) revert UnknownTask(taskId);
        Entry storage entry = entries[taskId][msg.sender];
        if (entry.part != Part.None) {
            // A resent batch: the same commitment, or one already revealed.
            if (skip && (entry.part != Part.Committed || entry.hash == commitment)) return false;
            revert AlreadyCommitted(taskId, msg.sender);
        }
        if (status != Status.Pending || task.deadline == 0) {
            if (skip) return false;
            if (status == Status.Completed) revert AlreadyCompleted(taskId);
            if (status == Status.Expired) revert TaskExpiredAlready(taskId);
            revert DirectOnly(taskId);
        }
        if (block.timestamp >= task.commitEnd) {
            if (skip) return false;
            revert CommitWindowClosed(taskId, task.commitEnd);
        }
        uint8 commits = task.commits;
        if (commits >= task.replicas) {
            if (skip) return false;
            revert CommitsFull(taskId, task.replicas);
        }
        uint96 stake = stakeRequired;
        if (stake != 0) {
            Stake storage s = stakes[msg.sender];
            uint256 free = s.deposited - s.locked;
            if (free < stake) revert StakeTooLow(free, stake);
            s.locked += stake;
        }
        task.commits = commits + 1;
        committers[taskId][commits] = msg.sender;
        entry.hash = commitment;
        entry.part = Part.Committed;
        entry.stake = stake;
        emit ResultCommitted(taskId, msg.sender, commitment);
        return true;
    }

    /// @notice Reveals the result committed to for task `taskId`, once all n committed or the
    /// commit window closed, before the deadline. The k-th agreeing reveal completes the task.
    function revealResult(
        uint256 taskId,
        bool ok,
        string calldata result,
        bytes32 resultHash,
        bytes32 salt
    ) external onlyExecutor {
        bytes32 key = _reveal(taskId, ok, result, resultHash, salt, false);
        _completeAtQuorum(taskId, ok, result, resultHash, key);
    }

    /// @notice Many reveals in one transaction, by the rules of `revealResult` except that a
    /// task no longer pending, past its deadline, or already revealed by this executor is
    /// skipped. Returns how many it wrote.
    function revealResults(Reveal[] calldata reveals)
        external
        onlyExecutor
        returns (uint256 written)
    {
        for (uint256 i = 0; i < reveals.length; i++) {
            Reveal calldata r = reveals[i];
            bytes32 key = _reveal(r.taskId, r.ok, r.result, r.resultHash, r.salt, true);
            if (key == bytes32(0)) continue;
            written++;
            _completeAtQuorum(r.taskId, r.ok, r.result, r.resultHash, key);
        }
    }

    /// Takes one reveal and returns its agreement key; in a batch (`skip`) returns 0 instead of
    /// reverting where the batch rules say so.
    function _reveal(
        uint256 taskId,
        bool ok,
        string calldata result,
        bytes32 resultHash,
        bytes32 salt,
        bool skip
    ) private returns (bytes32) {
        if (!_mayReveal(taskId, tasks[taskId], skip)) return bytes32(0);
        return _takeReveal(taskId, ok, result, resultHash, salt);
    }

    /// Completes the task when `quorum` reveals have agreement key `key`.
    function _completeAtQuorum(
        uint256 taskId,
        bool ok,
        string calldata result,
        bytes32 resultHash,
        bytes32 key
    ) private {
        Task storage task = tasks[taskId];
        uint256 agree = _agreeing(taskId, task.commits, key);
        if (agree < task.quorum) return;
        address[] memory agreeing = _settle(taskId, task, key, agree);
        _complete(taskId, task, ok, result, resultHash, agreeing);
    }

    /// Whether the caller may reveal for the task now; false where a batch skips, reverts
    /// otherwise.
    function _mayReveal(uint256 taskId, Task storage task, bool skip) private view returns (bool) {
        Status status = task.status;
        if (status != Status.Pending) {
            if (status == Status.None) revert UnknownTask(taskId);
            if (skip) return false;
            if (status == Status.Completed) revert AlreadyCompleted(taskId);
            revert TaskExpiredAlready(taskId);
        }
        Part part = entries[taskId][msg.sender].part;
        if (part == Part.None) revert NotCommitted(taskId, msg.sender);
        if (part != Part.Committed) {
            if (skip) return false;
            revert AlreadyRevealed(taskId, msg.sender);
        }
        if (block.timestamp >= task.deadline) {
            if (skip) return false;
            revert DeadlinePassed(taskId, task.deadline);
        }
        if (task.commits < task.replicas && block.timestamp < task.commitEnd) {
            revert RevealTooEarly(taskId, task.commitEnd);
        }
        return true;
    }

    /// Checks a reveal against the caller's commitment and stores its agreement key.
    function _takeReveal(
        uint256 taskId,
        bool ok,
        string calldata result,
        bytes32 resultHash,
        bytes32 salt
    ) private returns (bytes32 key) {
        Entry storage entry = entries[taskId][msg.sender];
        if (keccak256(abi.encode(resultHash, msg.sender, salt)) != entry.hash) {
            revert CommitmentMismatch(taskId, msg.sender);
        }
        if (bytes(result).length > MAX_RESULT_BYTES) {
            revert ResultTooLarge(bytes(result).length, MAX_RESULT_BYTES);
        }
        key = keccak256(abi.encode(ok, keccak256(bytes(result)), resultHash));
        entry.hash = key;
        entry.part = Part.Revealed;
        emit ResultRevealed(taskId, msg.sender, ok, resultHash);
    }

    /// How many of the task's reveals have agreement key `key`.
    function _agreeing(uint256 taskId, uint256 commits, bytes32 key)
        private
        view
        returns (uint256 agree)
    {
        address[MAX_REPLICAS] storage list = committers[taskId];
        for (uint256 i = 0; i < commits; i++) {
            Entry storage other = entries[taskId][list[i]];
            if (other.part == Part.Revealed && other.hash == key) agree++;
        }
    }

    /// Settles a task at quorum: records every committer, pays the `agree` agreeing ones (the
    /// remainder to the requester) and slashes the disagreeing ones; returns the agreeing.
    function _settle(uint256 taskId, Task storage task, bytes32 key, uint256 agree)
        private
        returns (address[] memory agreeing)
    {
        address requester = task.requester;
        uint256 commits = task.commits;
        uint256 share = task.fee / agree;
        agreeing = new address[](agree);
        uint256 n = 0;
        for (uint256 i = 0; i < commits; i++) {
            address executor = committers[taskId][i];
            Entry storage e = entries[taskId][executor];
            Part part = e.part == Part.Committed
                ? Part.Missed
                : (e.hash == key ? Part.Agreed : Part.Disagreed);
            e.part = part;
            _release(taskId, executor, e.stake, part == Part.Disagreed ? requester : address(0));
            Record storage r = records[executor];
            if (part == Part.Agreed) {
                r.agreed++;
                agreeing[n++] = executor;
                if (share != 0) _credit(taskId, executor, share);
            } else if (part == Part.Disagreed) {
                r.disagreed++;
            } else {
                r.missed++;
            }
            emit ExecutorRecorded(taskId, executor, part);
        }
        uint256 rest = task.fee - share * agree;
        if (rest != 0) _credit(taskId, requester, rest);
    }

    /// Marks a task completed with its result and emits `TaskCompleted`.
    function _complete(
        uint256 taskId,
        Task storage task,
        bool ok,
        string calldata result,
        bytes32 hash,
        address[] memory agreeing
    ) private {
        if (bytes(result).length > MAX_RESULT_BYTES) {
            revert ResultTooLarge(bytes(result).length, MAX_RESULT_BYTES);
        }
        uint128 fee = task.fee;
        task.status = Status.Completed;
        task.ok = ok;
        task.result = result;
        task.envelopeHash = hash;
        task.executor = msg.sender;
        if (task.replicas == 1 && task.commits == 0 && fee != 0) {
            _credit(taskId, msg.sender, fee);
        }
        emit TaskCompleted(taskId, msg.sender, ok, result, hash, agreeing);
    }

    /// @notice Ends a task that has no quorum by its deadline (anyone may call): the fee goes
    /// back to the requester, unrevealed commits are recorded as missed, stakes are released.
    function expireTask(uint256 taskId) external {
        Task storage task = tasks[taskId];
        if (task.status == Status.None) revert UnknownTask(taskId);
        if (task.status != Status.Pending || task.deadline == 0) revert NotExpirable(taskId);
        if (block.timestamp < task.deadline) revert DeadlineNotReached(taskId, task.deadline);
        task.status = Status.Expired;
        address[MAX_REPLICAS] storage list = committers[taskId];
        uint256 commits = task.commits;
        for (uint256 i = 0; i < commits; i++) {
            address executor = list[i];
            Entry storage e = entries[taskId][executor];
            _release(taskId, executor, e.stake, address(0));
            if (e.part == Part.Committed) {
                e.part = Part.Missed;
                records[executor].missed++;
                emit ExecutorRecorded(taskId, executor, Part.Missed);
            }
        }
        uint256 refund = task.fee;
        if (refund != 0) _credit(taskId, task.requester, refund);
        emit TaskExpired(taskId, task.requester, refund);
    }

    /// Unlocks `amount` of `executor`'s stake; with a `to`, moves it to `to`'s credit.
    function _release(uint256 taskId, address executor, uint96 amount, address to) private {
        if (amount == 0) return;
        Stake storage s = stakes[executor];
        s.locked -= amount;
        if (to != address(0)) {
            s.deposited -= amount;
            _credit(taskId, to, amount);
            emit StakeSlashed(taskId, executor, to, amount);
        }
    }

    /// Makes `amount` wei claimable by `account`.
    function _credit(uint256 taskId, address account, uint256 amount) private {
        credits[account] += amount;
        emit Credited(taskId, account, amount);
    }

    /// @notice Pays the caller everything credited to it (fees, refunds, slashed stake).
    function claim() external {
        uint256 amount = credits[msg.sender];
        if (amount == 0) revert NothingToClaim(msg.sender);
        credits[msg.sender] = 0;
        emit Claimed(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @notice Adds `msg.value` to the caller's stake.
    function depositStake() external payable {
        stakes[msg.sender].deposited += uint128(msg.value);
        emit StakeDeposited(msg.sender, msg.value);
    }

    /// @notice Withdraws `amount` wei of the caller's stake that no commit holds.
    function withdrawStake(uint256 amount) external {
        Stake storage s = stakes[msg.sender];
        uint256 free = s.deposited - s.locked;
        if (amount > free) revert StakeLocked(free, amount);
        s.deposited -= uint128(amount);
        emit StakeWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// Sends wei after every state change (checks-effects-interactions).
    function _send(address to, uint256 amount) private {
        (bool sent,) = to.call{value: amount}("");
        if (!sent) revert TransferFailed(to, amount);
    }

    /// @notice A task's status (`None` for an id never given).
    function taskStatus(uint256 taskId) external view returns (Status) {
        return tasks[taskId].status;
    }

    /// @notice Whether task `taskId` still takes commits: pending, v2, not full, window open.
    function acceptsCommits(uint256 taskId) external view returns (bool) {
        Task storage task = tasks[taskId];
        return task.status == Status.Pending && task.deadline != 0
            && task.commits < task.replicas && block.timestamp < task.commitEnd;
    }

    /// @notice What `executor` has done for task `taskId`: its part, and its commitment (before
    /// the reveal) or agreement key (after).
    function entryOf(uint256 taskId, address executor)
        external
        view
        returns (Part part, bytes32 hash, uint96 stake)
    {
        Entry storage e = entries[taskId][executor];
        return (e.part, e.hash, e.stake);
    }

    /// @notice The executors that committed to task `taskId`, in commit order.
    function committersOf(uint256 taskId) external view returns (address[] memory list) {
        uint256 commits = tasks[taskId].commits;
        list = new address[](commits);
        for (uint256 i = 0; i < commits; i++) {
            list[i] = committers[taskId][i];
        }
    }

    /// @notice Where each of `taskIds` stands, and `executor`'s part in it, with the block's time
    /// (the clock of the windows and deadlines): one call for every task an operator follows.
    function progressOf(uint256[] calldata taskIds, address executor)
        external
        view
        returns (Progress[] memory list, uint256 time)
    {
        list = new Progress[](taskIds.length);
        for (uint256 i = 0; i < taskIds.length; i++) {
            Task storage task = tasks[taskIds[i]];
            list[i] = Progress({
                status: task.status,
                replicas: task.replicas,
                commits: task.commits,
                commitEnd: task.commitEnd,
                deadline: task.deadline,
                fuel: task.fuel,
                timeoutSec: task.timeoutSec,
                part: entries[taskIds[i]][executor].part,
                wasmCid: task.wasmCid,
                entry: task.entry
            });
        }
        time = block.timestamp;
    }

    /// @notice Everything kept of a task.
    function getTask(uint256 taskId) external view returns (Task memory) {
        return tasks[taskId];
    }
}
