// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

/// @title RillRegistry
/// @notice The one canonical registry of a Rill network: its nodes, its streams and the head of
/// every stream's miniblock chain, plus the network's configuration. Owner-administered.
/// Nodes follow it through its events rather than by polling every stream.
contract RillRegistry {
    enum NodeStatus {
        NotInitialized,
        Operational,
        Departing,
        Failed
    }

    struct Node {
        address nodeAddress;
        string multiaddr;
        NodeStatus status;
    }

    struct Stream {
        bytes32 lastMiniblockHash;
        uint64 lastMiniblockNum;
        uint64 flags;
        address[] nodes;
        bytes32 genesisHash;
    }

    /// A stream as the registry stores it: three slots, where `Stream` would take four plus one
    /// per node. A stream's slots are what an allocation pays for on a real chain, and what
    /// anvil rehashes on every block (it recomputes the storage root from all of the storage),
    /// so they set the cost of a block on a devnet with many streams. `packed` holds, from the
    /// low bits: the head's number (64 bits), the flags (8), the number of nodes (8), then the
    /// nodes, each as its number (its position in `nodeList` plus one, 16 bits).
    struct StreamRecord {
        bytes32 lastMiniblockHash;
        bytes32 genesisHash;
        uint256 packed;
    }

    struct StreamWithId {
        bytes32 id;
        Stream stream;
    }

    /// A stream to allocate. Its genesis miniblock travels in the StreamAllocated log only (the
    /// record keeps its hash): nodes take it from the log, or from a peer, checked against it.
    struct NewStream {
        bytes32 streamId;
        address[] nodes;
        bytes32 genesisHash;
        bytes genesisMiniblock;
    }

    struct SetMiniblock {
        bytes32 streamId;
        bytes32 prevMiniblockHash;
        bytes32 lastMiniblockHash;
        uint64 lastMiniblockNum;
        bool isSealed;
    }

    /// Stream flag: no further miniblocks are accepted.
    uint64 public constant FLAG_SEALED = 1;
    /// The most nodes a stream may have: what fits in a record's packed slot.
    uint256 public constant MAX_STREAM_NODES = 11;
    /// The most nodes the registry may hold: a node's number is 16 bits.
    uint256 public constant MAX_NODES = type(uint16).max;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event NodeAdded(address indexed nodeAddress, string multiaddr, NodeStatus status);
    event NodeStatusUpdated(address indexed nodeAddress, NodeStatus status);
    event NodeMultiaddrUpdated(address indexed nodeAddress, string multiaddr);
    event ConfigUpdated(string key, uint256 value);
    event StreamAllocated(bytes32 indexed streamId, address[] nodes, bytes32 genesisHash, bytes genesis);
    event StreamAllocationFailed(bytes32 indexed streamId, string reason);
    event StreamLastMiniblockUpdated(
        bytes32 indexed streamId, bytes32 lastMiniblockHash, uint64 lastMiniblockNum, bool isSealed
    );
    event StreamLastMiniblockUpdateFailed(
        bytes32 indexed streamId, bytes32 lastMiniblockHash, uint64 lastMiniblockNum, string reason
    );

    error NotOwner(address caller);
    error NotOperationalNode(address caller);
    error NodeAlreadyRegistered(address node);
    error UnknownNode(address node);
    error StreamAlreadyExists(bytes32 streamId);
    error UnknownStream(bytes32 streamId);
    error NoNodes();
    error DuplicateNode(address node);
    error TooManyNodes(uint256 count, uint256 max);

    address public owner;

    mapping(address => Node) private nodes;
    address[] private nodeList;
    /// A registered node's position in `nodeList` plus one; 0 for an unknown address.
    mapping(address => uint256) private nodeNumber;

    mapping(bytes32 => StreamRecord) private streams;
    bytes32[] private streamIds;

    mapping(bytes32 => uint256) private configValues;
    mapping(bytes32 => bool) private configKnown;
    string[] private configKeys;

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // ----- nodes -----

    function registerNode(address nodeAddress, string calldata multiaddr, NodeStatus status) external onlyOwner {
        if (nodes[nodeAddress].nodeAddress != address(0)) revert NodeAlreadyRegistered(nodeAddress);
        if (nodeList.length == MAX_NODES) revert TooManyNodes(nodeList.length + 1, MAX_NODES);
        nodes[nodeAddress] = Node(nodeAddress, multiaddr, status);
        nodeList.push(nodeAddress);
        nodeNumber[nodeAddress] = nodeList.length;
        emit NodeAdded(nodeAddress, multiaddr, status);
    }

    function updateNodeStatus(address nodeAddress, NodeStatus status) external onlyOwner {
        if (nodes[nodeAddress].nodeAddress == address(0)) revert UnknownNode(nodeAddress);
        nodes[nodeAddress].status = status;
        emit NodeStatusUpdated(nodeAddress, status);
    }

    /// The owner or the node itself may move a node's listen address.
    function updateNodeMultiaddr(address nodeAddress, string calldata multiaddr) external {
        if (msg.sender != owner && msg.sender != nodeAddress) revert NotOwner(msg.sender);
        if (nodes[nodeAddress].nodeAddress == address(0)) revert UnknownNode(nodeAddress);
        nodes[nodeAddress].multiaddr = multiaddr;
        emit NodeMultiaddrUpdated(nodeAddress, multiaddr);
    }

    function getNode(address nodeAddress) external view returns (Node memory) {
        if (nodes[nodeAddress].nodeAddress == address(0)) revert UnknownNode(nodeAddress);
        return nodes[nodeAddress];
    }

    function getAllNodes() external view returns (Node[] memory all) {
        all = new Node[](nodeList.length);
        for (uint256 i = 0; i < nodeList.length; i++) {
            all[i] = nodes[nodeList[i]];
        }
    }

    function isNode(address nodeAddress) public view returns (bool) {
        return nodes[nodeAddress].nodeAddress != address(0);
    }

    // ----- config -----

    function setConfig(string calldata key, uint256 value) external onlyOwner {
        bytes32 k = keccak256(bytes(key));
        if (!configKnown[k]) {
            configKnown[k] = true;
            configKeys.push(key);
        }
        configValues[k] = value;
        emit ConfigUpdated(key, value);
    }

    function getConfig(string calldata key) external view returns (uint256) {
        return configValues[keccak256(bytes(key))];
    }

    function getAllConfig() external view returns (string[] memory keys, uint256[] memory values) {
        keys = configKeys;
        values = new uint256[](keys.length);
        for (uint256 i = 0; i < keys.length; i++) {
            values[i] = configValues[keccak256(bytes(keys[i]))];
        }
    }

    // ----- streams -----

    modifier onlyOperational() {
        if (nodes[msg.sender].status != NodeStatus.Operational) revert NotOperationalNode(msg.sender);
        _;
    }

    /// Called by an operational node that placed a new stream on `streamNodes`; the genesis
    /// miniblock (number 0) becomes the stream's head. Reverts with the reason if it cannot.
    function allocateStream(
        bytes32 streamId,
        address[] calldata streamNodes,
        bytes32 genesisHash,
        bytes calldata genesisMiniblock
    ) external onlyOperational {
        if (streams[streamId].packed != 0) revert StreamAlreadyExists(streamId);
        if (streamNodes.length == 0) revert NoNodes();
        if (streamNodes.length > MAX_STREAM_NODES) revert TooManyNodes(streamNodes.length, MAX_STREAM_NODES);
        for (uint256 i = 0; i < streamNodes.length; i++) {
            if (!isNode(streamNodes[i])) revert UnknownNode(streamNodes[i]);
            for (uint256 j = 0; j < i; j++) {
                if (streamNodes[j] == streamNodes[i]) revert DuplicateNode(streamNodes[i]);
            }
        }
        store(streamId, streamNodes, genesisHash, genesisMiniblock);
    }

    /// Allocates many streams. Each entry applies on its own: a failing entry emits
    /// StreamAllocationFailed with its reason and the others still apply.
    function allocateStreamBatch(NewStream[] calldata entries) external onlyOperational {
        allocateEach(entries);
    }

    /// A node's whole batch in one transaction: new streams, then new miniblock heads, each
    /// entry applying on its own. Only an operational node may allocate; a departing one may
    /// still register heads of the streams it holds.
    function submitBatch(NewStream[] calldata allocations, SetMiniblock[] calldata registrations) external {
        if (allocations.length != 0 && nodes[msg.sender].status != NodeStatus.Operational) {
            revert NotOperationalNode(msg.sender);
        }
        allocateEach(allocations);
        registerEach(registrations);
    }

    function allocateEach(NewStream[] calldata entries) private {
        for (uint256 i = 0; i < entries.length; i++) {
            NewStream calldata e = entries[i];
            string memory reason = checkNewStream(e);
            if (bytes(reason).length != 0) {
                emit StreamAllocationFailed(e.streamId, reason);
                continue;
            }
            store(e.streamId, e.nodes, e.genesisHash, e.genesisMiniblock);
        }
    }

    function checkNewStream(NewStream calldata e) private view returns (string memory) {
        if (streams[e.streamId].packed != 0) return "ALREADY_EXISTS";
        if (e.nodes.length == 0) return "NO_NODES";
        if (e.nodes.length > MAX_STREAM_NODES) return "TOO_MANY_NODES";
        for (uint256 i = 0; i < e.nodes.length; i++) {
            if (!isNode(e.nodes[i])) return "UNKNOWN_NODE";
            for (uint256 j = 0; j < i; j++) {
                if (e.nodes[j] == e.nodes[i]) return "DUPLICATE_NODE";
            }
        }
        return "";
    }

    function store(
        bytes32 streamId,
        address[] calldata streamNodes,
        bytes32 genesisHash,
        bytes calldata genesisMiniblock
    ) private {
        // The head's number (0) and the flags start at zero; the count and the nodes follow.
        uint256 packed = streamNodes.length << 72;
        for (uint256 i = 0; i < streamNodes.length; i++) {
            packed |= nodeNumber[streamNodes[i]] << (80 + 16 * i);
        }
        streams[streamId] = StreamRecord(genesisHash, genesisHash, packed);
        streamIds.push(streamId);
        emit StreamAllocated(streamId, streamNodes, genesisHash, genesisMiniblock);
    }

    function getStream(bytes32 streamId) public view returns (Stream memory) {
        if (streams[streamId].packed == 0) revert UnknownStream(streamId);
        return unpack(streams[streamId]);
    }

    function unpack(StreamRecord storage r) private view returns (Stream memory s) {
        uint256 packed = r.packed;
        s.lastMiniblockHash = r.lastMiniblockHash;
        s.lastMiniblockNum = uint64(packed);
        s.flags = uint64(uint8(packed >> 64));
        s.nodes = new address[](uint8(packed >> 72));
        for (uint256 i = 0; i < s.nodes.length; i++) {
            s.nodes[i] = nodeList[uint16(packed >> (80 + 16 * i)) - 1];
        }
        s.genesisHash = r.genesisHash;
    }

    function getStreamCount() external view returns (uint256) {
        return streamIds.length;
    }

    /// Streams `start` (inclusive) to `stop` (exclusive) in allocation order; `lastPage` says
    /// whether `stop` reached the end.
    function getPaginatedStreams(uint256 start, uint256 stop)
        external
        view
        returns (StreamWithId[] memory page, bool lastPage)
    {
        if (stop > streamIds.length) stop = streamIds.length;
        if (start > stop) start = stop;
        page = new StreamWithId[](stop - start);
        for (uint256 i = start; i < stop; i++) {
            bytes32 id = streamIds[i];
            page[i - start] = StreamWithId(id, unpack(streams[id]));
        }
        lastPage = stop == streamIds.length;
    }

    /// Registers new miniblock heads. Each entry applies on its own: a failing entry emits
    /// StreamLastMiniblockUpdateFailed with its reason and the others still apply.
    function setStreamLastMiniblockBatch(SetMiniblock[] calldata entries) external {
        registerEach(entries);
    }

    function registerEach(SetMiniblock[] calldata entries) private {
        for (uint256 i = 0; i < entries.length; i++) {
            SetMiniblock calldata e = entries[i];
            string memory reason = checkEntry(e);
            if (bytes(reason).length != 0) {
                emit StreamLastMiniblockUpdateFailed(e.streamId, e.lastMiniblockHash, e.lastMiniblockNum, reason);
                continue;
            }
            StreamRecord storage s = streams[e.streamId];
            uint256 packed = (s.packed & ~uint256(type(uint64).max)) | e.lastMiniblockNum;
            if (e.isSealed) packed |= uint256(FLAG_SEALED) << 64;
            s.lastMiniblockHash = e.lastMiniblockHash;
            s.packed = packed;
            emit StreamLastMiniblockUpdated(e.streamId, e.lastMiniblockHash, e.lastMiniblockNum, e.isSealed);
        }
    }

    function checkEntry(SetMiniblock calldata e) private view returns (string memory) {
        StreamRecord storage s = streams[e.streamId];
        uint256 packed = s.packed;
        if (packed == 0) return "NOT_FOUND";
        uint256 caller = nodeNumber[msg.sender];
        bool member = false;
        for (uint256 j = 0; caller != 0 && j < uint8(packed >> 72); j++) {
            if (uint16(packed >> (80 + 16 * j)) == caller) {
                member = true;
                break;
            }
        }
        if (!member) return "NOT_A_STREAM_NODE";
        if ((packed >> 64) & FLAG_SEALED != 0) return "STREAM_SEALED";
        if (e.lastMiniblockNum != uint64(packed) + 1) return "BAD_MINIBLOCK_NUM";
        if (e.prevMiniblockHash != s.lastMiniblockHash) return "BAD_PREV_HASH";
        return "";
    }
}
