use std::os::unix::fs::PermissionsExt;

use alloy_primitives::address;
use rill_protocol::NodeKey;
use rill_protocol::keys::{KeyError, address_of_key, address_of_peer};

/// anvil's (and hardhat's) first dev account: a published key/address pair.
const ANVIL_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

#[test]
fn address_matches_a_published_key_pair() {
    let secret: [u8; 32] = hex::decode(ANVIL_KEY).unwrap().try_into().unwrap();
    let key = NodeKey::from_secret_bytes(&secret).unwrap();
    assert_eq!(
        key.address(),
        address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
    );
}

#[test]
fn key_file_gives_one_address_through_alloy_k256_and_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/node.key");
    let (created, fresh) = NodeKey::load_or_generate(&path).unwrap();
    assert!(fresh);

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let loaded = NodeKey::load(&path).unwrap();
    assert_eq!(loaded.secret_bytes(), created.secret_bytes());

    let via_alloy = loaded.alloy_signer().address();
    let via_k256 = address_of_key(loaded.verifying_key());
    let via_peer_id = address_of_peer(&loaded.peer_id()).expect("secp256k1 peer id");
    assert_eq!(via_alloy, loaded.address());
    assert_eq!(via_k256, loaded.address());
    assert_eq!(via_peer_id, loaded.address());

    let (again, fresh) = NodeKey::load_or_generate(&path).unwrap();
    assert!(!fresh);
    assert_eq!(again.address(), created.address());
}

#[test]
fn peer_ids_of_other_key_types_map_to_no_address() {
    let ed25519 = libp2p_identity::Keypair::generate_ed25519();
    assert_eq!(address_of_peer(&ed25519.public().to_peer_id()), None);
}

#[test]
fn save_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    NodeKey::generate().save(&path).unwrap();
    assert!(matches!(
        NodeKey::generate().save(&path),
        Err(KeyError::Exists { .. })
    ));
}

#[test]
fn load_refuses_world_readable_and_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    NodeKey::generate().save(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        NodeKey::load(&path),
        Err(KeyError::Permissions { mode: 0o644, .. })
    ));

    let bad = dir.path().join("bad");
    std::fs::write(&bad, "0x1234\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        NodeKey::load(&bad),
        Err(KeyError::BadFormat { .. })
    ));

    let zero = dir.path().join("zero");
    std::fs::write(&zero, format!("0x{}\n", "00".repeat(32))).unwrap();
    std::fs::set_permissions(&zero, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(NodeKey::load(&zero), Err(KeyError::InvalidSecret)));

    let missing = dir.path().join("missing");
    assert!(matches!(NodeKey::load(&missing), Err(KeyError::Io { .. })));
}
