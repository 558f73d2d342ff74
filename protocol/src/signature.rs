//! Checking event signatures: who signed this hash?
//!
//! An event signature is the 65 bytes `r ‖ s ‖ v` (v ∈ {0,1}, s in the lower half of the
//! order, as Ethereum requires). Every replica recovers the signer of every event it admits, so
//! this is the costliest step per event. Two audited implementations can do it:
//! [`Backend::K256`] (pure Rust, the one alloy and the node keys use) and
//! [`Backend::Libsecp256k1`] (Bitcoin Core's C library through the `secp256k1` crate), which
//! measures about 4.5 times faster at recovery and twice as fast at signing here. The node
//! checks and signs events and headers with [`Backend::NODE`]; the keys themselves stay k256
//! (alloy and libp2p use them). Both backends are kept so the benchmark can measure each in
//! the same run and the tests can hold them to the same answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_primitives::keccak256;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};

use crate::envelope::OpenError;
use crate::ids::{Address, Hash};
use crate::keys::{NodeKey, address_of_key};

/// An implementation of secp256k1 recovery and signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// RustCrypto's `k256`.
    K256,
    /// libsecp256k1 (C), through the `secp256k1` crate.
    Libsecp256k1,
}

impl Backend {
    /// The one the node uses for every signature it checks.
    pub const NODE: Backend = Backend::Libsecp256k1;

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::K256 => "k256",
            Backend::Libsecp256k1 => "libsecp256k1",
        }
    }

    /// The address that signed `hash`, after checking the signature's shape (65 bytes, v 0 or
    /// 1, r and s in range, s low).
    pub fn recover(self, hash: &Hash, signature: &[u8]) -> Result<Address, OpenError> {
        let (signature, v) = parse(signature)?;
        match self {
            Backend::K256 => {
                let recovery = RecoveryId::from_byte(v).expect("v checked to be 0 or 1");
                let key = VerifyingKey::recover_from_prehash(hash.as_slice(), &signature, recovery)
                    .map_err(|_| no_key())?;
                Ok(address_of_key(&key))
            }
            Backend::Libsecp256k1 => {
                use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
                let recovery = RecoveryId::try_from(i32::from(v)).map_err(|_| no_key())?;
                let signature = RecoverableSignature::from_compact(&signature.to_bytes(), recovery)
                    .map_err(|_| no_key())?;
                let message = secp256k1::Message::from_digest(hash.0);
                let key = secp256k1::SECP256K1
                    .recover_ecdsa(message, &signature)
                    .map_err(|_| no_key())?;
                let uncompressed = key.serialize_uncompressed();
                // Skip the 0x04 SEC1 tag; the address is the last 20 bytes of the hash.
                Ok(Address::from_slice(&keccak256(&uncompressed[1..])[12..]))
            }
        }
    }

    /// Signs `hash` with `key`, in the same 65-byte form. Deterministic (RFC 6979), so both
    /// backends give the same bytes.
    pub fn sign(self, key: &NodeKey, hash: &Hash) -> [u8; 65] {
        match self {
            Backend::K256 => {
                let (signature, recovery) = key
                    .signing_key()
                    .sign_prehash_recoverable(hash.as_slice())
                    .expect("signing a 32-byte prehash cannot fail");
                let mut out = [0u8; 65];
                out[..64].copy_from_slice(&signature.to_bytes());
                out[64] = recovery.to_byte();
                out
            }
            Backend::Libsecp256k1 => {
                let secret = secp256k1::SecretKey::from_byte_array(key.secret_bytes())
                    .expect("a NodeKey's secret is a valid secret");
                let message = secp256k1::Message::from_digest(hash.0);
                let (recovery, compact) = secp256k1::SECP256K1
                    .sign_ecdsa_recoverable(message, &secret)
                    .serialize_compact();
                let mut out = [0u8; 65];
                out[..64].copy_from_slice(&compact);
                out[64] = i32::from(recovery) as u8;
                out
            }
        }
    }
}

/// Signatures recovered lately, by hash: the signature's bytes and its signer.
type Generation = HashMap<Hash, ([u8; 65], Address)>;

/// The signers of signatures recovered lately, so a node that receives the same event twice
/// (from its gossip and in a proposal's missing events, say) recovers it once. An entry
/// answers only for the exact hash and signature bytes it was recovered from, so a hit gives
/// what recovery would. Bounded: two generations of `capacity / 2` entries, the older
/// dropped when the newer fills.
pub struct SignerCache {
    generations: Mutex<[Generation; 2]>,
    per_generation: usize,
    /// Signatures recovered (not answered from the cache).
    recovered: AtomicU64,
}

impl SignerCache {
    /// A cache of at most `capacity` signers.
    pub fn new(capacity: usize) -> Self {
        Self {
            generations: Mutex::default(),
            per_generation: (capacity / 2).max(1),
            recovered: AtomicU64::new(0),
        }
    }

    /// How many signatures this cache recovered (rather than answered from memory).
    pub fn recovered(&self) -> u64 {
        self.recovered.load(Ordering::Relaxed)
    }

