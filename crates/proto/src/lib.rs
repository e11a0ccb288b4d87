//! Roster's contract, `roster.v1`: the code generated from
//! `proto/roster/v1` (prost messages, tonic clients and servers), the
//! descriptor set for server reflection, and the conversions between
//! protobuf messages and the domain.
//!
//! Conversions live here (the orphan rule puts them next to the generated
//! types). Request parsing turns a whole request into validated domain
//! values at once, collecting every bad field, so handlers never touch raw
//! proto fields after their first line.

pub mod convert;

/// Generated `roster.v1` messages and services.
pub mod v1 {
    #![allow(clippy::pedantic, clippy::doc_markdown, missing_docs)]
    tonic::include_proto!("roster.v1");
}

/// The encoded `FileDescriptorSet` of `roster.v1` and everything it
/// imports, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/roster_descriptor.bin"));
