//! At `info`, a node's log shows one stream's story: lines inside `stream{id=…}` and
//! `miniblock{num=…}` spans.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};
use rill_testnet::Testnet;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_info_log_names_the_stream_and_miniblock_of_each_promotion() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let creator = NodeKey::generate();
    let client = net.client_with(0, creator).await;
    let created = client.create_stream(None).await.unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    client
        .add_message(stream, "hello", pb::Ack::Miniblock)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let span = format!("stream{{id={stream}}}:miniblock{{num=1}}");
    let promotions = log
        .lines()
        .filter(|l| l.contains(&span) && l.contains("promoted"))
        .count();
    assert_eq!(
        promotions, 3,
        "each of the three replicas logs miniblock 1's promotion inside the stream's span:\n{log}"
    );
}
