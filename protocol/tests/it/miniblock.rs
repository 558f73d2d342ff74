use std::collections::HashMap;

use alloy_primitives::B256;
use rill_protocol::envelope::new_event;
use rill_protocol::{
    Limits, MiniblockError, NodeKey, OpenError, ParsedEvent, ParsedMiniblock, Payload, SignerCache,
    pb, seal,
};

/// A leader's miniblock of `n` message events from one client.
fn miniblock(n: usize) -> ParsedMiniblock {
    let client = NodeKey::generate();
    let events: Vec<ParsedEvent> = (0..n)
        .map(|i| {
            let payload = Payload::Message(pb::Message {
                data: format!("event {i}").into_bytes(),
            });
            seal(
                new_event(Some((0, B256::ZERO)), 1_000 + i as u64, payload),
                &client,
            )
            .unwrap()
        })
        .collect();
    let header = pb::MiniblockHeader {
        num: 1,
        prev_hash: B256::repeat_byte(1).to_vec(),
        timestamp_ms: 2_000,
        event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
        ..Default::default()
    };
    ParsedMiniblock::seal(header, events, &NodeKey::generate()).unwrap()
}

/// The wire form with only the envelopes `sent` selects.
fn leaving_out(whole: &ParsedMiniblock, sent: impl Fn(usize) -> bool) -> pb::Miniblock {
    let mut wire = whole.to_pb();
    wire.events = whole
        .events()
        .iter()
        .enumerate()
        .filter(|(i, _)| sent(*i))
        .map(|(_, e)| e.envelope().clone())
        .collect();
    wire
}

fn pool_of(whole: &ParsedMiniblock, held: impl Fn(usize) -> bool) -> HashMap<B256, ParsedEvent> {
    whole
        .events()
        .iter()
        .enumerate()
        .filter(|(i, _)| held(*i))
        .map(|(_, e)| (e.hash(), e.clone()))
        .collect()
}

#[test]
fn a_candidate_that_leaves_out_held_events_opens_to_the_whole_one() {
    let whole = miniblock(6);
    // The receiver holds the even events; the odd ones are sent.
    let pool = pool_of(&whole, |i| i % 2 == 0);
    let wire = leaving_out(&whole, |i| i % 2 == 1);
    let signers = SignerCache::new(64);
    let opened = ParsedMiniblock::open_omitting(wire, &Limits::default(), &signers, |h| {
        pool.get(h).cloned()
    })
    .unwrap();
    assert_eq!(opened, whole);
    // Only the events sent were recovered; the held ones were taken as they are.
    assert_eq!(signers.recovered(), 3);
}

#[test]
fn an_event_left_out_and_not_held_is_named() {
    let whole = miniblock(4);
    let pool = pool_of(&whole, |i| i != 2);
    let wire = leaving_out(&whole, |_| false);
    let error =
        ParsedMiniblock::open_omitting(wire, &Limits::default(), &SignerCache::new(8), |h| {
            pool.get(h).cloned()
        })
        .unwrap_err();
    assert_eq!(
        error,
        MiniblockError::Omitted {
            index: 2,
            hash: whole.events()[2].hash()
        }
    );
}

#[test]
fn an_event_sent_under_another_hash_is_refused() {
    let whole = miniblock(3);
    let mut wire = leaving_out(&whole, |_| true);
    // Event 1's envelope claims to be event 0: it cannot stand in for it.
    let (first, second) = wire.events.split_at_mut(1);
    second[0].hash = first[0].hash.clone();
    wire.events.remove(0);
    let error =
        ParsedMiniblock::open_omitting(wire, &Limits::default(), &SignerCache::new(8), |_| None)
            .unwrap_err();
    assert!(
        matches!(
            error,
            MiniblockError::Event {
                index: 0,
                error: OpenError::BadHash { .. }
            }
        ),
        "{error:?}"
    );
}
