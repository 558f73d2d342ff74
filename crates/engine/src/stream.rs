//! A stream's promoted state, as far as the rules need it: the head, the last miniblocks of the
//! chain (the recency window), the members, the settings, and the admission rules that judge an
//! event against that state. It starts from a base, the genesis or a miniblock that carries a
//! snapshot, so loading a stream never replays its whole history.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use alloy_primitives::map::B256Set;
use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, Payload, StreamId, pb};

use crate::Reject;

/// The head of a stream's promoted chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its number.
    pub num: u64,
    /// Its hash.
    pub hash: B256,
    /// Its timestamp.
    pub timestamp_ms: u64,
}

/// The limits an event is judged by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Events may build on one of the last this many miniblocks.
    pub(crate) window: u64,
    /// The network's largest event.
    pub(crate) max_event_bytes: usize,
}

/// One promoted miniblock as the window remembers it.
#[derive(Clone, Debug)]
struct Recent {
    num: u64,
    hash: B256,
    prev_hash: B256,
    events: Vec<B256>,
}

/// The recency window: the last `window + 1` promoted miniblocks, oldest first (the head
/// last), and their events' hashes, for duplicate checks.
#[derive(Clone, Debug, Default)]
struct Window {
    miniblocks: VecDeque<Recent>,
    events: B256Set,
}

/// The candidate a state after it (see [`Stream::after`]) holds on top of its window.
#[derive(Debug)]
struct OnTop {
    num: u64,
    hash: B256,
    events: B256Set,
}

/// The promoted state of one stream, or the state after a candidate for the next number
/// ([`Stream::after`], to judge what builds on that candidate).
#[derive(Clone, Debug)]
pub(crate) struct Stream {
    pub(crate) id: StreamId,
    pub(crate) nodes: Vec<Address>,
    pub(crate) settings: pb::StreamSettings,
    pub(crate) head: Head,
    pub(crate) members: BTreeSet<Address>,
    pub(crate) event_count: u64,
    pub(crate) last_snapshot_num: u64,
    /// Shared with the states after a candidate, not copied: a window of 33 miniblocks of
    /// 3,000 events is megabytes, and copying it took a node's loop 0.7-8.5 ms, in about one
    /// block in four (BENCHMARKS.md).
    window: Arc<Window>,
    /// In a state after a candidate: that candidate.
    on_top: Option<Arc<OnTop>>,
}

impl Stream {
    /// A stream from its genesis miniblock; refuses a genesis that is not a valid start of
    /// stream `id` on `nodes`.
    pub(crate) fn from_genesis(
        id: StreamId,
        nodes: Vec<Address>,
        genesis: &ParsedMiniblock,
    ) -> Result<Self, Reject> {
        if nodes.is_empty() {
            return Err(Reject::BadGenesis("a stream needs at least one node"));
        }
        if genesis.num() != 0 || genesis.header().prev_hash.iter().any(|b| *b != 0) {
            return Err(Reject::BadGenesis(
                "the genesis is miniblock 0 and links to nothing",
            ));
        }
        let inception = genesis
            .events()
            .first()
            .ok_or(Reject::BadGenesis("the genesis starts with an inception"))?;
        let Payload::Inception(body) = inception.payload() else {
            return Err(Reject::BadGenesis("the genesis starts with an inception"));
        };
        if inception.inception_stream() != Some(id) {
            return Err(Reject::BadGenesis("the inception names another stream"));
        }
        let header = genesis.header();
        if header.event_num_offset != 0 || header.snapshot.is_some() {
            return Err(Reject::BadGenesis(
                "a genesis has no offset and no snapshot",
            ));
        }
        let mut settings = body.settings.clone().unwrap_or_default();
        rill_protocol::envelope::check_settings(&settings).map_err(Reject::BadGenesis)?;
        if settings.admins.is_empty() {
            settings.admins = vec![inception.creator().to_vec()];
        }
        let policy = settings.join_policy();
        let mut members = BTreeSet::from([inception.creator()]);
        for event in &genesis.events()[1..] {
            let Some((true, address)) = event.membership() else {
                return Err(Reject::BadGenesis("after the inception, only new joins"));
            };
            check_join(&members, policy, event.creator(), address)?;
            members.insert(address);
        }
        let mut stream = Self {
            id,
            nodes,
            settings,
            head: Head {
                num: 0,
                hash: genesis.hash(),
                timestamp_ms: header.timestamp_ms,
            },
            members,
            event_count: genesis.events().len() as u64,
            last_snapshot_num: 0,
            window: Arc::default(),
            on_top: None,
        };
        stream.remember(genesis, u64::MAX);
        Ok(stream)
    }

