//! Bindings generated from the committed artifact `protocol/contracts/RillRegistry.json`
//! (see `protocol/contracts/build.mjs`).

#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    RillRegistry,
    "../../protocol/contracts/RillRegistry.json"
);
