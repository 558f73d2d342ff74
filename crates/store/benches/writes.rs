//! What the store's writes cost: minipool additions one event at a time and in batches, a
//! promotion, a flush. `cargo bench -p rill-store --bench writes` (release, one run).

use std::time::{Duration, Instant};

use rill_protocol::{NodeKey, ParsedEvent, ParsedMiniblock, Payload, StreamId, pb, seal};
use rill_store::Store;

const STREAM: StreamId = StreamId([1; 32]);

fn key(seed: u8) -> NodeKey {
    NodeKey::from_secret_bytes(&[seed; 32]).expect("a key")
}

fn genesis() -> ParsedMiniblock {
    let inception =
        rill_protocol::envelope::inception(STREAM, pb::StreamSettings::default(), 0, &key(2));
    ParsedMiniblock::genesis(vec![inception], 1, 0, &key(1)).expect("a genesis")
}

fn messages(prev: &ParsedMiniblock, count: u64, from: u64) -> Vec<ParsedEvent> {
    (from..from + count)
        .map(|salt| {
            seal(
                pb::StreamEvent {
                    creator: vec![],
                    salt: salt.to_be_bytes().to_vec(),
                    prev_miniblock_hash: prev.hash().to_vec(),
                    prev_miniblock_num: prev.num(),
                    created_at_ms: 0,
                    payload: Some(Payload::Message(pb::Message { data: vec![7; 40] })),
                },
                &key(2),
            )
            .expect("sealed")
        })
        .collect()
}

fn next(prev: &ParsedMiniblock, events: Vec<ParsedEvent>) -> ParsedMiniblock {
    let header = pb::MiniblockHeader {
        num: prev.num() + 1,
        prev_hash: prev.hash().to_vec(),
        timestamp_ms: prev.header().timestamp_ms + 1,
        event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
        event_num_offset: 0,
        snapshot: None,
        prev_snapshot_num: 0,
        chain_block: 0,
    };
    ParsedMiniblock::seal(header, events, &key(1)).expect("sealed")
}

fn per(total: Duration, n: usize) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / n as f64)
}

/// One row of the table: `writes` writes of `events` events in all took `took`.
fn row(write: &str, took: Duration, writes: usize, events: usize) {
    println!(
        "| {write} | {} | {} |",
        per(took, writes),
        per(took, events)
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(dir.path()).expect("a store");
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .expect("created");
    println!("| write | per write | per event |\n|---|---:|---:|");
    let mut salt = 0;
    let mut head = g.clone();
    for (batch, writes) in [(1usize, 2_000usize), (10, 400), (100, 50), (1_000, 5)] {
        let count = batch * writes;
        let events = messages(&g, count as u64, salt);
        salt += count as u64;
        let started = Instant::now();
        for chunk in events.chunks(batch) {
            store.add_to_minipool(&STREAM, chunk).expect("added");
        }
        let took = started.elapsed();
        row(
            &format!("minipool addition, {batch} events"),
            took,
            writes,
            count,
        );
        let miniblock = next(&head, events);
        // The same candidate twice: told its events are in the minipool (as the node does),
        // then written with all its events.
        let pooled = vec![true; miniblock.events().len()];
        for (how, pooled) in [("pooled", pooled.as_slice()), ("all written", &[])] {
            let started = Instant::now();
            store
                .store_pooled_candidate(&STREAM, &miniblock, pooled)
                .expect("candidate");
            let took = started.elapsed();
            row(
                &format!("candidate of {count} events, {how}"),
                took,
                1,
                count,
            );
        }
        let started = Instant::now();
        store.promote(&STREAM, &miniblock).expect("promoted");
        let took = started.elapsed();
        row(&format!("promotion of {count} events"), took, 1, count);
        head = miniblock;
    }
    // Writes while another thread flushes whenever the last flush ended (group commit).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.flush().expect("flushed");
                n += 1;
            }
            n
        })
    };
    for batch in [1usize, 100] {
        let writes = 20_000 / batch;
        let events = messages(&g, 20_000, 2_000_000 + batch as u64 * 100_000);
        let started = Instant::now();
        for chunk in events.chunks(batch) {
            store.add_to_minipool(&STREAM, chunk).expect("added");
        }
        let took = started.elapsed();
        let write = format!("minipool addition, {batch} events, flushes meanwhile");
        row(&write, took, writes, 20_000);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "| (flushes meanwhile: {}) | | |",
        flusher.join().expect("flusher")
    );
    let mut flushes = Vec::new();
    for i in 0..200u64 {
        store
            .add_to_minipool(&STREAM, &messages(&g, 1, 1_000_000 + i))
            .expect("added");
        let started = Instant::now();
        store.flush().expect("flushed");
        flushes.push(started.elapsed());
    }
    flushes.sort();
    println!(
        "| flush after one addition, p50 / p99 | {:.2?} / {:.2?} | |",
        flushes[100], flushes[198]
    );
    settling(&g);
}

/// A pending promotion of 2,700 events added one at a time, settled step by step while one
/// event is added before each step (as a busy stream's adds come between them): how many
/// steps, and how long the writer spends on them (starting, which reads the mark, is one
/// more piece of the writer's time).
fn settling(g: &ParsedMiniblock) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(dir.path()).expect("a store");
    store
        .create_stream(&STREAM, &[key(1).address()], g)
        .expect("created");
    let events = messages(g, 2_700, 5_000_000);
    for event in &events {
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(event))
            .expect("added");
    }
    let miniblock = next(g, events);
    store
        .store_pooled_candidate(&STREAM, &miniblock, &vec![true; 2_700])
        .expect("candidate");
    store
        .promote_candidate(&STREAM, &miniblock)
        .expect("promoted");
    let started = Instant::now();
    let mut settling = store
        .start_settling(&STREAM, &miniblock)
        .expect("read")
        .expect("pending");
    let start = started.elapsed();
    let mut later = messages(g, 100, 6_000_000).into_iter();
    let mut steps = Vec::new();
    loop {
        let event = later.next().expect("enough events");
        store.add_to_minipool(&STREAM, &[event]).expect("added");
        let started = Instant::now();
        let done = store.settle_step(&mut settling).expect("a step");
        steps.push(started.elapsed());
        if done {
            break;
        }
    }
    let total: Duration = start + steps.iter().sum::<Duration>();
    let first = steps[0];
    steps.sort();
    println!(
        "| settlement of 2,700 pooled events in {} steps: start / first step / longest step / in all | {start:.2?} / {first:.2?} / {:.2?} | {total:.2?} |",
        steps.len(),
        steps[steps.len() - 1]
    );
}
