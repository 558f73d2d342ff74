//! A stream's access policy: who may join (open or invite-only) and who may remove others
//! (its admins), set in the inception, carried in every snapshot, and enforced at admission
//! and at candidate checks.

use alloy_primitives::Address;
use rill_engine::{
    CandidateVerdict, Effect, Engine, EngineConfig, Input, NetworkParams, Reject, RestoredStream,
    StoreOp, StreamView,
};
use rill_protocol::{ParsedMiniblock, StreamId, pb};

use crate::support::{Solo, genesis_with, key, member, message};

fn refused(result: Result<Vec<Effect>, Reject>) -> Reject {
    match result {
        Ok(effects) => panic!("expected a refusal, got {} effects", effects.len()),
        Err(reason) => reason,
    }
}

fn settings(policy: pb::JoinPolicy, admins: &[Address]) -> pb::StreamSettings {
    pb::StreamSettings {
        join_policy: policy as i32,
        admins: admins.iter().map(|a| a.to_vec()).collect(),
        ..Default::default()
    }
}

/// A solo stream created by key 2 with `settings`, key 3 joined by the creator in the genesis.
fn solo(config: EngineConfig, settings: pb::StreamSettings) -> Solo {
    Solo::with_genesis(config, |stream, creator, node| {
        genesis_with(
            stream,
            creator,
            node,
            settings,
            vec![(creator.clone(), key(3).address())],
        )
    })
}

fn members(solo: &Solo) -> Vec<Address> {
    let stream = solo.engine.stream(&solo.stream).unwrap();
    stream.members().iter().copied().collect()
}

#[test]
fn an_invite_only_stream_refuses_a_self_join_and_admits_a_members_invitee_from_the_next_miniblock()
{
    let mut solo = solo(
        EngineConfig::default(),
        settings(pb::JoinPolicy::Invite, &[]),
    );
    let outsider = key(50);
    let self_join = member(&outsider, solo.head(), true, outsider.address());
    assert_eq!(
        refused(solo.add(self_join)),
        Reject::InviteOnly(outsider.address())
    );
    // A non-member cannot invite either.
    let by_outsider = member(&outsider, solo.head(), true, key(51).address());
    assert_eq!(
        refused(solo.add(by_outsider)),
        Reject::NotAMember(outsider.address())
    );
    // A member (not the creator) invites: the invitee posts from the next miniblock.
    let invitee = key(52);
    solo.add(member(&key(3), solo.head(), true, invitee.address()))
        .unwrap();
    assert_eq!(
        refused(solo.add(message(&invitee, solo.head(), 1))),
        Reject::NotAMember(invitee.address())
    );
    solo.next_block();
    solo.add(message(&invitee, solo.head(), 2)).unwrap();
    assert!(members(&solo).contains(&invitee.address()));
}

#[test]
fn on_an_open_stream_anyone_joins_by_themselves() {
    let mut solo = solo(EngineConfig::default(), settings(pb::JoinPolicy::Open, &[]));
    let joiner = key(53);
    solo.add(member(&joiner, solo.head(), true, joiner.address()))
        .unwrap();
    solo.next_block();
    solo.add(message(&joiner, solo.head(), 1)).unwrap();
}

#[test]
fn only_admins_remove_others_and_anyone_leaves_by_themselves() {
    // No admins named: the creator (key 2) is the admin.
    let mut solo = solo(EngineConfig::default(), settings(pb::JoinPolicy::Open, &[]));
    let creator = solo.creator.clone();
    let kick_creator = member(&key(3), solo.head(), false, creator.address());
    assert_eq!(
        refused(solo.add(kick_creator)),
        Reject::NotAnAdmin(key(3).address())
    );
    // Anyone may leave by themselves.
    solo.add(member(&key(3), solo.head(), false, key(3).address()))
        .unwrap();
    solo.next_block();
    assert!(!members(&solo).contains(&key(3).address()));
    let joiner = key(54);
    solo.add(member(&joiner, solo.head(), true, joiner.address()))
        .unwrap();
    solo.next_block();
    solo.add(member(&creator, solo.head(), false, joiner.address()))
        .unwrap();
    solo.next_block();
    assert_eq!(members(&solo), vec![creator.address()]);
}

#[test]
fn admins_named_in_the_inception_replace_the_creator() {
    let admin = key(3).address();
    let mut solo = solo(
        EngineConfig::default(),
        settings(pb::JoinPolicy::Open, &[admin]),
    );
    let creator = solo.creator.clone();
    let by_creator = member(&creator, solo.head(), false, admin);
    assert_eq!(
        refused(solo.add(by_creator)),
        Reject::NotAnAdmin(creator.address())
    );
    solo.add(member(&key(3), solo.head(), false, creator.address()))
        .unwrap();
    solo.next_block();
    assert_eq!(members(&solo), vec![admin]);
}

