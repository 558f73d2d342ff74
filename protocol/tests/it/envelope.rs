use alloy_primitives::B256;
use prost::Message as _;
use rill_protocol::envelope::new_event;
use rill_protocol::pb;
use rill_protocol::{HashTag, Limits, NodeKey, OpenError, Payload, framed_hash, open, seal};

fn message(text: &str) -> pb::StreamEvent {
    new_event(
        Some((3, B256::repeat_byte(7))),
        1_700_000_000_000,
        Payload::Message(pb::Message {
            data: text.as_bytes().to_vec(),
        }),
    )
}

/// Re-signs `event` bytes as given, so tests can build envelopes `seal` refuses to make.
fn sign_raw(event: Vec<u8>, key: &NodeKey) -> pb::Envelope {
    let hash = framed_hash(HashTag::Event, &event);
    pb::Envelope {
        hash: hash.to_vec(),
        signature: key.sign_hash(&hash).to_vec(),
        event,
    }
}

#[test]
fn sealed_event_opens_to_the_same_event() {
    let key = NodeKey::generate();
    let sealed = seal(message("hello"), &key).unwrap();
    let opened = open(&sealed.envelope().encode_to_vec(), &Limits::default()).unwrap();
    assert_eq!(opened, sealed);
    assert_eq!(opened.creator(), key.address());
    assert_eq!(
        opened.hash(),
        framed_hash(HashTag::Event, &opened.envelope().event)
    );
    assert_eq!(opened.prev_miniblock(), Some((3, B256::repeat_byte(7))));
    assert!(matches!(opened.payload(), Payload::Message(m) if m.data == b"hello"));
}

#[test]
fn signatures_are_low_s_with_v_zero_or_one() {
    for _ in 0..32 {
        let key = NodeKey::generate();
        let sealed = seal(message("x"), &key).unwrap();
        let sig = &sealed.envelope().signature;
        assert!(sig[64] <= 1);
        let s = k256::ecdsa::Signature::from_slice(&sig[..64]).unwrap();
        assert!(s.normalize_s().is_none(), "s must already be low");
    }
}

#[test]
fn hash_is_computed_over_the_bytes_as_received() {
    // Append an unknown field: prost skips it when decoding, so a re-encoding would differ.
    // The envelope must still open, with the hash of the bytes as they were signed.
    let key = NodeKey::generate();
    let mut event = message("x");
    event.creator = key.address().to_vec();
    let mut bytes = event.encode_to_vec();
    bytes.extend_from_slice(&[0xf8, 0x06, 0x2a]); // field 127, varint 42
    let envelope = sign_raw(bytes.clone(), &key);
    let opened = open(&envelope.encode_to_vec(), &Limits::default()).unwrap();
    assert_eq!(opened.hash(), framed_hash(HashTag::Event, &bytes));
    assert_eq!(opened.envelope().event, bytes);
    assert_ne!(opened.event().encode_to_vec(), bytes);
}

