//! Generated protobuf types of package `rill.v1` (see `protocol/proto/rill/v1`).

#![allow(missing_docs, unreachable_pub, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/rill.v1.rs"));
