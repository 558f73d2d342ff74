//! Builders for streams, events and miniblocks, and a single-engine harness.

use alloy_primitives::{Address, B256};
use rill_engine::{Effect, Engine, EngineConfig, Input, Registration, StreamView};
use rill_protocol::{NodeKey, ParsedEvent, ParsedMiniblock, Payload, StreamId, pb, seal};

pub(crate) fn key(seed: u8) -> NodeKey {
    NodeKey::from_secret_bytes(&[seed; 32]).expect("valid secret")
}

/// An event from `key` on top of miniblock `prev`, with a salt that makes it unique.
pub(crate) fn event(key: &NodeKey, prev: (u64, B256), salt: u64, payload: Payload) -> ParsedEvent {
    let event = pb::StreamEvent {
        creator: Vec::new(),
        salt: salt.to_be_bytes().to_vec(),
        prev_miniblock_hash: prev.1.to_vec(),
        prev_miniblock_num: prev.0,
        created_at_ms: 0,
        payload: Some(payload),
    };
    seal(event, key).expect("well formed")
}

pub(crate) fn message(key: &NodeKey, prev: (u64, B256), salt: u64) -> ParsedEvent {
    event(
        key,
        prev,
        salt,
        Payload::Message(pb::Message {
            data: salt.to_be_bytes().to_vec(),
        }),
    )
}

pub(crate) fn member(
    key: &NodeKey,
    prev: (u64, B256),
    join: bool,
    address: Address,
) -> ParsedEvent {
    let op = if join {
        pb::member::Op::Join
    } else {
        pb::member::Op::Leave
    };
    event(
        key,
        prev,
        u64::from(join),
        Payload::Member(pb::Member {
            op: op as i32,
            address: address.to_vec(),
        }),
    )
}

/// A genesis miniblock: `creator`'s inception, signed by node `by`.
pub(crate) fn genesis(stream: StreamId, creator: &NodeKey, by: &NodeKey) -> ParsedMiniblock {
    genesis_with(stream, creator, by, pb::StreamSettings::default(), vec![])
}

/// A genesis with `settings`, and `joins` (each `(signer, address)`) after the inception.
pub(crate) fn genesis_with(
    stream: StreamId,
    creator: &NodeKey,
    by: &NodeKey,
    settings: pb::StreamSettings,
    joins: Vec<(NodeKey, Address)>,
) -> ParsedMiniblock {
    let mut events = vec![rill_protocol::envelope::inception(
        stream, settings, 0, creator,
    )];
    for (i, (signer, address)) in joins.iter().enumerate() {
        let join = pb::StreamEvent {
            creator: Vec::new(),
            salt: (i as u64).to_be_bytes().to_vec(),
            prev_miniblock_hash: vec![0; 32],
            prev_miniblock_num: 0,
            created_at_ms: 0,
            payload: Some(Payload::Member(pb::Member {
                op: pb::member::Op::Join as i32,
                address: address.to_vec(),
            })),
        };
        events.push(seal(join, signer).expect("well formed"));
    }
    ParsedMiniblock::genesis(events, 1, 0, by).unwrap()
}

pub(crate) fn registrations(effects: &[Effect]) -> Vec<Registration> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Register(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// One engine on a stream where it is the only node: it leads every miniblock.
pub(crate) struct Solo {
    pub(crate) engine: Engine,
    pub(crate) stream: StreamId,
    pub(crate) creator: NodeKey,
    pub(crate) now: u64,
    block: u64,
}

impl Solo {
    pub(crate) fn new(config: EngineConfig) -> Self {
        Self::with_genesis(config, |stream, creator, node| {
            genesis(stream, creator, node)
        })
    }

    /// A solo stream whose genesis `make` builds from the stream id, creator and node keys.
    pub(crate) fn with_genesis(
        config: EngineConfig,
        make: impl FnOnce(StreamId, &NodeKey, &NodeKey) -> ParsedMiniblock,
    ) -> Self {
        let node = key(1);
        let creator = key(2);
        let stream = StreamId([7; 32]);
        let mut engine = Engine::new(node.clone(), config);
        let genesis = make(stream, &creator, &node);
        engine.handle(
            0,
            Input::StreamAllocated {
                stream,
                nodes: vec![node.address()],
                genesis,
            },
        );
        Self {
            engine,
            stream,
            creator,
            now: 10,
            block: 0,
        }
    }

    /// The same stream, clock and chain on another engine (one loaded from the store).
    pub(crate) fn from_engine(engine: Engine, like: &Solo) -> Self {
        Self {
            engine,
            stream: like.stream,
            creator: like.creator.clone(),
            now: like.now,
            block: like.block,
        }
    }

    pub(crate) fn head(&self) -> (u64, B256) {
        let head = self.engine.stream(&self.stream).unwrap().head();
        (head.num, head.hash)
    }

    pub(crate) fn add(&mut self, event: ParsedEvent) -> Result<Vec<Effect>, rill_engine::Reject> {
        self.now += 1;
        self.engine.add_event(self.now, self.stream, event)
    }

    /// A chain block, and the registration of whatever candidate it produced.
    pub(crate) fn next_block(&mut self) -> Vec<Effect> {
        self.block += 1;
        self.now += 1000;
        let prevrandao = B256::from(alloy_primitives::U256::from(self.block));
        let mut effects = self.engine.handle(
            self.now,
            Input::ChainBlock {
                number: self.block,
                prevrandao,
            },
        );
        for r in registrations(&effects) {
            effects.extend(self.engine.handle(
                self.now,
                Input::MiniblockRegistered {
                    stream: r.stream,
                    num: r.num,
                    hash: r.hash,
                },
            ));
        }
        effects
    }
}
