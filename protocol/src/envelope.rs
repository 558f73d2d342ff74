//! Sealing events into envelopes and opening received envelopes.
//!
//! [`open`] and [`ParsedEvent::open`] are the only ways to get a [`ParsedEvent`] from the
//! outside world: one exists only after its hash was recomputed over the bytes as received, its
//! signature recovered to its creator, and its fields checked for shape. [`seal`] makes one from
//! a local key.

use std::sync::Arc;

use prost::Message as _;

use crate::hash::{HashTag, framed_hash};
use crate::ids::{Address, Hash, StreamId};
use crate::keys::NodeKey;
use crate::pb;
use crate::signature::{Backend, SignerCache};

pub use crate::pb::stream_event::Payload;

/// Bytes an envelope adds around its event (hash, signature, field tags and lengths), with room
/// to spare; used to refuse oversized input before decoding it.
const ENVELOPE_OVERHEAD: usize = 128;

/// Size limits applied when opening events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialized `StreamEvent` accepted (the registry's `maxEventBytes`).
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 64 * 1024,
        }
    }
}

/// Why received bytes are not a valid event. Each reason has its own variant so callers can
/// count and report them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The bytes do not decode, or a field has the wrong shape.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// The event is larger than allowed.
    #[error("event is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope's hash is not the hash of its event bytes.
    #[error("hash mismatch: the envelope says {claimed}, the event bytes hash to {computed}")]
    BadHash {
        /// The hash the envelope carries.
        claimed: Hash,
        /// The hash of the bytes received.
        computed: Hash,
    },
    /// The signature is not a valid recoverable secp256k1 signature over the hash.
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    /// The signature is valid but made by someone other than the event's creator.
    #[error("event claims creator {claimed} but was signed by {signer}")]
    CreatorMismatch {
        /// The creator field.
        claimed: Address,
        /// The address recovered from the signature.
        signer: Address,
    },
}

impl OpenError {
    /// The wire error code for this reason.
    pub fn code(&self) -> pb::ErrorCode {
        match self {
            OpenError::Malformed(_) => pb::ErrorCode::Malformed,
            OpenError::TooLarge { .. } => pb::ErrorCode::TooLarge,
            OpenError::BadHash { .. } => pb::ErrorCode::BadHash,
            OpenError::BadSignature(_) => pb::ErrorCode::BadSignature,
            OpenError::CreatorMismatch { .. } => pb::ErrorCode::CreatorMismatch,
        }
    }

    /// A short stable name for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            OpenError::Malformed(_) => "malformed",
            OpenError::TooLarge { .. } => "too_large",
            OpenError::BadHash { .. } => "bad_hash",
            OpenError::BadSignature(_) => "bad_signature",
            OpenError::CreatorMismatch { .. } => "creator_mismatch",
        }
    }

    /// The error as it travels in a response.
    pub fn to_pb(&self) -> pb::Error {
        pb::Error {
            code: self.code() as i32,
            message: self.to_string(),
            ..Default::default()
        }
    }
}

/// An event whose hash, signature and shape have been checked. Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedEvent(Arc<Inner>);

#[derive(Debug, PartialEq)]
struct Inner {
    hash: Hash,
    creator: Address,
    envelope: pb::Envelope,
    event: pb::StreamEvent,
}

/// Opens an encoded [`pb::Envelope`].
pub fn open(bytes: &[u8], limits: &Limits) -> Result<ParsedEvent, OpenError> {
    if bytes.len() > limits.max_event_bytes + ENVELOPE_OVERHEAD {
        return Err(OpenError::TooLarge {
            size: bytes.len(),
            max: limits.max_event_bytes,
        });
    }
    let envelope = pb::Envelope::decode(bytes)
        .map_err(|e| OpenError::Malformed(format!("envelope does not decode: {e}")))?;
    ParsedEvent::open(envelope, limits)
}

/// Seals `event` with `key`: sets its creator to the key's address, encodes, hashes and signs.
/// Fails only if the event is malformed (for example, it has no payload).
pub fn seal(mut event: pb::StreamEvent, key: &NodeKey) -> Result<ParsedEvent, OpenError> {
    event.creator = key.address().to_vec();
    check_shape(&event)?;
    let bytes = event.encode_to_vec();
    let hash = framed_hash(HashTag::Event, &bytes);
    let signature = key.sign_hash(&hash);
    Ok(ParsedEvent(Arc::new(Inner {
        hash,
        creator: key.address(),
        envelope: pb::Envelope {
            hash: hash.to_vec(),
            signature: signature.to_vec(),
            event: bytes,
        },
        event,
    })))
}

