//! A stream's promoted state, as far as the rules need it: the head, the last miniblocks of the
//! chain (the recency window), the members, the settings, and the admission rules that judge an
//! event against that state. It starts from a base, the genesis or a miniblock that carries a
//! snapshot, so loading a stream never replays its whole history.

use std::collections::{BTreeSet, VecDeque};

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

/// The promoted state of one stream (cloned only to judge what builds on a candidate).
#[derive(Clone, Debug)]
pub(crate) struct Stream {
    pub(crate) id: StreamId,
    pub(crate) nodes: Vec<Address>,
    pub(crate) settings: pb::StreamSettings,
    pub(crate) head: Head,
    pub(crate) members: BTreeSet<Address>,
    pub(crate) event_count: u64,
    pub(crate) last_snapshot_num: u64,
    /// The last `window + 1` miniblocks, oldest first (the head last).
    recent: VecDeque<Recent>,
    /// Event hashes of `recent`, for duplicate checks.
    recent_events: B256Set,
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
            recent: VecDeque::new(),
            recent_events: B256Set::default(),
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
            recent: VecDeque::new(),
            recent_events: B256Set::default(),
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
        let oldest = self.recent.front().expect("a stream remembers its head");
        if older.num() + 1 != oldest.num || older.hash() != oldest.prev_hash {
            return Err(Reject::BrokenChain { num: oldest.num });
        }
        let events: Vec<B256> = older.events().iter().map(|e| e.hash()).collect();
        self.recent_events.extend(events.iter().copied());
        self.recent.push_front(Recent {
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

    fn remember(&mut self, miniblock: &ParsedMiniblock, window: u64) {
        let events: Vec<B256> = miniblock.events().iter().map(|e| e.hash()).collect();
        self.recent_events.extend(events.iter().copied());
        self.recent.push_back(Recent {
            num: miniblock.num(),
            hash: miniblock.hash(),
            prev_hash: miniblock.prev_hash(),
            events,
        });
        while self.recent.len() as u64 > window.saturating_add(1) {
            if let Some(old) = self.recent.pop_front() {
                for hash in old.events {
                    self.recent_events.remove(&hash);
                }
            }
        }
    }

    /// The hash of promoted miniblock `num`, if it is in the window.
    pub(crate) fn hash_of(&self, num: u64) -> Option<B256> {
        let first = self.recent.front()?.num;
        let index = usize::try_from(num.checked_sub(first)?).ok()?;
        self.recent.get(index).map(|r| r.hash)
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
        if self.recent.front().is_some_and(|first| num < first.num) {
            return Err(Reject::BeforeSnapshot { num });
        }
        if self.hash_of(num) != Some(hash) {
            return Err(Reject::UnknownMiniblock { num, hash });
        }
        if self.recent_events.contains(&event.hash()) {
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
        self.recent_events.contains(hash)
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
    /// a candidate built on it is judged against.
    pub(crate) fn after(&self, miniblock: &ParsedMiniblock, rules: &Rules) -> Stream {
        let mut next = self.clone();
        next.apply(miniblock, rules);
        next
    }

    /// Applies a checked miniblock that follows the head: moves the head, applies joins and
    /// leaves, and remembers its events for duplicate checks.
    pub(crate) fn apply(&mut self, miniblock: &ParsedMiniblock, rules: &Rules) {
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
        self.remember(miniblock, rules.window);
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
