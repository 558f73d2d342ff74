use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};

use rill_tests::{Net, chain, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_is_refused_until_its_join_is_promoted() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let carol = NodeKey::generate();
    let created = net
        .client(0, &alice)
        .await
        .create_stream(None)
        .await
        .unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let (replicas, _) = net.placement(&created);
    let carol_client = net.client(replicas[0], &carol).await;

    let refused = carol_client
        .add_message(stream, "let me in", pb::Ack::Local)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(pb::ErrorCode::NotAMember), "{refused}");

    let (join, _) = carol_client
        .membership(stream, true, pb::Ack::Local)
        .await
        .expect("a join is admitted");
    // The join is only in the minipool: carol is still not a member.
    let early = carol_client
        .add_message(stream, "too early", pb::Ack::Local)
        .await
        .unwrap_err();
    assert_eq!(early.code(), Some(pb::ErrorCode::NotAMember), "{early}");

    eventually(
        Duration::from_secs(30),
        "the join is in a promoted miniblock",
        || async {
            chain(&carol_client, stream)
                .await
                .is_some_and(|c| c.event_hashes.contains(&join.hash()))
        },
    )
    .await;
    carol_client.head(stream, true).await.unwrap();
    carol_client
        .add_message(stream, "now a member", pb::Ack::Quorum)
        .await
        .expect("accepted after the join");
}

/// The CLI's access policy commands against real processes: `rill stream create --policy
/// invite --admin`, `rill member join` refused, `rill member add` by a member, `rill member
/// remove` refused to a non-admin and done by a named admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_an_invite_only_stream_and_its_admins_manage_members() {
    let net = Net::start(3, 3).await;
    let keys: Vec<(NodeKey, std::path::PathBuf)> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| {
            let key = NodeKey::generate();
            let file = net.dir.path().join(format!("{name}.key"));
            key.save(&file).unwrap();
            (key, file)
        })
        .collect();
    let [(_, alice_key), (bob, bob_key), (carol, carol_key)] = &keys[..] else {
        unreachable!()
    };
    let rill = |key: &std::path::Path, args: &[&str]| {
        let output = std::process::Command::new(&rill_tests::binaries().cli)
            .args(["--node", &net.nodes[0].node.multiaddr, "--key"])
            .arg(key)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Alice creates it and names bob its admin (not herself).
    let bob_address = bob.address().to_string();
    let (ok, stream, err) = rill(
        alice_key,
        &[
            "stream",
            "create",
            "--policy",
            "invite",
            "--admin",
            &bob_address,
        ],
    );
    assert!(ok, "rill stream create: {err}");
    let (ok, _, err) = rill(carol_key, &["member", "join", &stream]);
    assert!(
        !ok && err.contains("InviteOnly"),
        "a self-join is refused: {err}"
    );
    let (ok, _, err) = rill(alice_key, &["member", "add", &stream, &bob_address]);
    assert!(ok, "alice adds bob: {err}");
    let carol_address = carol.address().to_string();
    let (ok, _, err) = rill(alice_key, &["member", "add", &stream, &carol_address]);
    assert!(ok, "alice adds carol: {err}");
    let (ok, _, err) = rill(alice_key, &["member", "remove", &stream, &carol_address]);
    assert!(
        !ok && err.contains("NotAnAdmin"),
        "alice is no admin: {err}"
    );
    // Each command waits for its miniblock on node 0, where they all go.
    let (ok, _, err) = rill(bob_key, &["member", "remove", &stream, &carol_address]);
    assert!(ok, "bob, the admin, removes carol: {err}");
    // Carol is out: her message is refused.
    let (ok, _, err) = rill(carol_key, &["event", "add", &stream, "still here?"]);
    assert!(
        !ok && err.contains("NotAMember"),
        "carol was removed: {err}"
    );
}
