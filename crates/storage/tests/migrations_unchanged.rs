//! A migration is never edited once it has landed: sqlx records each
//! applied migration's SHA-384 and refuses to start against a database
//! whose record differs from the file, so an edit, even to a comment,
//! stops every database migrated before it. A change goes into a new
//! migration; a new migration adds its line here.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use sha2::{Digest as _, Sha384};

/// The first eight bytes of each migration's SHA-384, in hex.
const LANDED: &[(&str, &str)] = &[
    ("postgres/0001_users.sql", "c265f9a59daa1dee"),
    ("postgres/0002_verification_codes.sql", "de8d40f7c15c3050"),
    (
        "postgres/0003_verified_uniqueness_and_send_limits.sql",
        "37e9815adac51cdc",
    ),
    ("postgres/0004_sessions.sql", "fb61c078f49b014d"),
    ("postgres/0005_lockout.sql", "365b6cdd1ef7d392"),
    ("postgres/0006_sign_ups.sql", "13f62daf263ef91a"),
    ("postgres/0007_profile_images.sql", "b7987d037fe21d59"),
    ("postgres/0008_search_terms.sql", "29c08a76d79ecf49"),
    ("postgres/0009_identifier_rows.sql", "a3e4c4a1c8bccb80"),
    ("postgres/0010_identifier_rows_kept.sql", "e6dafd4d3e5e0145"),
    ("sqlite/0001_users.sql", "dc13e15bdcde2f68"),
    ("sqlite/0002_verification_codes.sql", "d1388efaac8bd20c"),
    (
        "sqlite/0003_verified_uniqueness_and_send_limits.sql",
        "0eec5e13f1461516",
    ),
    ("sqlite/0004_sessions.sql", "743202dbbcdc0c70"),
    ("sqlite/0005_lockout.sql", "6de52fb438172ea2"),
    ("sqlite/0006_sign_ups.sql", "c9abf6f886df329e"),
    ("sqlite/0007_profile_images.sql", "b7987d037fe21d59"),
    ("sqlite/0008_search_index_on_change.sql", "60928144a73963cc"),
    ("sqlite/0009_search_index_by_store.sql", "b6f47dbad96d6d0b"),
    ("sqlite/0010_search_terms.sql", "09da791d942ee942"),
    ("sqlite/0011_identifier_rows.sql", "86a538f5312bd6a3"),
];

#[test]
fn landed_migrations_are_unchanged_and_each_is_listed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut on_disk = Vec::new();
    for backend in ["postgres", "sqlite"] {
        for entry in std::fs::read_dir(root.join(backend)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if std::path::Path::new(&name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
            {
                on_disk.push(format!("{backend}/{name}"));
            }
        }
    }
    on_disk.sort();
    let listed: Vec<String> = LANDED.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(on_disk, listed, "a new migration adds its line to LANDED");
    for (file, pinned) in LANDED {
        let digest = Sha384::digest(std::fs::read(root.join(file)).unwrap());
        let hex = hex::encode(&digest[..8]);
        assert_eq!(
            &hex, pinned,
            "{file} was edited after it landed: databases it migrated would refuse to start"
        );
    }
}