    /// The signer of `hash`, from the cache or recovered with `backend` (and remembered).
    pub fn recover(
        &self,
        backend: Backend,
        hash: &Hash,
        signature: &[u8],
    ) -> Result<Address, OpenError> {
        if let Ok(bytes) = <&[u8; 65]>::try_from(signature) {
            let generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
            for generation in generations.iter() {
                if let Some((known, signer)) = generation.get(hash)
                    && known == bytes
                {
                    return Ok(*signer);
                }
            }
        }
        self.recovered.fetch_add(1, Ordering::Relaxed);
        let signer = backend.recover(hash, signature)?;
        let bytes: [u8; 65] = signature.try_into().expect("recovery checked the length");
        let mut generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        if generations[0].len() >= self.per_generation {
            generations[1] = std::mem::take(&mut generations[0]);
        }
        generations[0].insert(*hash, (bytes, signer));
        Ok(signer)
    }
}

impl std::fmt::Debug for SignerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerCache")
            .field("per_generation", &self.per_generation)
            .finish_non_exhaustive()
    }
}

/// The signature's shape, checked the same way whatever the backend.
fn parse(signature: &[u8]) -> Result<(Signature, u8), OpenError> {
    let bytes: &[u8; 65] = signature
        .try_into()
        .map_err(|_| OpenError::BadSignature("a signature is 65 bytes: r ‖ s ‖ v"))?;
    let v = bytes[64];
    if v > 1 {
        return Err(OpenError::BadSignature("recovery id v must be 0 or 1"));
    }
    let signature = Signature::from_slice(&bytes[..64])
        .map_err(|_| OpenError::BadSignature("r or s is out of range"))?;
    if signature.normalize_s().is_some() {
        return Err(OpenError::BadSignature(
            "s is in the upper half of the order",
        ));
    }
    Ok((signature, v))
}

fn no_key() -> OpenError {
    OpenError::BadSignature("no public key recovers from it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Both backends sign alike and recover the same signer, or refuse the same bytes
        /// for the same reason.
        #[test]
        fn backends_agree(secret in any::<[u8; 32]>(), hash in any::<[u8; 32]>(), flip in 0usize..66, bit in 0u8..8) {
            let Ok(key) = NodeKey::from_secret_bytes(&secret) else { return Ok(()) };
            let hash = Hash::from(hash);
            let signature = Backend::K256.sign(&key, &hash);
            prop_assert_eq!(signature, Backend::Libsecp256k1.sign(&key, &hash));
            for backend in [Backend::K256, Backend::Libsecp256k1] {
                prop_assert_eq!(backend.recover(&hash, &signature), Ok(key.address()));
            }
            let mut damaged = signature.to_vec();
            if flip < 65 {
                damaged[flip] ^= 1 << bit;
            } else {
                damaged.pop();
            }
            prop_assert_eq!(
                Backend::K256.recover(&hash, &damaged),
                Backend::Libsecp256k1.recover(&hash, &damaged)
            );
        }
    }

    #[test]
    fn the_cache_answers_only_for_the_same_bytes_and_stays_bounded() {
        let cache = SignerCache::new(4);
        let key = NodeKey::generate();
        let hashes: Vec<Hash> = (0u8..6).map(|i| Hash::from([i; 32])).collect();
        for hash in &hashes {
            let signature = key.sign_hash(hash);
            assert_eq!(
                cache.recover(Backend::NODE, hash, &signature),
                Ok(key.address())
            );
            assert_eq!(
                cache.recover(Backend::NODE, hash, &signature),
                Ok(key.address())
            );
            // The same hash with another key's signature is recovered, not looked up.
            let other = NodeKey::generate();
            let forged = other.sign_hash(hash);
            assert_eq!(
                cache.recover(Backend::NODE, hash, &forged),
                Ok(other.address())
            );
            let mut damaged = signature;
            damaged[64] ^= 1;
            assert_ne!(
                cache.recover(Backend::NODE, hash, &damaged),
                Ok(key.address())
            );
        }
        // Per hash: the first signature, the forged one and the damaged one were recovered;
        // the repeat was answered from memory.
        assert_eq!(cache.recovered(), 3 * hashes.len() as u64);
        let generations = cache.generations.lock().unwrap();
        assert!(generations.iter().map(HashMap::len).sum::<usize>() <= 4);
    }

    #[test]
    fn a_high_s_signature_is_refused_by_both() {
        let key = NodeKey::generate();
        let hash = Hash::from([7u8; 32]);
        let signature = Backend::K256.sign(&key, &hash);
        let parsed = Signature::from_slice(&signature[..64]).unwrap();
        let (r, s) = parsed.split_scalars();
        let high = Signature::from_scalars(r, -*s).unwrap();
        let mut bytes = high.to_bytes().to_vec();
        bytes.push(signature[64] ^ 1);
        for backend in [Backend::K256, Backend::Libsecp256k1] {
            assert_eq!(
                backend.recover(&hash, &bytes),
                Err(OpenError::BadSignature(
                    "s is in the upper half of the order"
                ))
            );
        }
    }
}