    /// A stream from a miniblock that carries a snapshot: the state right after it. Its
    /// recency window starts there (events building on earlier miniblocks are not judged).
    pub(crate) fn from_snapshot(
        id: StreamId,
        nodes: Vec<Address>,
        miniblock: &ParsedMiniblock,
    ) -> Result<Self, Reject> {
        if nodes.is_empty() {
            return Err(Reject::BadSnapshot("a stream needs at least one node"));
        }
        let header = miniblock.header();
        let snapshot = header
            .snapshot
            .as_ref()
            .ok_or(Reject::BadSnapshot("the miniblock carries no snapshot"))?;
        if StreamId::from_slice(&snapshot.stream_id) != Some(id) {
            return Err(Reject::BadSnapshot("the snapshot names another stream"));
        }
        let mut members = BTreeSet::new();
        for member in &snapshot.members {
            if member.len() != 20 || !members.insert(Address::from_slice(member)) {
                return Err(Reject::BadSnapshot(
                    "members are 20-byte addresses, once each",
                ));
            }
        }
        let settings = snapshot.settings.clone().unwrap_or_default();
        rill_protocol::envelope::check_settings(&settings).map_err(Reject::BadSnapshot)?;
        let mut stream = Self {
            id,
            nodes,
            settings,
            head: Head {
                num: miniblock.num(),
                hash: miniblock.hash(),
                timestamp_ms: header.timestamp_ms,
            },
            members,
            event_count: snapshot.event_count,
            last_snapshot_num: miniblock.num(),
            window: Arc::default(),
            on_top: None,
        };
        stream.remember(miniblock, u64::MAX);
        Ok(stream)
    }

    /// A stream from its base: the genesis, or a miniblock that carries a snapshot.
    pub(crate) fn from_base(
        id: StreamId,
        nodes: Vec<Address>,
        base: &ParsedMiniblock,
    ) -> Result<Self, Reject> {
        if base.num() == 0 {
            Self::from_genesis(id, nodes, base)
        } else {
            Self::from_snapshot(id, nodes, base)
        }
    }

    /// Remembers a miniblock before the base (for duplicate checks and the window): `older`
    /// is the one just before the oldest remembered.
    pub(crate) fn remember_older(&mut self, older: &ParsedMiniblock) -> Result<(), Reject> {
        let window = Arc::make_mut(&mut self.window);
        let oldest = window
            .miniblocks
            .front()
            .expect("a stream remembers its head");
        if older.num() + 1 != oldest.num || older.hash() != oldest.prev_hash {
            return Err(Reject::BrokenChain { num: oldest.num });
        }
        let events: Vec<B256> = older.events().iter().map(|e| e.hash()).collect();
        window.events.extend(events.iter().copied());
        window.miniblocks.push_front(Recent {
            num: older.num(),
            hash: older.hash(),
            prev_hash: older.prev_hash(),
            events,
        });
        Ok(())
    }

    /// Whether miniblock `num`, the next one, may carry a snapshot: `interval` miniblocks
    /// have passed since the last one. A replica votes for a snapshot when it is due.
    pub(crate) fn snapshot_due(&self, num: u64, interval: u64) -> bool {
        interval > 0 && num.saturating_sub(self.last_snapshot_num) >= interval
    }

    /// Whether miniblock `num`, the next one, must carry a snapshot: twice the interval has
    /// passed, so a leader that did not gather the votes for one cannot put it off for good.
    pub(crate) fn snapshot_overdue(&self, num: u64, interval: u64) -> bool {
        interval > 0 && num.saturating_sub(self.last_snapshot_num) >= interval.saturating_mul(2)
    }