/// A new event with a random salt, referring to the miniblock `prev` (none for an inception).
pub fn new_event(
    prev: Option<(u64, Hash)>,
    created_at_ms: u64,
    payload: Payload,
) -> pb::StreamEvent {
    let (num, hash) = prev.map_or((0, Vec::new()), |(num, hash)| (num, hash.to_vec()));
    pb::StreamEvent {
        creator: Vec::new(),
        salt: rand::random::<[u8; 16]>().to_vec(),
        prev_miniblock_hash: hash,
        prev_miniblock_num: num,
        created_at_ms,
        payload: Some(payload),
    }
}

/// A stream's inception event, signed by its creator (who becomes the first member). It has no
/// salt: the stream id already makes it unique, and a genesis built from it is reproducible.
pub fn inception(
    stream: StreamId,
    settings: pb::StreamSettings,
    created_at_ms: u64,
    key: &NodeKey,
) -> ParsedEvent {
    let event = pb::StreamEvent {
        creator: Vec::new(),
        salt: Vec::new(),
        prev_miniblock_hash: Vec::new(),
        prev_miniblock_num: 0,
        created_at_ms,
        payload: Some(Payload::Inception(pb::Inception {
            stream_id: stream.0.to_vec(),
            settings: Some(settings),
        })),
    };
    seal(event, key).expect("an inception with a 32-byte id is well formed")
}

impl ParsedEvent {
    /// Checks a decoded envelope. The hash is computed over `envelope.event` as received.
    pub fn open(envelope: pb::Envelope, limits: &Limits) -> Result<Self, OpenError> {
        Self::open_with(envelope, limits, |hash, signature| {
            Backend::NODE.recover(hash, signature)
        })
    }

    /// [`Self::open`], taking the signer from `signers` when it recovered the same signature
    /// over the same hash before.
    pub fn open_cached(
        envelope: pb::Envelope,
        limits: &Limits,
        signers: &SignerCache,
    ) -> Result<Self, OpenError> {
        Self::open_with(envelope, limits, |hash, signature| {
            signers.recover(Backend::NODE, hash, signature)
        })
    }

    fn open_with(
        envelope: pb::Envelope,
        limits: &Limits,
        recover: impl FnOnce(&Hash, &[u8]) -> Result<Address, OpenError>,
    ) -> Result<Self, OpenError> {
        if envelope.event.len() > limits.max_event_bytes {
            return Err(OpenError::TooLarge {
                size: envelope.event.len(),
                max: limits.max_event_bytes,
            });
        }
        let claimed = Hash::try_from(envelope.hash.as_slice()).map_err(|_| {
            OpenError::Malformed(format!("hash is {} bytes, not 32", envelope.hash.len()))
        })?;
        let computed = framed_hash(HashTag::Event, &envelope.event);
        if claimed != computed {
            return Err(OpenError::BadHash { claimed, computed });
        }
        let signer = recover(&computed, &envelope.signature)?;
        let event = pb::StreamEvent::decode(envelope.event.as_slice())
            .map_err(|e| OpenError::Malformed(format!("event does not decode: {e}")))?;
        check_shape(&event)?;
        let creator = Address::from_slice(&event.creator);
        if creator != signer {
            return Err(OpenError::CreatorMismatch {
                claimed: creator,
                signer,
            });
        }
        Ok(Self(Arc::new(Inner {
            hash: computed,
            creator,
            envelope,
            event,
        })))
    }

    /// Re-opens an envelope this node checked before it stored it: the hash is computed and
    /// compared again (that catches a damaged disk) and the shape checked, but the signature is
    /// not recovered again (the costly part); the creator is the one the event names. Never
    /// use it for bytes that did not come from this node's own store.
    pub fn open_stored(envelope: pb::Envelope) -> Result<Self, OpenError> {
        let claimed = Hash::try_from(envelope.hash.as_slice()).map_err(|_| {
            OpenError::Malformed(format!("hash is {} bytes, not 32", envelope.hash.len()))
        })?;
        let computed = framed_hash(HashTag::Event, &envelope.event);
        if claimed != computed {
            return Err(OpenError::BadHash { claimed, computed });
        }
        let event = pb::StreamEvent::decode(envelope.event.as_slice())
            .map_err(|e| OpenError::Malformed(format!("event does not decode: {e}")))?;
        check_shape(&event)?;
        let creator = Address::from_slice(&event.creator);
        Ok(Self(Arc::new(Inner {
            hash: computed,
            creator,
            envelope,
            event,
        })))
    }

    /// The event hash.
    pub fn hash(&self) -> Hash {
        self.0.hash
    }

    /// The creator, proven by the signature.
    pub fn creator(&self) -> Address {
        self.0.creator
    }

