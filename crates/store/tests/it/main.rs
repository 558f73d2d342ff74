//! rill-store on a real sled directory.

mod crash;
mod roundtrip;
mod settle;
mod support;