    fn remember(&mut self, miniblock: &ParsedMiniblock, size: u64) {
        debug_assert!(
            self.on_top.is_none(),
            "a state after a candidate is not promoted"
        );
        let window = Arc::make_mut(&mut self.window);
        let events: Vec<B256> = miniblock.events().iter().map(|e| e.hash()).collect();
        window.events.extend(events.iter().copied());
        window.miniblocks.push_back(Recent {
            num: miniblock.num(),
            hash: miniblock.hash(),
            prev_hash: miniblock.prev_hash(),
            events,
        });
        while window.miniblocks.len() as u64 > size.saturating_add(1) {
            if let Some(old) = window.miniblocks.pop_front() {
                for hash in old.events {
                    window.events.remove(&hash);
                }
            }
        }
    }

    /// The hash of promoted miniblock `num`, if it is in the window (or, in a state after a
    /// candidate, that candidate's).
    pub(crate) fn hash_of(&self, num: u64) -> Option<B256> {
        if let Some(on_top) = self.on_top.as_ref().filter(|c| c.num == num) {
            return Some(on_top.hash);
        }
        let first = self.window.miniblocks.front()?.num;
        let index = usize::try_from(num.checked_sub(first)?).ok()?;
        self.window.miniblocks.get(index).map(|r| r.hash)
    }

    /// The largest event this stream accepts.
    pub(crate) fn max_event_bytes(&self, rules: &Rules) -> usize {
        match self.settings.max_event_bytes {
            0 => rules.max_event_bytes,
            own => usize::try_from(own)
                .map_or(rules.max_event_bytes, |own| own.min(rules.max_event_bytes)),
        }
    }

    /// Whether `event` may enter the minipool (or a miniblock) on top of the head. Duplicates
    /// are judged against recent miniblocks only; the minipool is the caller's business.
    pub(crate) fn check(&self, event: &ParsedEvent, rules: &Rules) -> Result<(), Reject> {
        let size = event.envelope().event.len();
        let max = self.max_event_bytes(rules);
        if size > max {
            return Err(Reject::TooLarge { size, max });
        }
        match event.payload() {
            Payload::Inception(_) => return Err(Reject::BadPayload("an inception")),
            Payload::MiniblockHeader(_) => return Err(Reject::BadPayload("a miniblock header")),
            Payload::Member(_) | Payload::Message(_) => {}
        }
        let (num, hash) = event
            .prev_miniblock()
            .ok_or(Reject::BadPayload("an event without a previous miniblock"))?;
        if num > self.head.num {
            return Err(Reject::UnknownMiniblock { num, hash });
        }
        if self.head.num - num > rules.window {
            return Err(Reject::StaleMiniblock {
                num,
                window: rules.window,
            });
        }
        if self
            .window
            .miniblocks
            .front()
            .is_some_and(|first| num < first.num)
        {
            return Err(Reject::BeforeSnapshot { num });
        }
        if self.hash_of(num) != Some(hash) {
            return Err(Reject::UnknownMiniblock { num, hash });
        }
        if self.recently_included(&event.hash()) {
            return Err(Reject::Duplicate(event.hash()));
        }
        self.check_membership(event)
    }

    /// Whether `address` may remove other members.
    pub(crate) fn is_admin(&self, address: &Address) -> bool {
        self.settings
            .admins
            .iter()
            .any(|admin| admin.as_slice() == address.as_slice())
    }

    /// The stream's rules on who does what: a join as the policy allows (see [`check_join`]);
    /// a leave by a member, of itself or, by an admin, of another member; anything else by a
    /// member.
    fn check_membership(&self, event: &ParsedEvent) -> Result<(), Reject> {
        let creator = event.creator();
        match event.membership() {
            Some((true, address)) => {
                check_join(&self.members, self.settings.join_policy(), creator, address)?;
            }
            Some((false, address)) => {
                if !self.members.contains(&creator) {
                    return Err(Reject::NotAMember(creator));
                }
                if !self.members.contains(&address) {
                    return Err(Reject::NotAMember(address));
                }
                if address != creator && !self.is_admin(&creator) {
                    return Err(Reject::NotAnAdmin(creator));
                }
            }
            None => {
                if !self.members.contains(&creator) {
                    return Err(Reject::NotAMember(creator));
                }
            }
        }
        Ok(())
    }

