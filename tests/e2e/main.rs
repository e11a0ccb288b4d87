//! End-to-end tests: the real server (in process, on an ephemeral port) and
//! the real `roster` binary, spoken to over gRPC on loopback, against both
//! SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::unnecessary_wraps,
    reason = "tests: a failed unwrap is a failed test"
)]

mod account;
mod auth;
mod binary;
mod harness;
mod identifiers;
mod images;
mod operations;
mod sessions;
mod sign_up;
mod users;
mod verification;
