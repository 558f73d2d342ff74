//! Integration tests of rill-protocol: hash vectors, sealing and opening, keys.

mod envelope;
mod hashing;
mod keys;
mod miniblock;
mod never_panics;
