//! The multi-cloud edge end to end: real clusters (`reelay serve`), a real `reelay edge` and the
//! nginx it supervises, all on loopback, started through the shared harness
//! ([`common::TwoClouds`]). One file per concern, each test the user story it checks:
//!
//! | module | what a user relies on |
//! |---|---|
//! | `placement` | new jobs go where they start first; draining clusters get none; the controller-less modes |
//! | `failover` | a cluster that dies or hangs, or a controller that dies, loses no accepted job |
//! | `reload` | names that move, bad configurations and reloads under load cost no request |
//! | `routing` | one API through the edge: routing by job id, streaming, merged listings, `reelay up` |
//! | `clients` | hostile and broken requests get their own JSON 4xx and move no one else's job |
//!
//! Most jobs here take their input from a URL served by a "stall" server that accepts the
//! connection and never answers: the job then holds a worker slot (running) or waits (queued)
//! without using any CPU, which makes load exactly controllable on a 2-core machine. Only the
//! routing test encodes a real (one-second, 160x120) clip.

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod failover;
mod placement;
mod reload;
mod routing;
