// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TaskRegistry
/// @notice Wasm tasks requested on chain and their results, written back by executors the owner
/// authorised. A task names its module by IPFS CID, an entry function and a JSON input; the
/// result on chain is the return value (capped) and the keccak-256 of the full result document,
/// which the coordinator's API serves under the task id.
contract TaskRegistry {
    /// Largest task input, in bytes.
    uint256 public constant MAX_INPUT_BYTES = 16 * 1024;
    /// Largest result value stored on chain, in bytes.
    uint256 public constant MAX_RESULT_BYTES = 1024;

    /// Where a task is: `None` for an id never given.
    enum Status {
        None,
        Pending,
        Completed
    }

    /// What is kept of a task. The input itself is in its `TaskSubmitted` event; its hash is
    /// kept here so storage stays small.
    struct Task {
        address requester;
        Status status;
        bool ok;
        uint64 fuel;
        uint32 timeoutSec;
        bytes32 inputHash;
        bytes32 envelopeHash;
        address executor;
        string wasmCid;
        string entry;
        string result;
    }

    /// The account that authorises executors.
    address public immutable owner;
    /// The id the next task gets (ids start at 1).
    uint256 public nextTaskId = 1;
    /// Accounts allowed to submit results.
    mapping(address => bool) public executors;
    mapping(uint256 => Task) private tasks;

    event TaskSubmitted(
        uint256 indexed taskId,
        address indexed requester,
        string wasmCid,
        string entry,
        string input,
        uint64 fuel,
        uint32 timeoutSec
    );
    event TaskCompleted(
        uint256 indexed taskId, address indexed executor, bool ok, string result, bytes32 envelopeHash
    );
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

    constructor() {
        owner = msg.sender;
    }

    /// @notice Allows or forbids `executor` to submit results (owner only).
    function setExecutor(address executor, bool allowed) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        executors[executor] = allowed;
        emit ExecutorSet(executor, allowed);
    }

    /// @notice Requests a task; returns its id. `fuel` 0 means the coordinator's default, as does
    /// `timeoutSec` 0.
    function submitTask(
        string calldata wasmCid,
        string calldata entry,
        string calldata input,
        uint64 fuel,
        uint32 timeoutSec
    ) external returns (uint256 taskId) {
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
        task.timeoutSec = timeoutSec;
        task.inputHash = keccak256(bytes(input));
        task.wasmCid = wasmCid;
        task.entry = entry;
        emit TaskSubmitted(taskId, msg.sender, wasmCid, entry, input, fuel, timeoutSec);
    }

    /// @notice Records a task's result, once (authorised executors only).
    function submitResult(uint256 taskId, bool ok, string calldata result, bytes32 envelopeHash)
        external
    {
        if (!executors[msg.sender]) revert NotExecutor(msg.sender);
        Task storage task = tasks[taskId];
        if (task.status == Status.Completed) revert AlreadyCompleted(taskId);
        _complete(taskId, task, ok, result, envelopeHash);
    }

    /// @notice Records many results in one transaction (authorised executors only), by the rules
    /// of `submitResult` except one: a task already completed is skipped instead of reverting the
    /// batch, so a batch sent again after a crash writes only what is missing. Returns how many
    /// results it wrote; each one written emits its `TaskCompleted`.
    function submitResults(
        uint256[] calldata taskIds,
        bool[] calldata oks,
        string[] calldata results,
        bytes32[] calldata envelopeHashes
    ) external returns (uint256 written) {
        if (!executors[msg.sender]) revert NotExecutor(msg.sender);
        uint256 count = taskIds.length;
        if (oks.length != count || results.length != count || envelopeHashes.length != count) {
            revert LengthMismatch();
        }
        for (uint256 i = 0; i < count; i++) {
            Task storage task = tasks[taskIds[i]];
            if (task.status == Status.Completed) continue;
            _complete(taskIds[i], task, oks[i], results[i], envelopeHashes[i]);
            written++;
        }
    }

    /// Stores a result for a task that is not completed yet.
    function _complete(
        uint256 taskId,
        Task storage task,
        bool ok,
        string calldata result,
        bytes32 envelopeHash
    ) private {
        if (task.status == Status.None) revert UnknownTask(taskId);
        if (bytes(result).length > MAX_RESULT_BYTES) {
            revert ResultTooLarge(bytes(result).length, MAX_RESULT_BYTES);
        }
        task.status = Status.Completed;
        task.ok = ok;
        task.result = result;
        task.envelopeHash = envelopeHash;
        task.executor = msg.sender;
        emit TaskCompleted(taskId, msg.sender, ok, result, envelopeHash);
    }

    /// @notice A task's status (`None` for an id never given).
    function taskStatus(uint256 taskId) external view returns (Status) {
        return tasks[taskId].status;
    }

    /// @notice Everything kept of a task.
    function getTask(uint256 taskId) external view returns (Task memory) {
        return tasks[taskId];
    }
}