#[test]
fn a_genesis_that_breaks_its_own_policy_is_refused() {
    let stream = StreamId([8; 32]);
    let creator = key(2);
    let stranger = key(55);
    let invite_only = genesis_with(
        stream,
        &creator,
        &key(1),
        settings(pb::JoinPolicy::Invite, &[]),
        vec![(stranger.clone(), stranger.address())],
    );
    assert_eq!(
        rill_engine::check_genesis(stream, &[key(1).address()], &invite_only),
        Err(Reject::InviteOnly(stranger.address()))
    );
    let open = genesis_with(
        stream,
        &creator,
        &key(1),
        settings(pb::JoinPolicy::Open, &[]),
        vec![(stranger.clone(), stranger.address())],
    );
    assert_eq!(
        rill_engine::check_genesis(stream, &[key(1).address()], &open),
        Ok(())
    );
}

#[test]
fn the_policy_and_resolved_admins_are_carried_in_snapshots_and_hold_after_loading_from_one() {
    let config = EngineConfig {
        params: NetworkParams {
            snapshot_interval: 2,
            ..NetworkParams::default()
        },
        recency_window: 4,
        ..EngineConfig::default()
    };
    let mut solo = solo(config, settings(pb::JoinPolicy::Invite, &[]));
    let creator = solo.creator.clone();
    let mut chain = Vec::new();
    for salt in 0..3 {
        solo.add(message(&creator, solo.head(), salt)).unwrap();
        for effect in solo.next_block() {
            if let Effect::Store(StoreOp::Promote { miniblock, .. }) = effect {
                chain.push(miniblock);
            }
        }
    }
    let with_snapshot: ParsedMiniblock = chain
        .iter()
        .rev()
        .find(|m| m.header().snapshot.is_some())
        .cloned()
        .expect("a snapshot within three miniblocks at interval 2");
    let snapshot = with_snapshot.header().snapshot.clone().unwrap();
    let carried = snapshot.settings.expect("settings in the snapshot");
    assert_eq!(carried.join_policy(), pb::JoinPolicy::Invite);
    assert_eq!(carried.admins, vec![creator.address().to_vec()]);
    // A node that loads the stream from the snapshot enforces the same rules.
    let after: Vec<ParsedMiniblock> = chain
        .iter()
        .filter(|m| m.num() >= with_snapshot.num())
        .cloned()
        .collect();
    let mut engine = Engine::new(key(1), config);
    engine
        .restore(RestoredStream {
            id: solo.stream,
            nodes: vec![key(1).address()],
            miniblocks: after,
            minipool: vec![],
            candidates: vec![],
            gap: None,
        })
        .unwrap();
    let mut loaded = Solo::from_engine(engine, &solo);
    let outsider = key(56);
    assert_eq!(
        refused(loaded.add(member(&outsider, loaded.head(), true, outsider.address()))),
        Reject::InviteOnly(outsider.address())
    );
    assert_eq!(
        refused(loaded.add(member(&key(3), loaded.head(), false, creator.address()))),
        Reject::NotAnAdmin(key(3).address())
    );
    loaded
        .add(member(&creator, loaded.head(), false, key(3).address()))
        .unwrap();
}

#[test]
fn a_candidate_carrying_a_removal_by_a_non_admin_is_refused() {
    let nodes: Vec<Address> = [10, 11, 12].map(|s| key(s).address()).to_vec();
    let stream = StreamId([9; 32]);
    let creator = key(2);
    let genesis = genesis_with(
        stream,
        &creator,
        &key(10),
        settings(pb::JoinPolicy::Open, &[]),
        vec![(creator.clone(), key(3).address())],
    );
    let mut engine = Engine::new(key(11), EngineConfig::default());
    engine.handle(
        0,
        Input::StreamAllocated {
            stream,
            nodes: nodes.clone(),
            genesis: genesis.clone(),
        },
    );
    let randao = alloy_primitives::B256::from(alloy_primitives::U256::from(7));
    engine.handle(
        1000,
        Input::ChainBlock {
            number: 1,
            prevrandao: randao,
        },
    );
    let leader = rill_engine::elect_leader(&stream, 1, &randao, &nodes);
    let leader_key = [10, 11, 12]
        .map(key)
        .into_iter()
        .find(|k| k.address() == leader)
        .unwrap();
    let kick = member(&key(3), (0, genesis.hash()), false, creator.address());
    let header = pb::MiniblockHeader {
        num: 1,
        prev_hash: genesis.hash().to_vec(),
        timestamp_ms: 10,
        event_hashes: vec![kick.hash().to_vec()],
        event_num_offset: 2,
        snapshot: None,
        prev_snapshot_num: 0,
        chain_block: 1,
    };
    let candidate = ParsedMiniblock::seal(header, vec![kick], &leader_key).unwrap();
    let answer = engine.candidate(5000, leader, stream, candidate);
    match answer.answer {
        CandidateVerdict::Refused(Reject::InadmissibleEvent { index: 0, reason }) => {
            assert_eq!(*reason, Reject::NotAnAdmin(key(3).address()))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !answer.effects.iter().any(|e| matches!(e, Effect::Store(_))),
        "nothing stored"
    );
}
