use rill_protocol::{HashTag, framed_hash};

/// Vectors computed independently of this crate, with pycryptodome's keccak:
///
/// ```python
/// from Crypto.Hash import keccak; import struct
/// def framed(tag, b):
///     k = keccak.new(digest_bits=256)
///     k.update(tag + struct.pack('<Q', len(b)) + b"ABCDEFG>" + b + b"<GFEDCBA")
///     return k.hexdigest()
/// ```
const VECTORS: &[(HashTag, &str, &str)] = &[
    (
        HashTag::Event,
        "",
        "b8708b7c9869887f0b0b7e8b12954b683c0c74796d93b94e90da87cacd303030",
    ),
    (
        HashTag::Event,
        "hello rill",
        "bbd32f95301c8e8c08187ab00346101f93c0c0a684d97207a648cb4d6425490a",
    ),
    (
        HashTag::Snapshot,
        "",
        "754f5b4c694b277dd5b8c01b414c0327114293643482083834514b93a63bcffa",
    ),
    (
        HashTag::Snapshot,
        "hello rill",
        "81690bd83032dac5e7c6dcd6b71e0051fd1f0fca51a22201534fe34e914aa27d",
    ),
];

#[test]
fn framed_hash_matches_independent_vectors() {
    for (tag, input, expected) in VECTORS {
        assert_eq!(
            hex::encode(framed_hash(*tag, input.as_bytes())),
            *expected,
            "{tag:?} {input:?}"
        );
    }
}

#[test]
fn framed_hash_matches_vector_over_all_byte_values() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(
        hex::encode(framed_hash(HashTag::Event, &bytes)),
        "2a1a4269a67b2b5429d7a867750ce19f4757fed2dc868f5654e4a86f22b46208"
    );
    assert_eq!(
        hex::encode(framed_hash(HashTag::Snapshot, &bytes)),
        "063a4a37dfbca43360f2735a0518819053f621b59a31cb6bad9068c3f4865084"
    );
}

#[test]
fn event_and_snapshot_tags_never_collide() {
    assert_ne!(
        framed_hash(HashTag::Event, b"x"),
        framed_hash(HashTag::Snapshot, b"x")
    );
}
