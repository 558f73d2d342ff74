//! Node and client keys.
//!
//! One 32-byte secp256k1 secret is three things at once: an Ethereum address (registry entry,
//! transactions, header signatures), an alloy signer, and a libp2p identity whose [`PeerId`]
//! maps back to the same address ([`address_of_peer`]). Clients use the same key type to sign
//! events.
//!
//! Key file format: the secret as `0x` + 64 hex digits and a newline, created with mode 0600.
//! Files readable by group or others are refused, as ssh refuses such keys.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use alloy_primitives::keccak256;
use alloy_signer_local::PrivateKeySigner;
use k256::ecdsa::{SigningKey, VerifyingKey};
use libp2p_identity::{Keypair, PeerId, PublicKey};

use crate::ids::{Address, Hash};
use crate::signature::Backend;

/// Why a key could not be made, loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The 32 bytes are not a valid secp256k1 secret (zero or not below the group order).
    #[error("the bytes are not a valid secp256k1 secret key")]
    InvalidSecret,
    /// The key file's content is not `0x` + 64 hex digits.
    #[error("key file {path} is not a key: expected 0x followed by 64 hex digits")]
    BadFormat {
        /// The file.
        path: PathBuf,
    },
    /// The key file can be read by group or others.
    #[error("key file {path} has mode {mode:o}; run `chmod 600 {path}` (keys must not be readable by others)", path = path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Saving would overwrite an existing file.
    #[error("key file {path} already exists; refusing to overwrite it", path = path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A secp256k1 secret key with everything derived from it.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
    address: Address,
}

impl NodeKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::random(&mut rand::thread_rng()))
    }

    /// The key with this 32-byte secret.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Result<Self, KeyError> {
        let signing = SigningKey::from_slice(secret).map_err(|_| KeyError::InvalidSecret)?;
        Ok(Self::from_signing_key(signing))
    }

    fn from_signing_key(signing: SigningKey) -> Self {
        let address = address_of_key(signing.verifying_key());
        Self { signing, address }
    }

    /// The 32 secret bytes: the one thing the alloy and libp2p views of the key share.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes().into()
    }

    /// The Ethereum address: last 20 bytes of keccak256 of the uncompressed public key.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.signing.verifying_key()
    }

    /// An alloy signer for chain transactions.
    pub fn alloy_signer(&self) -> PrivateKeySigner {
        PrivateKeySigner::from_signing_key(self.signing.clone())
    }

    /// The libp2p identity (a secp256k1 keypair).
    pub fn libp2p_keypair(&self) -> Keypair {
        let mut secret = self.secret_bytes();
        let secret = libp2p_identity::secp256k1::SecretKey::try_from_bytes(&mut secret)
            .expect("a valid k256 secret is a valid libp2p secp256k1 secret");
        libp2p_identity::secp256k1::Keypair::from(secret).into()
    }

    /// The libp2p peer id; [`address_of_peer`] maps it back to [`Self::address`].
    pub fn peer_id(&self) -> PeerId {
        self.libp2p_keypair().public().to_peer_id()
    }

    /// The 65-byte recoverable signature `r ‖ s ‖ v` (v ∈ {0,1}, low s) over `hash` itself,
    /// made with [`Backend::NODE`] (every backend gives the same bytes).
    pub fn sign_hash(&self, hash: &Hash) -> [u8; 65] {
        Backend::NODE.sign(self, hash)
    }

    /// The k256 signing key (for [`Backend::K256`]).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Loads a key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        check_permissions(path, &meta)?;
        let text = fs::read_to_string(path).map_err(io)?;
        let bad = || KeyError::BadFormat {
            path: path.to_owned(),
        };
        let text = text.trim();
        let digits = text.strip_prefix("0x").unwrap_or(text);
        let bytes: [u8; 32] = hex::decode(digits)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        Self::from_secret_bytes(&bytes)
    }

    /// Writes the key to a new file with mode 0600, creating parent directories. Never
    /// overwrites an existing file.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => io(e),
        })?;
        writeln!(file, "0x{}", hex::encode(self.secret_bytes())).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads the key at `path`, or creates and saves a new one if there is no file. The flag
    /// says whether the key was created.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let key = Self::generate();
        key.save(path)?;
        Ok((key, true))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("NodeKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path, _: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

/// The Ethereum address of a public key.
pub fn address_of_key(key: &VerifyingKey) -> Address {
    let uncompressed = key.to_encoded_point(false);
    // Skip the 0x04 SEC1 tag; the address is the last 20 bytes of the hash.
    Address::from_slice(&keccak256(&uncompressed.as_bytes()[1..])[12..])
}

/// The Ethereum address behind a libp2p peer id, if the peer uses a secp256k1 key (every Rill
/// node does; peers with other key types are never nodes).
pub fn address_of_peer(peer: &PeerId) -> Option<Address> {
    let multihash = peer.as_ref();
    // Keys this small are inlined in the peer id with the identity multihash (code 0).
    if multihash.code() != 0 {
        return None;
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let secp = public.try_into_secp256k1().ok()?;
    let key = VerifyingKey::from_sec1_bytes(&secp.to_bytes()).ok()?;
    Some(address_of_key(&key))
}
