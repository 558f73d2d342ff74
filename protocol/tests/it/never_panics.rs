use proptest::prelude::*;
use prost::Message as _;
use rill_protocol::envelope::new_event;
use rill_protocol::{Limits, NodeKey, Payload, open, pb, seal};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = open(&bytes, &Limits::default());
    }

    #[test]
    fn open_never_panics_on_envelopes_with_arbitrary_fields(
        hash in proptest::collection::vec(any::<u8>(), 0..40),
        signature in proptest::collection::vec(any::<u8>(), 0..70),
        event in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let envelope = pb::Envelope { hash, signature, event };
        let _ = open(&envelope.encode_to_vec(), &Limits::default());
    }

    #[test]
    fn mutating_one_byte_of_a_sealed_envelope_never_opens_as_another_valid_event(
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let key = NodeKey::generate();
        let event = new_event(None, 0, Payload::Message(pb::Message { data: b"abc".to_vec() }));
        let mut event = event;
        event.prev_miniblock_hash = vec![0; 32];
        let sealed = seal(event, &key).unwrap();
        let mut bytes = sealed.envelope().encode_to_vec();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(opened) = open(&bytes, &Limits::default()) {
            // The only harmless mutation keeps hash, signer and event the same.
            prop_assert_eq!(opened.hash(), sealed.hash());
            prop_assert_eq!(opened.creator(), key.address());
        }
    }
}