    /// Whether a recent miniblock holds `hash`.
    pub(crate) fn recently_included(&self, hash: &B256) -> bool {
        self.window.events.contains(hash)
            || self
                .on_top
                .as_ref()
                .is_some_and(|on_top| on_top.events.contains(hash))
    }

    /// Members after applying `events` (joins and leaves) to the current members.
    pub(crate) fn members_after(&self, events: &[ParsedEvent]) -> BTreeSet<Address> {
        let mut members = self.members.clone();
        for event in events {
            match event.membership() {
                Some((true, address)) => {
                    members.insert(address);
                }
                Some((false, address)) => {
                    members.remove(&address);
                }
                None => {}
            }
        }
        members
    }

    /// The snapshot of the state after a miniblock with `events`.
    pub(crate) fn snapshot_after(&self, events: &[ParsedEvent]) -> pb::Snapshot {
        pb::Snapshot {
            stream_id: self.id.0.to_vec(),
            members: self
                .members_after(events)
                .iter()
                .map(|a| a.to_vec())
                .collect(),
            settings: Some(self.settings.clone()),
            event_count: self.event_count + events.len() as u64,
        }
    }

    /// The state once `miniblock`, a checked candidate for the next number, is promoted: what
    /// a candidate built on it is judged against. It shares this state's window and holds the
    /// candidate on top, without letting the window's oldest miniblock go: that changes no
    /// verdict, because an event that builds on that miniblock, or on one before it (as every
    /// event it holds does), is stale by the new head's number before anything else is
    /// looked at.
    pub(crate) fn after(&self, miniblock: &ParsedMiniblock) -> Stream {
        debug_assert!(self.on_top.is_none(), "one candidate on top at most");
        let mut next = self.clone();
        next.advance(miniblock);
        next.on_top = Some(Arc::new(OnTop {
            num: miniblock.num(),
            hash: miniblock.hash(),
            events: miniblock.events().iter().map(|e| e.hash()).collect(),
        }));
        next
    }

    /// Applies a checked miniblock that follows the head: moves the head, applies joins and
    /// leaves, and remembers its events for duplicate checks.
    pub(crate) fn apply(&mut self, miniblock: &ParsedMiniblock, rules: &Rules) {
        self.advance(miniblock);
        self.remember(miniblock, rules.window);
    }

    /// The head, the members, the counts once `miniblock` follows the head.
    fn advance(&mut self, miniblock: &ParsedMiniblock) {
        self.members = self.members_after(miniblock.events());
        self.event_count += miniblock.events().len() as u64;
        if miniblock.header().snapshot.is_some() {
            self.last_snapshot_num = miniblock.num();
        }
        self.head = Head {
            num: miniblock.num(),
            hash: miniblock.hash(),
            timestamp_ms: miniblock.header().timestamp_ms,
        };
    }
}