    /// The envelope exactly as received (or sealed).
    pub fn envelope(&self) -> &pb::Envelope {
        &self.0.envelope
    }

    /// Gives back the envelope (copying it only if the event is shared).
    pub fn into_envelope(self) -> pb::Envelope {
        Arc::try_unwrap(self.0)
            .map_or_else(|shared| shared.envelope.clone(), |inner| inner.envelope)
    }

    /// The decoded event.
    pub fn event(&self) -> &pb::StreamEvent {
        &self.0.event
    }

    /// The payload (always present in a parsed event).
    pub fn payload(&self) -> &Payload {
        self.0
            .event
            .payload
            .as_ref()
            .expect("check_shape guarantees a payload")
    }

    /// The miniblock the creator built on: `(num, hash)`, or `None` for an inception.
    pub fn prev_miniblock(&self) -> Option<(u64, Hash)> {
        let event = &self.0.event;
        (event.prev_miniblock_hash.len() == 32).then(|| {
            (
                event.prev_miniblock_num,
                Hash::from_slice(&event.prev_miniblock_hash),
            )
        })
    }

    /// The stream id of an inception event.
    pub fn inception_stream(&self) -> Option<StreamId> {
        match self.payload() {
            Payload::Inception(inception) => StreamId::from_slice(&inception.stream_id),
            _ => None,
        }
    }

    /// The join (`true`) or leave (`false`) and the address, for a membership event.
    pub fn membership(&self) -> Option<(bool, Address)> {
        match self.payload() {
            Payload::Member(member) => {
                let join = member.op() == pb::member::Op::Join;
                Some((join, Address::from_slice(&member.address)))
            }
            _ => None,
        }
    }

    /// The header, if this event is a miniblock header.
    pub fn miniblock_header(&self) -> Option<&pb::MiniblockHeader> {
        match self.payload() {
            Payload::MiniblockHeader(header) => Some(header),
            _ => None,
        }
    }
}

fn malformed(what: &str) -> OpenError {
    OpenError::Malformed(what.to_owned())
}

fn check_hash_field(bytes: &[u8], what: &str) -> Result<(), OpenError> {
    if bytes.len() == 32 {
        Ok(())
    } else {
        Err(OpenError::Malformed(format!(
            "{what} is {} bytes, not 32",
            bytes.len()
        )))
    }
}

/// The most admins a stream may name.
pub const MAX_ADMINS: usize = 64;

/// Whether stream settings are well formed: a known join policy, admins that are 20-byte
/// addresses, once each, at most [`MAX_ADMINS`]. Checked for inceptions and snapshots alike.
pub fn check_settings(settings: &pb::StreamSettings) -> Result<(), &'static str> {
    if pb::JoinPolicy::try_from(settings.join_policy).is_err() {
        return Err("unknown join policy");
    }
    if settings.admins.len() > MAX_ADMINS {
        return Err("too many admins");
    }
    for (i, admin) in settings.admins.iter().enumerate() {
        if admin.len() != 20 {
            return Err("an admin is not a 20-byte address");
        }
        if settings.admins[..i].contains(admin) {
            return Err("an admin is named twice");
        }
    }
    Ok(())
}

/// Field shapes every event must have, whatever stream it is for.
fn check_shape(event: &pb::StreamEvent) -> Result<(), OpenError> {
    if event.creator.len() != 20 {
        return Err(malformed("creator is not a 20-byte address"));
    }
    let payload = event
        .payload
        .as_ref()
        .ok_or_else(|| malformed("event has no payload"))?;
    match payload {
        Payload::Inception(inception) => {
            check_hash_field(&inception.stream_id, "inception stream id")?;
            if let Some(settings) = &inception.settings {
                check_settings(settings).map_err(malformed)?;
            }
            if !event.prev_miniblock_hash.is_empty() {
                return Err(malformed("an inception refers to no previous miniblock"));
            }
        }
        Payload::Member(member) => {
            if member.address.len() != 20 {
                return Err(malformed("member address is not 20 bytes"));
            }
            if member.op() == pb::member::Op::Unspecified {
                return Err(malformed("member op must be join or leave"));
            }
        }
        Payload::Message(_) => {}
        Payload::MiniblockHeader(header) => {
            if header.num > 0 {
                check_hash_field(&header.prev_hash, "header prev hash")?;
            }
            for hash in &header.event_hashes {
                check_hash_field(hash, "header event hash")?;
            }
        }
    }
    if !matches!(payload, Payload::Inception(_) | Payload::MiniblockHeader(_)) {
        check_hash_field(&event.prev_miniblock_hash, "prev miniblock hash")?;
    }
    Ok(())
}
