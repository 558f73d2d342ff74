//! Integration tests of rill-protocol: hash vectors, sealing and opening, keys.

mod envelope;
mod hashing;
mod keys;
mod never_panics;