/// Whether `creator` may make `address` a member of a stream with `members` under `policy`: not
/// twice; on an open stream anyone may join by themselves; otherwise a member adds it.
fn check_join(
    members: &BTreeSet<Address>,
    policy: pb::JoinPolicy,
    creator: Address,
    address: Address,
) -> Result<(), Reject> {
    if members.contains(&address) {
        return Err(Reject::AlreadyMember(address));
    }
    if address == creator && policy == pb::JoinPolicy::Open {
        return Ok(());
    }
    if !members.contains(&creator) {
        return Err(if address == creator {
            Reject::InviteOnly(address)
        } else {
            Reject::NotAMember(creator)
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rill_protocol::{NodeKey, seal};

    use super::*;

    const RULES: Rules = Rules {
        window: 3,
        max_event_bytes: 1 << 16,
    };

    fn key(seed: u8) -> NodeKey {
        NodeKey::from_secret_bytes(&[seed; 32]).expect("a key")
    }

    fn on(key: &NodeKey, prev: (u64, B256), salt: u64, payload: Payload) -> ParsedEvent {
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

    fn message(key: &NodeKey, prev: (u64, B256), salt: u64) -> ParsedEvent {
        on(
            key,
            prev,
            salt,
            Payload::Message(pb::Message { data: vec![1] }),
        )
    }

    /// The miniblock after `stream`'s head with `events`.
    fn next(stream: &Stream, events: Vec<ParsedEvent>) -> ParsedMiniblock {
        let header = pb::MiniblockHeader {
            num: stream.head.num + 1,
            prev_hash: stream.head.hash.to_vec(),
            timestamp_ms: stream.head.timestamp_ms + 1,
            event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
            event_num_offset: stream.event_count,
            snapshot: None,
            prev_snapshot_num: stream.last_snapshot_num,
            chain_block: stream.head.num + 1,
        };
        ParsedMiniblock::seal(header, events, &key(9)).expect("well formed")
    }

    /// The state after a candidate, built on the shared window, judges every event as the
    /// state it becomes once promoted: events on each miniblock of the window and on the one
    /// that leaves it, on a wrong hash, repeats of every included event, a member that the
    /// candidate adds.
    #[test]
    fn the_state_after_a_candidate_judges_as_the_promoted_state() {
        let creator = key(1);
        let id = StreamId([7; 32]);
        let inception =
            rill_protocol::envelope::inception(id, pb::StreamSettings::default(), 0, &creator);
        let genesis = ParsedMiniblock::genesis(vec![inception], 1, 0, &key(9)).expect("a genesis");
        let mut stream =
            Stream::from_genesis(id, vec![Address::repeat_byte(9)], &genesis).expect("a stream");
        let mut chain = vec![(0, genesis.hash())];
        let mut included = Vec::new();
        for n in 1..=6u64 {
            let events: Vec<ParsedEvent> = (0..2)
                .map(|i| message(&creator, (n - 1, chain[n as usize - 1].1), n * 10 + i))
                .collect();
            included.extend(events.iter().cloned());
            let miniblock = next(&stream, events);
            stream.apply(&miniblock, &RULES);
            chain.push((miniblock.num(), miniblock.hash()));
        }
        let newcomer = key(2);
        let join = on(
            &creator,
            (6, stream.head.hash),
            99,
            Payload::Member(pb::Member {
                op: pb::member::Op::Join as i32,
                address: newcomer.address().to_vec(),
            }),
        );
        let candidate = next(
            &stream,
            vec![message(&creator, (6, stream.head.hash), 70), join],
        );
        included.extend(candidate.events().iter().cloned());
        chain.push((candidate.num(), candidate.hash()));

        let after = stream.after(&candidate);
        let mut promoted = stream.clone();
        promoted.apply(&candidate, &RULES);
        assert_eq!(after.head, promoted.head);
        assert_eq!(after.members, promoted.members);
        assert_eq!(after.event_count, promoted.event_count);

        let mut probes = included;
        for (num, hash) in &chain {
            probes.push(message(&creator, (*num, *hash), 1000 + num));
            probes.push(message(&newcomer, (*num, *hash), 2000 + num));
            probes.push(message(&creator, (*num, B256::repeat_byte(3)), 3000 + num));
        }
        for event in &probes {
            assert_eq!(
                after.check(event, &RULES),
                promoted.check(event, &RULES),
                "event on {:?}",
                event.prev_miniblock()
            );
        }
        // The window's oldest stays in the shared window, and is stale all the same.
        let oldest = chain[7 - 4];
        assert!(matches!(
            after.check(&message(&creator, oldest, 1), &RULES),
            Err(Reject::StaleMiniblock { .. })
        ));
        // The promoted state's own window was not touched.
        assert_eq!(stream.head.num, 6);
        assert!(!stream.recently_included(&candidate.events()[0].hash()));
    }
}
