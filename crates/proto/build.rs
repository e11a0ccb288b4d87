//! Compiles `proto/roster/v1` with protox (no system protoc) and generates
//! prost messages and tonic services from the resulting descriptor set.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = root.join("proto");
    let third_party = root.join("third_party");
    let files = [
        "roster/v1/user.proto",
        "roster/v1/user_service.proto",
        "roster/v1/email_address_service.proto",
        "roster/v1/phone_number_service.proto",
        "roster/v1/session.proto",
        "roster/v1/session_service.proto",
        "roster/v1/sign_in_service.proto",
        "roster/v1/account_service.proto",
        "roster/v1/sign_up_service.proto",
        // Served by reflection so tools such as grpcurl can decode the
        // error details every Roster error carries.
        "google/rpc/error_details.proto",
        "google/rpc/status.proto",
    ];
    for dir in [&proto_dir, &third_party] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let fds = protox::compile(files, [&proto_dir, &third_party])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("roster_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
