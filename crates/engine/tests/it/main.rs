//! rill-engine: one test per rule, behaviour tests over a few engines, and the seeded
//! simulation.

mod behaviour;
mod candidates;
mod liveness;
mod loading;
mod policy;
mod rules;
mod sim;
mod support;
mod three;