#[test]
fn flipped_event_byte_is_bad_hash() {
    let mut envelope = seal(message("hello"), &NodeKey::generate())
        .unwrap()
        .into_envelope();
    let last = envelope.event.len() - 1;
    envelope.event[last] ^= 1;
    let err = open(&envelope.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(matches!(err, OpenError::BadHash { .. }), "{err}");
}

#[test]
fn flipped_hash_byte_is_bad_hash() {
    let mut envelope = seal(message("hello"), &NodeKey::generate())
        .unwrap()
        .into_envelope();
    envelope.hash[0] ^= 1;
    let err = open(&envelope.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(matches!(err, OpenError::BadHash { .. }), "{err}");
}

#[test]
fn flipped_signature_byte_is_bad_signature_or_another_signer() {
    let key = NodeKey::generate();
    let envelope = seal(message("hello"), &key).unwrap().into_envelope();
    for index in [0, 31, 40, 63, 64] {
        let mut bad = envelope.clone();
        bad.signature[index] ^= 1;
        let err = open(&bad.encode_to_vec(), &Limits::default()).unwrap_err();
        // A flipped r or s either fails to recover or recovers some other key.
        assert!(
            matches!(
                err,
                OpenError::BadSignature(_) | OpenError::CreatorMismatch { .. }
            ),
            "byte {index}: {err}"
        );
    }
    let mut v = envelope.clone();
    v.signature[64] = 27;
    assert!(matches!(
        open(&v.encode_to_vec(), &Limits::default()),
        Err(OpenError::BadSignature(_))
    ));
    let mut short = envelope;
    short.signature.pop();
    assert!(matches!(
        open(&short.encode_to_vec(), &Limits::default()),
        Err(OpenError::BadSignature(_))
    ));
}

#[test]
fn high_s_signature_is_refused() {
    let key = NodeKey::generate();
    let envelope = seal(message("hello"), &key).unwrap().into_envelope();
    // (r, n - s, v ^ 1) is the same signature in its malleable high-s form.
    let sig = k256::ecdsa::Signature::from_slice(&envelope.signature[..64]).unwrap();
    let (r, s) = sig.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    let mut bad = envelope;
    bad.signature[..64].copy_from_slice(&high.to_bytes());
    bad.signature[64] ^= 1;
    let err = open(&bad.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(matches!(err, OpenError::BadSignature(_)), "{err}");
}

#[test]
fn event_signed_by_someone_else_is_creator_mismatch() {
    let creator = NodeKey::generate();
    let signer = NodeKey::generate();
    let mut event = message("hello");
    event.creator = creator.address().to_vec();
    let envelope = sign_raw(event.encode_to_vec(), &signer);
    match open(&envelope.encode_to_vec(), &Limits::default()) {
        Err(OpenError::CreatorMismatch {
            claimed,
            signer: got,
        }) => {
            assert_eq!(claimed, creator.address());
            assert_eq!(got, signer.address());
        }
        other => panic!("expected CreatorMismatch, got {other:?}"),
    }
}

#[test]
fn garbage_bytes_are_malformed() {
    let err = open(&[0xff, 0xff, 0xff, 0x01], &Limits::default()).unwrap_err();
    assert!(matches!(err, OpenError::Malformed(_)), "{err}");
    // A valid envelope whose event bytes are garbage.
    let envelope = sign_raw(vec![0xff; 10], &NodeKey::generate());
    let err = open(&envelope.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(matches!(err, OpenError::Malformed(_)), "{err}");
}

#[test]
fn event_without_payload_or_with_bad_fields_is_malformed() {
    let key = NodeKey::generate();
    let mut no_payload = message("x");
    no_payload.payload = None;
    assert!(matches!(
        seal(no_payload.clone(), &key),
        Err(OpenError::Malformed(_))
    ));
    no_payload.creator = key.address().to_vec();
    let envelope = sign_raw(no_payload.encode_to_vec(), &key);
    assert!(matches!(
        open(&envelope.encode_to_vec(), &Limits::default()),
        Err(OpenError::Malformed(_))
    ));

    let mut short_prev = message("x");
    short_prev.prev_miniblock_hash = vec![1; 31];
    assert!(matches!(
        seal(short_prev, &key),
        Err(OpenError::Malformed(_))
    ));

    let join = new_event(
        Some((0, B256::ZERO)),
        0,
        Payload::Member(pb::Member {
            op: pb::member::Op::Join as i32,
            address: vec![1; 19],
        }),
    );
    assert!(matches!(seal(join, &key), Err(OpenError::Malformed(_))));
}

#[test]
fn oversized_event_is_too_large() {
    let key = NodeKey::generate();
    let limits = Limits {
        max_event_bytes: 1024,
    };
    let big = seal(message(&"x".repeat(2000)), &key)
        .unwrap()
        .into_envelope();
    let err = open(&big.encode_to_vec(), &limits).unwrap_err();
    assert!(
        matches!(err, OpenError::TooLarge { max: 1024, .. }),
        "{err}"
    );
    // A megabyte of junk is refused before it is decoded.
    let err = open(&vec![0u8; 1 << 20], &limits).unwrap_err();
    assert!(matches!(err, OpenError::TooLarge { .. }), "{err}");
    // Just under the limit opens.
    let fits = seal(message(&"x".repeat(900)), &key)
        .unwrap()
        .into_envelope();
    assert!(open(&fits.encode_to_vec(), &limits).is_ok());
}

#[test]
fn every_open_error_has_its_own_wire_code() {
    let errors = [
        OpenError::Malformed(String::new()),
        OpenError::TooLarge { size: 1, max: 0 },
        OpenError::BadHash {
            claimed: B256::ZERO,
            computed: B256::ZERO,
        },
        OpenError::BadSignature(""),
        OpenError::CreatorMismatch {
            claimed: Default::default(),
            signer: Default::default(),
        },
    ];
    let codes: std::collections::HashSet<_> = errors.iter().map(|e| e.code()).collect();
    assert_eq!(codes.len(), errors.len());
}

#[test]
fn a_stored_envelope_reopens_to_the_same_event_and_a_damaged_one_is_bad_hash() {
    let key = NodeKey::generate();
    let sealed = seal(message("kept"), &key).unwrap();
    let reopened = rill_protocol::ParsedEvent::open_stored(sealed.envelope().clone()).unwrap();
    assert_eq!(reopened, sealed);
    assert_eq!(reopened.creator(), key.address());
    let mut damaged = sealed.into_envelope();
    damaged.event[0] ^= 1;
    let err = rill_protocol::ParsedEvent::open_stored(damaged).unwrap_err();
    assert!(matches!(err, OpenError::BadHash { .. }), "{err}");
}
