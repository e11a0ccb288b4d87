//! The contract every [`UserStore`] backend must pass.
//!
//! Each function takes a fresh, empty store. Backends instantiate the whole
//! suite with [`contract_suite!`](crate::contract_suite), passing an async
//! function that makes a [`Fixture`]; a feature is done when it passes on
//! every backend.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "a test suite: a failed unwrap is a failed test"
)]

use std::collections::HashSet;
use std::sync::Arc;

use roster_domain::{
    AttemptOutcome, Channel, CodeKey, CodePolicy, DomainError, Email, ExternalId, IdentificationId,
    Metadata, MetadataKind, Name, NewIdentifiers, NewUser, Password, Phone, ProfileChange, Session,
    SessionActivity, SessionStatus, Timestamp, User, UserId, UserRecord, Username,
    VerificationCode, reason,
};
use serde_json::json;

use crate::query::ListQuery;
use crate::{SessionQuery, StoredKey};
use crate::{StorageError, UserStore, list_page};
use roster_domain::query::{OrderBy, OrderField, UserFilter};

/// A fresh store and whatever must live as long as it (a temporary
/// directory, a database to drop).
pub struct Fixture {
    pub store: Arc<dyn crate::Store>,
    pub keep: Box<dyn std::any::Any + Send>,
}

/// Instantiates every contract test for a backend. `$make` is an async
/// function returning a [`Fixture`] with a fresh store.
#[macro_export]
macro_rules! contract_suite {
    ($make:path) => {
        $crate::contract_suite!(@tests $make;
            create_and_get_round_trips,
            get_missing_is_none,
            identifiers_are_unique_across_users,
            concurrent_creators_of_one_identifier_one_wins,
            update_writes_what_changed,
            rejected_update_changes_nothing,
            conflicting_update_changes_nothing,
            concurrent_updates_are_not_lost,
            concurrent_identifier_changes_see_each_other,
            update_of_missing_user_is_not_found,
            verification_codes_round_trip,
            profile_images_round_trip,
            only_verified_identifiers_are_unique,
            sessions_round_trip_and_list_by_status,
            a_ban_revokes_sessions_and_a_sign_in_completes_once,
            signing_keys_round_trip,
            sign_ups_round_trip_and_complete_once,
            delete_removes_everything,
            filters_select_the_right_users,
            every_order_pages_like_sorting_in_memory,
            query_matches_substrings_literally,
            bulk_insert_writes_every_user_or_none,
            query_pages_match_filtering_in_memory,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make().await;
                $crate::contract::$name(fixture.store.clone()).await;
                drop(fixture);
            }
        )*
    };
}

const T0: i64 = 1_700_000_000_000;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset)
}

/// A user with the given verified identifiers, created at `T0 + offset`.
pub fn new_user(emails: &[&str], phones: &[&str], username: Option<&str>, offset: i64) -> User {
    User::create(
        NewUser {
            identifiers: NewIdentifiers {
                emails: emails.iter().map(|e| Email::parse(e).unwrap()).collect(),
                phones: phones.iter().map(|p| Phone::parse(p).unwrap()).collect(),
                verified: true,
            },
            username: username.map(|u| Username::parse(u).unwrap()),
            ..NewUser::default()
        },
        at(offset),
    )
    .unwrap()
}

/// A new user's record with one email address, verified or not, and a
/// username, created at `T0 + offset`.
pub fn new_record(email: &str, verified: bool, username: &str, offset: i64) -> UserRecord {
    let user = User::create(
        NewUser {
            identifiers: NewIdentifiers {
                emails: vec![Email::parse(email).unwrap()],
                phones: Vec::new(),
                verified,
            },
            username: Some(Username::parse(username).unwrap()),
            ..NewUser::default()
        },
        at(offset),
    )
    .unwrap();
    UserRecord::new(user, None)
}

/// Polls `done` every 10 ms until it holds; panics after ten seconds.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Group commit, as every backend with a queue of inserts must keep it
/// (see [`crate::group_commit`]): four groups of inserts, each waiting for
/// one turn together, succeed and fail one by one as each insert would
/// alone. `queue(tag, records)` makes `records` wait together, in order,
/// behind `blockers` inserts of its own (named after `tag`) that take
/// every turn first, and returns each record's outcome: the field of its
/// conflict, `None` when it was inserted.
pub async fn waiting_groups_succeed_and_fail_alone<S>(
    store: &S,
    blockers: u64,
    queue: impl AsyncFn(&str, &[UserRecord]) -> Vec<Option<String>>,
) where
    S: UserStore + crate::exec::SqlDatabase,
{
    let user = |email: &str, username: &str, offset| new_record(email, true, username, offset);
    let stats = || store.group_commit().unwrap().stats();
    store
        .insert_user(&user("taken@example.com", "taken", 0))
        .await
        .unwrap();
    let loose = new_record("loose@example.com", false, "loose", 1);
    store.insert_user(&loose).await.unwrap();
    let mut expected = crate::group_commit::GroupCommitStats {
        transactions: 2,
        inserts: 2,
        alone: 0,
    };
    assert_eq!(stats(), expected);
    // The blockers, then one group, of which `alone` ran alone.
    let mut grouped = |records: usize, alone: u64| {
        expected.transactions += blockers + 1;
        expected.inserts += blockers + records as u64;
        expected.alone += alone;
        expected
    };
    let conflict = |f: &str| Some(f.to_owned());

    // Nothing stands in the way: they go in at once.
    let clean: Vec<UserRecord> = (0..5)
        .map(|i| {
            user(
                &format!("clean{i}@example.com"),
                &format!("clean{i}"),
                10 + i,
            )
        })
        .collect();
    assert_eq!(queue("a", &clean).await, vec![None; 5]);
    assert_eq!(stats(), grouped(5, 0));

    // A username the store holds, and one an earlier insert of the group
    // takes: the group is refused, and each insert runs alone.
    let refused = [
        user("alice@example.com", "alice", 20),
        user("bob@example.com", "taken", 21),
        user("erin@example.com", "erin", 22),
        user("frank@example.com", "erin", 23),
    ];
    assert_eq!(
        queue("b", &refused).await,
        [None, conflict("username"), None, conflict("username")]
    );
    assert_eq!(stats(), grouped(4, 4));

    // Other users hold the addresses: an unverified copy of a verified
    // one, and a verified one. Nothing of the group is inserted; alone,
    // one insert takes the address from its holder, the other is refused.
    let held = [
        user("judy@example.com", "judy", 30),
        user("loose@example.com", "karl", 31),
        user("taken@example.com", "grace", 32),
    ];
    assert_eq!(
        queue("c", &held).await,
        [None, None, conflict("email_address")]
    );
    assert_eq!(stats(), grouped(3, 3));
    let loose_now = store.get_user(&loose.user.id).await.unwrap().unwrap();
    assert!(loose_now.email_addresses.is_empty());

    // Two inserts of one group name the same address: they settle it
    // between them one after the other, the verified one keeping it.
    let shared = [
        new_record("shared@example.com", false, "heidi", 40),
        user("shared@example.com", "ivan", 41),
        user("mallory@example.com", "mallory", 42),
    ];
    assert_eq!(queue("d", &shared).await, [None, None, None]);
    assert_eq!(stats(), grouped(3, 3));
    let heidi = store.get_user(&shared[0].user.id).await.unwrap().unwrap();
    assert!(heidi.email_addresses.is_empty());

    // What was inserted is whole; what was refused left nothing behind.
    let outcomes = clean
        .iter()
        .map(|r| (r, true))
        .chain(refused.iter().zip([true, false, true, false]))
        .chain(held.iter().zip([true, true, false]))
        .chain(shared[1..].iter().map(|r| (r, true)));
    for (record, kept) in outcomes {
        let stored = store.get_user(&record.user.id).await.unwrap();
        if kept {
            assert_eq!(stored.as_ref(), Some(&record.user));
        } else {
            assert!(stored.is_none(), "{:?}", record.user.username);
        }
    }
    // 2 + 5 + 2 + 2 + 3 from the groups, and the blockers.
    assert_eq!(
        store.count_users(&UserFilter::default()).await.unwrap(),
        14 + 4 * blockers
    );
    for (query, users) in [
        ("clean3@example", 1),
        ("clean", 5),
        ("erin", 1),
        ("frank", 0),
        ("taken", 1),
        ("shared@", 1),
        ("heidi", 1),
        ("mallory@", 1),
    ] {
        assert_eq!(matching(store, query).await, users, "{query}");
    }
}

async fn insert(store: &dyn UserStore, user: &User) {
    store
        .insert_user(&UserRecord::new(user.clone(), None))
        .await
        .unwrap();
}

fn conflict_field(result: Result<impl std::fmt::Debug, StorageError>) -> String {
    match result {
        Err(StorageError::Conflict { field }) => field,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub async fn create_and_get_round_trips(store: Arc<dyn UserStore>) {
    let mut user = new_user(
        &["Ada@Example.com", "ada2@example.com"],
        &["+14155550101"],
        Some("Ada.L"),
        0,
    );
    user.first_name = Name::parse("Ada").unwrap();
    user.last_name = Name::parse("Lovelace").unwrap();
    user.external_id = ExternalId::parse("ext-1").unwrap();
    user.locale = roster_domain::Locale::parse("en-GB").unwrap();
    user.public_metadata = Metadata::parse(
        json!({"role": "admin", "n": 1, "f": 1.5, "nested": {"a": [1, "x", null]}}),
    )
    .unwrap();
    user.private_metadata = Metadata::parse(json!({"stripe": "cus_1"})).unwrap();
    user.unsafe_metadata = Metadata::parse(json!({"theme": "dark"})).unwrap();
    user.banned = true;
    user.last_sign_in_at = Some(at(5));
    let hash = Password::parse("correct horse").unwrap().hash();
    store
        .insert_user(&UserRecord::new(user.clone(), Some(hash.clone())))
        .await
        .unwrap();

    let loaded = store.get_user(&user.id).await.unwrap().unwrap();
    let mut expected = user.clone();
    expected.password_enabled = true;
    assert_eq!(loaded, expected);
    let record = store.get_record(&user.id).await.unwrap().unwrap();
    assert_eq!(record.password_hash(), Some(&hash));
    assert!(record.password_hash().unwrap().verify("correct horse"));
    assert_eq!(
        store
            .find_identification_owner(&user.phone_numbers[0].id)
            .await
            .unwrap(),
        Some(user.id.clone())
    );
}

pub async fn get_missing_is_none(store: Arc<dyn UserStore>) {
    store.ping().await.unwrap();
    let id = UserId::generate(at(0));
    assert!(store.get_user(&id).await.unwrap().is_none());
    assert!(store.get_record(&id).await.unwrap().is_none());
    assert!(store.delete_user(&id).await.unwrap().is_none());
    assert!(
        store
            .find_identification_owner(&IdentificationId::generate(at(0)))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn identifiers_are_unique_across_users(store: Arc<dyn UserStore>) {
    let mut first = new_user(&["taken@example.com"], &["+14155550101"], Some("taken"), 0);
    first.external_id = ExternalId::parse("ext-taken").unwrap();
    insert(store.as_ref(), &first).await;

    let same_email = new_user(&["TAKEN@example.com"], &[], None, 1);
    assert_eq!(
        conflict_field(store.insert_user(&UserRecord::new(same_email, None)).await),
        "email_address"
    );
    let same_phone = new_user(&[], &["+1 415 555 0101"], None, 1);
    assert_eq!(
        conflict_field(store.insert_user(&UserRecord::new(same_phone, None)).await),
        "phone_number"
    );
    let same_username = new_user(&[], &[], Some("TAKEN"), 1);
    assert_eq!(
        conflict_field(
            store
                .insert_user(&UserRecord::new(same_username, None))
                .await
        ),
        "username"
    );
    let mut same_external = new_user(&["other@example.com"], &[], None, 1);
    same_external.external_id = ExternalId::parse("ext-taken").unwrap();
    assert_eq!(
        conflict_field(
            store
                .insert_user(&UserRecord::new(same_external, None))
                .await
        ),
        "external_id"
    );

    // Nothing of the refused users was written.
    assert_eq!(store.count_users(&UserFilter::default()).await.unwrap(), 1);
    let other = new_user(&["other@example.com"], &[], None, 2);
    insert(store.as_ref(), &other).await;
}

pub async fn concurrent_creators_of_one_identifier_one_wins(store: Arc<dyn UserStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let user = new_user(&["race@example.com"], &[], None, i);
                store.insert_user(&UserRecord::new(user, None)).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StorageError::Conflict { field }) => assert_eq!(field, "email_address"),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.count_users(&UserFilter::default()).await.unwrap(), 1);
}

pub async fn update_writes_what_changed(store: Arc<dyn UserStore>) {
    let user = new_user(
        &["a@example.com", "b@example.com"],
        &["+14155550101"],
        None,
        0,
    );
    insert(store.as_ref(), &user).await;
    let (first_email, second_email) = (
        user.email_addresses[0].id.clone(),
        user.email_addresses[1].id.clone(),
    );
    let phone = user.phone_numbers[0].id.clone();
    let hash = Password::parse("new password").unwrap().hash();
    let hash2 = hash.clone();
    let updated = store
        .update_user(
            &user.id,
            Box::new(move |record| {
                let now = at(10);
                let u = &mut record.user;
                u.set_profile(
                    ProfileChange {
                        first_name: Some(Name::parse("Grace").unwrap()),
                        ..ProfileChange::default()
                    },
                    now,
                );
                u.set_primary_email(Some(&second_email), now)?;
                u.remove_email(&first_email, now)?;
                u.add_email(Email::parse("c@example.com").unwrap(), false, false, now)?;
                u.set_phone_reserved(&phone, true, now)?;
                u.merge_metadata(
                    vec![(
                        MetadataKind::Private,
                        Metadata::parse(json!({"k": 1})).unwrap(),
                    )],
                    now,
                )?;
                u.set_banned(true, now);
                record.set_password(Some(hash2), now);
                Ok(())
            }),
        )
        .await
        .unwrap();
    let loaded = store.get_user(&user.id).await.unwrap().unwrap();
    assert_eq!(loaded, updated);
    assert_eq!(loaded.first_name.as_ref().map(Name::as_str), Some("Grace"));
    assert_eq!(loaded.email_addresses.len(), 2);
    assert_eq!(
        loaded.primary_email().unwrap().email.as_str(),
        "b@example.com"
    );
    assert!(
        loaded.phone_numbers[0].reserved_for_second_factor
            && loaded.phone_numbers[0].default_second_factor
    );
    assert!(loaded.banned && loaded.password_enabled);
    assert_eq!(loaded.updated_at, at(10));
    assert_eq!(
        store
            .get_record(&user.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash(),
        Some(&hash)
    );
    // Search follows the change.
    let q = |text: &str| UserFilter {
        query: Some(text.into()),
        ..UserFilter::default()
    };
    assert_eq!(
        ids(store.as_ref(), q("grace")).await,
        HashSet::from([user.id.clone()])
    );
    assert_eq!(
        ids(store.as_ref(), q("c@example")).await,
        HashSet::from([user.id.clone()])
    );
    assert!(ids(store.as_ref(), q("a@example")).await.is_empty());
    // The removed address is free for another user.
    insert(store.as_ref(), &new_user(&["a@example.com"], &[], None, 11)).await;
    // Ordering by primary email follows the change.
    let page = list_page(
        store.as_ref(),
        ListQuery::new(
            UserFilter::default(),
            OrderBy::parse("email_address").unwrap(),
            10,
            "",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(page.users[1].id, user.id);
}

pub async fn rejected_update_changes_nothing(store: Arc<dyn UserStore>) {
    let user = new_user(&["a@example.com"], &[], None, 0);
    insert(store.as_ref(), &user).await;
    let only = user.email_addresses[0].id.clone();
    let err = store
        .update_user(
            &user.id,
            Box::new(move |record| {
                record.user.set_banned(true, at(1));
                record.user.remove_email(&only, at(1))
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Rejected(DomainError::FailedPrecondition { reason: r, .. }) if r == reason::LAST_IDENTIFIER)
    );
    assert_eq!(store.get_user(&user.id).await.unwrap().unwrap(), user);
}

/// A change tried several times.
type ChangeFn = Box<dyn Fn(&mut UserRecord) -> Result<(), DomainError> + Send + Sync>;

pub async fn conflicting_update_changes_nothing(store: Arc<dyn UserStore>) {
    let owner = new_user(&["owner@example.com"], &["+14155550101"], Some("owner"), 0);
    let user = new_user(&["a@example.com"], &[], None, 1);
    insert(store.as_ref(), &owner).await;
    insert(store.as_ref(), &user).await;
    let cases: Vec<(&str, ChangeFn)> = vec![
        (
            "email_address",
            Box::new(|r| {
                r.user
                    .add_email(
                        Email::parse("OWNER@example.com").unwrap(),
                        true,
                        false,
                        at(2),
                    )
                    .map(drop)
            }),
        ),
        (
            "phone_number",
            Box::new(|r| {
                r.user
                    .add_phone(
                        Phone::parse("+14155550101").unwrap(),
                        true,
                        false,
                        false,
                        at(2),
                    )
                    .map(drop)
            }),
        ),
        (
            "username",
            Box::new(|r| {
                r.user
                    .set_username(Some(Username::parse("Owner").unwrap()), at(2))
            }),
        ),
    ];
    for (field, change) in cases {
        let err = store
            .update_user(
                &user.id,
                Box::new(move |record| {
                    record.user.set_locked(true, at(2));
                    change(record)
                }),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::Conflict { field: f } if f == field),
            "{field}: {err:?}"
        );
        assert_eq!(store.get_user(&user.id).await.unwrap().unwrap(), user);
    }
}

pub async fn concurrent_updates_are_not_lost(store: Arc<dyn UserStore>) {
    let user = new_user(&["a@example.com"], &[], None, 0);
    insert(store.as_ref(), &user).await;
    update_concurrently(&store, &user.id, 10, |i, record| {
        let count = record
            .user
            .private_metadata
            .as_map()
            .get("count")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let patch = Metadata::parse(json!({ "count": count + 1, format!("k{i}"): i })).unwrap();
        record
            .user
            .merge_metadata(vec![(MetadataKind::Private, patch)], at(1))
    })
    .await;
    let loaded = store.get_user(&user.id).await.unwrap().unwrap();
    assert_eq!(
        loaded.private_metadata.as_map().get("count"),
        Some(&json!(10))
    );
    assert_eq!(loaded.private_metadata.as_map().len(), 11);
}

/// Applies `n` mutations to one user at once, the `i`th made by
/// `mutation(i, …)`; each must succeed.
async fn update_concurrently(
    store: &Arc<dyn UserStore>,
    id: &UserId,
    n: usize,
    mutation: fn(usize, &mut UserRecord) -> Result<(), roster_domain::DomainError>,
) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .update_user(&id, Box::new(move |record| mutation(i, record)))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

pub async fn update_of_missing_user_is_not_found(store: Arc<dyn UserStore>) {
    let err = store
        .update_user(&UserId::generate(at(0)), Box::new(|_| Ok(())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Rejected(DomainError::NotFound { .. })),
        "{err:?}"
    );
}

pub async fn verification_codes_round_trip(store: Arc<dyn UserStore>) {
    let mut user = new_user(&["a@example.com"], &["+14155550101"], None, 0);
    user.email_addresses[0].verification = roster_domain::Verification::unverified();
    user.primary_email_address_id = None;
    insert(store.as_ref(), &user).await;
    let (key, policy) = (CodeKey::generate(), CodePolicy::default());
    let (email, phone) = (
        user.email_addresses[0].id.clone(),
        user.phone_numbers[0].id.clone(),
    );
    let code = VerificationCode::parse("123456").unwrap();
    let wrong = VerificationCode::parse("654321").unwrap();
    let (k, e) = (key.clone(), email.clone());
    let prepared = store
        .update_user(
            &user.id,
            Box::new(move |r| {
                r.prepare_verification(Channel::Email, &e, k.hash(&e, &code), &policy, at(1))?;
                r.lockout = roster_domain::Lockout {
                    failed_attempts: 3,
                    locked_until: Some(at(99)),
                };
                let outcome =
                    r.user
                        .attempt_verification(Channel::Email, &e, &wrong, &k, &policy, at(2))?;
                assert_eq!(outcome, AttemptOutcome::Incorrect { attempts_left: 4 });
                Ok(())
            }),
        )
        .await
        .unwrap();
    // The pending code (hash and send time), the attempt count and the
    // send counters persist.
    let record = store.get_record(&user.id).await.unwrap().unwrap();
    let loaded = record.user;
    assert_eq!(loaded, prepared);
    let v = &loaded.email(&email).unwrap().verification;
    let one_send = roster_domain::SendWindow {
        started_at: at(1),
        count: 1,
    };
    assert_eq!((v.sends, record.code_sends), (one_send, one_send));
    assert_eq!(
        (record.lockout.failed_attempts, record.lockout.locked_until),
        (3, Some(at(99)))
    );
    assert_eq!((v.attempts, v.expire_at), (1, Some(at(1 + policy.ttl_ms))));
    assert_eq!(v.code.as_ref().unwrap().sent_at, at(1));
    assert!(key.matches(
        &v.code.as_ref().unwrap().hash,
        &email,
        &VerificationCode::parse("123456").unwrap()
    ));
    // The hash is bound to the identifier it was sent to.
    assert!(!key.matches(
        &v.code.as_ref().unwrap().hash,
        &phone,
        &VerificationCode::parse("123456").unwrap()
    ));
}

pub async fn profile_images_round_trip(store: Arc<dyn UserStore>) {
    let user = new_user(&["pic@example.com"], &[], None, 0);
    insert(store.as_ref(), &user).await;
    let image = roster_domain::ProfileImage {
        id: roster_domain::ImageId::generate(at(1)),
        format: roster_domain::ImageFormat::Webp,
    };
    let set = image.clone();
    let updated = store
        .update_user(
            &user.id,
            Box::new(move |r| {
                assert_eq!(r.user.set_image(set, at(1)), None);
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.image.as_ref(), Some(&image));
    let read = store.get_user(&user.id).await.unwrap().unwrap();
    assert_eq!(read, updated);
    assert!(read.has_image());
    // The deleted user carries the image, so its object can be removed.
    let deleted = store.delete_user(&user.id).await.unwrap().unwrap();
    assert_eq!(deleted.image, Some(image));
}

pub async fn delete_removes_everything(store: Arc<dyn UserStore>) {
    let user = new_user(&["a@example.com"], &["+14155550101"], Some("ada_l"), 0);
    let keep = new_user(&["keep@example.com"], &[], None, 1);
    insert(store.as_ref(), &user).await;
    insert(store.as_ref(), &keep).await;
    let deleted = store.delete_user(&user.id).await.unwrap().unwrap();
    assert_eq!(deleted, user);
    assert!(store.get_user(&user.id).await.unwrap().is_none());
    assert!(
        store
            .find_identification_owner(&user.email_addresses[0].id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_identification_owner(&user.phone_numbers[0].id)
            .await
            .unwrap()
            .is_none()
    );
    // Every identifier is free again, and the other user is untouched.
    let again = new_user(&["a@example.com"], &["+14155550101"], Some("ada_l"), 2);
    insert(store.as_ref(), &again).await;
    let q = UserFilter {
        query: Some("ada_l".into()),
        ..UserFilter::default()
    };
    assert_eq!(
        ids(store.as_ref(), q).await,
        HashSet::from([again.id.clone()])
    );
    assert_eq!(store.get_user(&keep.id).await.unwrap().unwrap(), keep);
}

async fn ids(store: &dyn UserStore, filter: UserFilter) -> HashSet<UserId> {
    let count = store.count_users(&filter).await.unwrap();
    let page = list_page(
        store,
        ListQuery::new(filter, OrderBy::default(), 500, "").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(page.users.len() as u64, count, "count and list agree");
    page.users.into_iter().map(|u| u.id).collect()
}

pub async fn filters_select_the_right_users(store: Arc<dyn UserStore>) {
    let mut a = new_user(&["alice@example.com"], &["+14155550101"], Some("alice"), 0);
    a.external_id = ExternalId::parse("ext-a").unwrap();
    let mut b = new_user(
        &["bob@example.org", "bobby@example.org"],
        &[],
        Some("Bob_B"),
        10,
    );
    b.banned = true;
    let c = new_user(&["carol@example.net"], &["+442079460958"], None, 20);
    for u in [&a, &b, &c] {
        insert(store.as_ref(), u).await;
    }
    let set = |users: &[&User]| users.iter().map(|u| u.id.clone()).collect::<HashSet<_>>();
    let s = store.as_ref();
    assert_eq!(ids(s, UserFilter::default()).await, set(&[&a, &b, &c]));
    assert_eq!(
        ids(
            s,
            UserFilter {
                user_ids: vec![a.id.clone(), c.id.clone()],
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&a, &c])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                email_addresses: vec!["bobby@example.org".into(), "nobody@x.io".into()],
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&b])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                phone_numbers: vec![Phone::parse("+44 20 7946 0958").unwrap()],
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&c])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                usernames: vec!["bob_b".into(), "alice".into()],
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&a, &b])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                external_ids: vec!["ext-a".into()],
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&a])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                banned: Some(true),
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&b])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                banned: Some(false),
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&a, &c])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                created_after: Some(at(10)),
                created_before: Some(at(20)),
                ..UserFilter::default()
            }
        )
        .await,
        set(&[&b])
    );
    assert_eq!(
        ids(
            s,
            UserFilter {
                usernames: vec!["alice".into()],
                banned: Some(true),
                ..UserFilter::default()
            }
        )
        .await,
        set(&[])
    );
}

/// A user to sort: emails, username, first name, last sign-in offset.
type Spec<'a> = (&'a [&'a str], Option<&'a str>, Option<&'a str>, Option<i64>);

pub async fn every_order_pages_like_sorting_in_memory(store: Arc<dyn UserStore>) {
    // Duplicate and absent sort values on purpose: ties must break by id.
    let specs: [Spec; 7] = [
        (&["m@example.com"], Some("zed_z"), Some("Bea"), Some(5)),
        (&["a@example.com"], None, Some("Bea"), None),
        (&["z@example.com"], Some("Amy_a"), None, Some(5)),
        (&[], Some("mid_user"), Some("Al"), Some(1)),
        (&["b@example.com"], Some("bob1"), None, None),
        (&["c@example.com"], Some("carl"), Some("Cy"), Some(9)),
        (&["d@example.com"], Some("dan.d"), Some("al"), Some(3)),
    ];
    let mut users = Vec::new();
    for (i, (emails, username, first, signed_in)) in specs.into_iter().enumerate() {
        let offset = i64::try_from(i).unwrap() / 2; // shared created_at values
        let mut u = new_user(emails, &[], username, offset);
        u.first_name = first.map(|f| Name::parse(f).unwrap().unwrap());
        u.last_name = first.map(|f| Name::parse(&format!("{f}son")).unwrap().unwrap());
        u.last_sign_in_at = signed_in.map(at);
        u.updated_at = at(100 - offset);
        insert(store.as_ref(), &u).await;
        users.push(u);
    }
    let fields = [
        OrderField::CreatedAt,
        OrderField::UpdatedAt,
        OrderField::LastSignInAt,
        OrderField::EmailAddress,
        OrderField::Username,
        OrderField::FirstName,
        OrderField::LastName,
    ];
    for field in fields {
        for descending in [false, true] {
            let order = OrderBy { field, descending };
            let mut expected = users.clone();
            expected.sort_by(|x, y| {
                let ord = match (field.value_of(x), field.value_of(y)) {
                    (crate::SortValue::Int(a), crate::SortValue::Int(b)) => a.cmp(&b),
                    // The stores compare text bytewise (C collation).
                    (crate::SortValue::Text(a), crate::SortValue::Text(b)) => {
                        a.as_bytes().cmp(b.as_bytes())
                    }
                    mixed => panic!("one field sorts on one kind of value: {mixed:?}"),
                }
                .then_with(|| x.id.cmp(&y.id));
                if descending { ord.reverse() } else { ord }
            });
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let query = ListQuery::new(UserFilter::default(), order, 2, &token).unwrap();
                let page = list_page(store.as_ref(), query).await.unwrap();
                assert!(page.users.len() <= 2);
                seen.extend(page.users.into_iter().map(|u| u.id));
                match page.next_page_token {
                    Some(next) => token = next,
                    None => break,
                }
            }
            let expected: Vec<UserId> = expected.into_iter().map(|u| u.id).collect();
            assert_eq!(seen, expected, "order {order:?}");
        }
    }
}

pub async fn query_matches_substrings_literally(store: Arc<dyn UserStore>) {
    let mut a = new_user(
        &["ada.lovelace@example.com"],
        &["+14155550101"],
        Some("countess"),
        0,
    );
    a.first_name = Name::parse("Ada").unwrap();
    a.external_id = ExternalId::parse("CRM_100%").unwrap();
    let mut b = new_user(
        &["grace@example.org"],
        &["+442079460958"],
        Some("amazing_grace"),
        1,
    );
    b.last_name = Name::parse("Hopper").unwrap();
    insert(store.as_ref(), &a).await;
    insert(store.as_ref(), &b).await;
    let q = |text: &str| UserFilter {
        query: Some(text.to_lowercase()),
        ..UserFilter::default()
    };
    let set = |users: &[&User]| users.iter().map(|u| u.id.clone()).collect::<HashSet<_>>();
    let s = store.as_ref();
    assert_eq!(ids(s, q("LOVELACE")).await, set(&[&a]));
    assert_eq!(ids(s, q("hopp")).await, set(&[&b]));
    assert_eq!(ids(s, q("example")).await, set(&[&a, &b]));
    assert_eq!(ids(s, q("+44207")).await, set(&[&b]));
    assert_eq!(ids(s, q("COUNT")).await, set(&[&a]));
    assert_eq!(ids(s, q("100%")).await, set(&[&a]));
    assert_eq!(ids(s, q("m_1")).await, set(&[&a]));
    assert_eq!(ids(s, q("%")).await, set(&[&a]));
    assert_eq!(ids(s, q("g_ace")).await, set(&[]));
    assert_eq!(ids(s, q(&b.id.as_str()[5..20])).await, set(&[&b]));

    // The index follows a changed search text, and a write that leaves the
    // text as it was leaves the user findable.
    s.update_user(
        &a.id,
        Box::new(|r| {
            r.user.username = Some(Username::parse("duchess").unwrap());
            Ok(())
        }),
    )
    .await
    .unwrap();
    assert_eq!(ids(s, q("duchess")).await, set(&[&a]));
    assert_eq!(ids(s, q("countess")).await, set(&[]));
    s.update_user(
        &a.id,
        Box::new(|r| {
            r.user.public_metadata = Metadata::from_json_text(r#"{"plan":"pro"}"#).unwrap();
            Ok(())
        }),
    )
    .await
    .unwrap();
    assert_eq!(ids(s, q("duchess")).await, set(&[&a]));
    assert_eq!(ids(s, q("lovelace")).await, set(&[&a]));
}

/// How many users the `query` filter matches.
pub async fn matching(store: &dyn UserStore, query: &str) -> u64 {
    store
        .count_users(&UserFilter {
            query: Some(query.into()),
            ..UserFilter::default()
        })
        .await
        .unwrap()
}

/// The user `id` once it has the unverified email address `email` too,
/// added a millisecond after its last change.
pub async fn with_email_added(store: &dyn UserStore, id: &UserId, email: &str) -> User {
    let email = Email::parse(email).unwrap();
    store
        .update_user(
            id,
            Box::new(move |r| {
                let now = Timestamp::from_millis(r.user.updated_at.as_millis() + 1);
                r.user.add_email(email, false, false, now).map(drop)
            }),
        )
        .await
        .unwrap()
}

/// A user whose identifiers are all unverified.
fn unverified_user(emails: &[&str], phones: &[&str], offset: i64) -> User {
    let mut user = new_user(emails, phones, None, offset);
    for e in &mut user.email_addresses {
        e.verification = roster_domain::Verification::unverified();
    }
    for p in &mut user.phone_numbers {
        p.verification = roster_domain::Verification::unverified();
    }
    user.primary_email_address_id = None;
    user.primary_phone_number_id = None;
    user
}

pub async fn only_verified_identifiers_are_unique(store: Arc<dyn UserStore>) {
    // Unverified copies neither block each other nor are claimed on insert.
    let holder = new_user(&["mine@example.com"], &[], None, 0);
    let mut holder = holder;
    let shared = unverified_user(&["Shared@example.com"], &["+14155550199"], 0);
    holder
        .email_addresses
        .push(shared.email_addresses[0].clone());
    insert(store.as_ref(), &holder).await;
    let lone = unverified_user(&["shared@EXAMPLE.com"], &[], 1);
    insert(store.as_ref(), &lone).await;
    let phone_only = unverified_user(&[], &["+1 415 555 0199"], 2);
    insert(store.as_ref(), &phone_only).await;

    // A third user verifies the address and the number: every unverified
    // copy elsewhere goes in the same transaction.
    let claimer = unverified_user(&["SHARED@example.com"], &["+14155550199"], 3);
    insert(store.as_ref(), &claimer).await;
    let (email, phone) = (
        claimer.email_addresses[0].id.clone(),
        claimer.phone_numbers[0].id.clone(),
    );
    let verified = store
        .update_user(
            &claimer.id,
            Box::new(move |r| {
                r.user.set_email_verified(&email, true, at(4))?;
                r.user.set_phone_verified(&phone, true, at(4))
            }),
        )
        .await
        .unwrap();
    assert!(verified.email_addresses[0].verification.is_verified());
    let holder_now = store.get_user(&holder.id).await.unwrap().unwrap();
    assert_eq!(
        holder_now
            .email_addresses
            .iter()
            .map(|e| e.email.as_str())
            .collect::<Vec<_>>(),
        ["mine@example.com"],
        "the unverified copy went, the verified address stayed"
    );
    assert_eq!(holder_now.updated_at, at(4));
    // A user whose only identifier was claimed is left without any.
    let lone_now = store.get_user(&lone.id).await.unwrap().unwrap();
    assert!(lone_now.email_addresses.is_empty() && lone_now.phone_numbers.is_empty());
    assert!(
        store
            .get_user(&phone_only.id)
            .await
            .unwrap()
            .unwrap()
            .phone_numbers
            .is_empty()
    );
    // Search follows: only the claimer matches the address now.
    assert_eq!(matching(store.as_ref(), "shared@").await, 1);

    // Once verified, the address blocks unverified copies too, on insert
    // and on update, and nothing of the refused change is written.
    let late = unverified_user(&["shared@example.com"], &["+14155550142"], 5);
    assert_eq!(
        conflict_field(
            store
                .insert_user(&UserRecord::new(late.clone(), None))
                .await
        ),
        "email_address"
    );
    assert_eq!(store.get_user(&late.id).await.unwrap(), None);
    assert_eq!(
        matching(store.as_ref(), "14155550142").await,
        0,
        "the refused user's phone number was not kept"
    );
    assert_eq!(
        conflict_field(
            store
                .update_user(
                    &holder.id,
                    Box::new(|r| {
                        r.user.add_phone(
                            Phone::parse("+14155550199").unwrap(),
                            false,
                            false,
                            false,
                            at(6),
                        )?;
                        Ok(())
                    }),
                )
                .await
        ),
        "phone_number"
    );
    assert_eq!(
        store.get_user(&holder.id).await.unwrap().unwrap(),
        holder_now
    );

    // A user created with a verified identifier claims it from the users
    // holding it unverified, in the same transaction.
    let waiting = unverified_user(&["later@example.com"], &[], 7);
    insert(store.as_ref(), &waiting).await;
    let newcomer = new_user(&["Later@example.com"], &[], None, 8);
    insert(store.as_ref(), &newcomer).await;
    let waiting_now = store.get_user(&waiting.id).await.unwrap().unwrap();
    assert!(waiting_now.email_addresses.is_empty());
    assert_eq!(waiting_now.updated_at, at(8));
    let newcomer_now = store.get_user(&newcomer.id).await.unwrap().unwrap();
    assert!(newcomer_now.email_addresses[0].verification.is_verified());
}

fn session_for(user: &User, offset: i64, lifetime_ms: i64) -> Session {
    Session::start(
        user.id.clone(),
        SessionActivity {
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0".into()),
            browser_name: Some("Firefox".into()),
            browser_version: Some("120.0".into()),
            device_type: Some("desktop".into()),
            is_mobile: false,
        },
        lifetime_ms,
        at(offset),
    )
    .0
}

pub async fn sessions_round_trip_and_list_by_status(store: Arc<dyn crate::Store>) {
    let user = new_user(&["s@example.com"], &[], None, 0);
    insert(store.as_ref(), &user).await;
    let sessions: Vec<Session> = (0..5).map(|i| session_for(&user, i, 1_000)).collect();
    for s in &sessions {
        store.insert_session(s).await.unwrap();
    }
    assert_eq!(
        store.get_session(&sessions[0].id).await.unwrap().as_ref(),
        Some(&sessions[0])
    );
    let revoked = store
        .update_session(&sessions[1].id, Box::new(|s| s.revoke(at(10))))
        .await
        .unwrap();
    assert_eq!(revoked.status, SessionStatus::Revoked);
    // A refused mutation writes nothing.
    assert!(
        store
            .update_session(&sessions[1].id, Box::new(|s| s.revoke(at(11))))
            .await
            .is_err()
    );
    assert_eq!(
        store.get_session(&sessions[1].id).await.unwrap().unwrap(),
        revoked
    );

    let list = |status, now, before, limit| {
        let store = store.clone();
        let user_id = user.id.clone();
        async move {
            store
                .list_sessions(&SessionQuery {
                    user_id,
                    status,
                    now: at(now),
                    before,
                    limit,
                })
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let ids = |idx: &[usize]| {
        idx.iter()
            .map(|&i| sessions[i].id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(None, 20, None, 10).await, ids(&[4, 3, 2, 1, 0]));
    assert_eq!(
        list(Some(SessionStatus::Active), 20, None, 10).await,
        ids(&[4, 3, 2, 0])
    );
    assert_eq!(
        list(Some(SessionStatus::Revoked), 20, None, 10).await,
        ids(&[1])
    );
    // Session i expires at 1000 + i. At 1002, sessions 0 and 2 have
    // expired; 1 stays revoked; 3 and 4 are active.
    assert_eq!(
        list(Some(SessionStatus::Expired), 1_002, None, 10).await,
        ids(&[2, 0])
    );
    assert_eq!(
        list(Some(SessionStatus::Active), 1_002, None, 10).await,
        ids(&[4, 3])
    );
    // Keyset pages, newest first.
    let first = list(None, 20, None, 2).await;
    assert_eq!(first, ids(&[4, 3]));
    let next = list(None, 20, Some((at(3), sessions[3].id.clone())), 2).await;
    assert_eq!(next, ids(&[2, 1]));
    // Deleting the user deletes its sessions.
    store.delete_user(&user.id).await.unwrap();
    assert!(store.get_session(&sessions[0].id).await.unwrap().is_none());
}

pub async fn a_ban_revokes_sessions_and_a_sign_in_completes_once(store: Arc<dyn crate::Store>) {
    let user = new_user(&["b@example.com"], &[], None, 0);
    insert(store.as_ref(), &user).await;
    let sign_in = crate::SignIn {
        id: roster_domain::SignInId::generate(at(1)),
        identifier: "b@example.com".into(),
        user_id: Some(user.id.clone()),
        status: "needs_first_factor".into(),
        created_at: at(1),
        expire_at: at(100),
        session_id: None,
        code: None,
    };
    store.insert_sign_in(&sign_in).await.unwrap();
    assert_eq!(
        store.get_sign_in(&sign_in.id).await.unwrap().as_ref(),
        Some(&sign_in)
    );
    // A code first factor round-trips.
    let target = IdentificationId::generate(at(1));
    let hash = CodeKey::generate().hash(&target, &VerificationCode::parse("123456").unwrap());
    let with_code = store
        .update_sign_in(
            &sign_in.id,
            Box::new(move |s| {
                let mut verification = roster_domain::Verification::unverified();
                verification.prepare(
                    roster_domain::VerificationStrategy::EmailCode,
                    hash,
                    &CodePolicy::default(),
                    at(1),
                )?;
                s.code = Some(crate::SignInCode {
                    target,
                    verification,
                });
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(with_code.code.is_some());
    assert_eq!(
        store.get_sign_in(&sign_in.id).await.unwrap().as_ref(),
        Some(&with_code)
    );
    let session = session_for(&user, 2, 1_000);
    assert!(
        store
            .complete_sign_in(&sign_in.id, &session.id)
            .await
            .unwrap()
    );
    let again = session_for(&user, 3, 1_000);
    assert!(
        !store
            .complete_sign_in(&sign_in.id, &again.id)
            .await
            .unwrap()
    );
    // The session begins in the user's transaction.
    let begun = session.clone();
    store
        .update_user(
            &user.id,
            Box::new(move |r| {
                r.start_session = Some(begun);
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_session(&session.id).await.unwrap().as_ref(),
        Some(&session)
    );
    let done = store.get_sign_in(&sign_in.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status.as_str(), done.session_id),
        ("complete", Some(session.id.clone()))
    );

    store
        .update_user(
            &user.id,
            Box::new(|r| {
                r.user.set_banned(true, at(5));
                Ok(())
            }),
        )
        .await
        .unwrap();
    let after = store.get_session(&session.id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.updated_at),
        (SessionStatus::Revoked, at(5))
    );
}

pub async fn signing_keys_round_trip(store: Arc<dyn crate::Store>) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    let key = |kid: &str, offset| StoredKey {
        kid: kid.into(),
        algorithm: "RS256".into(),
        private_key_pem: format!("-----BEGIN PRIVATE KEY-----\n{kid}\n-----END PRIVATE KEY-----\n"),
        created_at: at(offset),
    };
    store.insert_signing_key(&key("old", 1)).await.unwrap();
    store.insert_signing_key(&key("new", 2)).await.unwrap();
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![key("new", 2), key("old", 1)]
    );
}

pub async fn sign_ups_round_trip_and_complete_once(store: Arc<dyn crate::Store>) {
    use roster_domain::{SignUp, SignUpFields};
    let fields = SignUpFields {
        email: Some(Email::parse("new@example.com").unwrap()),
        password_hash: Some(Password::parse("correct horse").unwrap().hash()),
        first_name: Name::parse("Nia").unwrap(),
        unsafe_metadata: Some(Metadata::parse(json!({"plan": "free"})).unwrap()),
        ..SignUpFields::default()
    };
    let sign_up = SignUp::start(fields, at(0));
    store.insert_sign_up(&sign_up).await.unwrap();
    assert_eq!(
        store.get_sign_up(&sign_up.id).await.unwrap().as_ref(),
        Some(&sign_up)
    );
    let (key, policy) = (CodeKey::generate(), CodePolicy::default());
    let code = VerificationCode::parse("123456").unwrap();
    let target = sign_up.code_target(Channel::Email).unwrap().0;
    let (k, c) = (key.clone(), code.clone());
    let prepared = store
        .update_sign_up(
            &sign_up.id,
            Box::new(move |s| {
                s.prepare_verification(Channel::Email, k.hash(&target, &c), &policy, at(1))
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_sign_up(&sign_up.id).await.unwrap().as_ref(),
        Some(&prepared)
    );
    let verified = store
        .update_sign_up(
            &sign_up.id,
            Box::new(move |s| {
                assert_eq!(
                    s.attempt_verification(Channel::Email, &code, &key, &policy, at(2))?,
                    AttemptOutcome::Verified
                );
                Ok(())
            }),
        )
        .await
        .unwrap();

    // Someone else verified the address meanwhile: completion fails and
    // writes nothing.
    let other = new_user(&["NEW@example.com"], &[], None, 3);
    insert(store.as_ref(), &other).await;
    let record = verified.to_user(at(4)).unwrap();
    let session = Session::start(
        record.user.id.clone(),
        SessionActivity::default(),
        1000,
        at(4),
    )
    .0;
    assert_eq!(
        conflict_field(
            store
                .complete_sign_up(&verified.id, &record, &session, at(4))
                .await
        ),
        "email_address"
    );
    assert!(store.get_user(&record.user.id).await.unwrap().is_none());
    assert!(store.get_session(&session.id).await.unwrap().is_none());
    assert_eq!(
        store
            .get_sign_up(&verified.id)
            .await
            .unwrap()
            .unwrap()
            .created_user_id,
        None
    );

    store.delete_user(&other.id).await.unwrap();
    let done = store
        .complete_sign_up(&verified.id, &record, &session, at(5))
        .await
        .unwrap();
    assert_eq!(done.created_user_id.as_ref(), Some(&record.user.id));
    let user = store.get_record(&record.user.id).await.unwrap().unwrap();
    assert_eq!(
        user.user.unsafe_metadata,
        Metadata::parse(json!({"plan": "free"})).unwrap()
    );
    assert!(user.password_hash().unwrap().verify("correct horse"));
    assert!(store.get_session(&session.id).await.unwrap().is_some());
    // Complete once.
    let again = Session::start(
        record.user.id.clone(),
        SessionActivity::default(),
        1000,
        at(6),
    )
    .0;
    assert!(
        store
            .complete_sign_up(&verified.id, &record, &again, at(6))
            .await
            .is_err()
    );
}

pub async fn bulk_insert_writes_every_user_or_none(store: Arc<dyn UserStore>) {
    let s = store.as_ref();
    insert(s, &new_user(&["taken@example.com"], &[], None, 0)).await;
    insert(s, &unverified_user(&["loose@example.com"], &[], 1)).await;
    // More identifier values than one statement binds, so inserts chunk.
    let batch: Vec<UserRecord> = (0..1500)
        .map(|i| {
            let emails = [
                format!("bulk{i}.a@example.com"),
                format!("bulk{i}.b@example.com"),
            ];
            let phone = format!("+1415555{i:04}");
            let user = new_user(
                &[emails[0].as_str(), emails[1].as_str()],
                &[phone.as_str()],
                Some(&format!("bulk{i:04}")),
                i,
            );
            UserRecord::new(user, None)
        })
        .collect();
    s.insert_users(&batch).await.unwrap();
    let everyone = UserFilter::default();
    assert_eq!(s.count_users(&everyone).await.unwrap(), 1502);
    let sample = &batch[777].user;
    assert_eq!(s.get_user(&sample.id).await.unwrap().as_ref(), Some(sample));
    let query = UserFilter {
        query: Some("bulk0777".to_owned()),
        ..UserFilter::default()
    };
    assert_eq!(ids(s, query).await, HashSet::from([sample.id.clone()]));

    // Each of these would conflict, or take an identifier from someone,
    // if inserted one at a time; the whole batch is refused.
    let fresh = |email: &str, verified: bool, offset: i64| {
        let user = if verified {
            new_user(&[email], &[], None, offset)
        } else {
            unverified_user(&[email], &[], offset)
        };
        UserRecord::new(user, None)
    };
    let refused = [
        vec![
            fresh("ok1@example.com", true, 2000),
            fresh("taken@example.com", true, 2001),
        ],
        vec![
            fresh("ok2@example.com", true, 2002),
            fresh("taken@example.com", false, 2003),
        ],
        vec![fresh("loose@example.com", true, 2004)],
        vec![
            fresh("dup@example.com", true, 2005),
            fresh("dup@example.com", false, 2006),
        ],
        vec![
            fresh("dup@example.com", true, 2007),
            fresh("dup@example.com", true, 2008),
        ],
    ];
    for records in refused {
        assert_eq!(
            conflict_field(s.insert_users(&records).await),
            "email_address"
        );
        assert_eq!(s.count_users(&everyone).await.unwrap(), 1502);
    }
    // Unverified copies may coexist, as they do one at a time.
    s.insert_users(&[
        fresh("loose@example.com", false, 2009),
        fresh("loose@example.com", false, 2010),
    ])
    .await
    .unwrap();
    assert_eq!(s.count_users(&everyone).await.unwrap(), 1504);
}

/// Pages of a `query` filter, dense or sparse, in both directions, against
/// the same filter applied in memory. Dense queries are answered from the
/// first users in order, sparse ones from the trigram index; near the end
/// of the table a page can take either way.
pub async fn query_pages_match_filtering_in_memory(store: Arc<dyn UserStore>) {
    let s = store.as_ref();
    let users: Vec<User> = (0..600)
        .map(|i| {
            let mut tags = vec![format!("u{i:04}")];
            if i % 3 == 0 {
                tags.push("dense".to_owned());
            }
            if i % 97 == 5 {
                tags.push("rare".to_owned());
            }
            new_user(&[], &[], Some(&tags.join("_")), i / 2)
        })
        .collect();
    let records: Vec<UserRecord> = users
        .iter()
        .map(|u| UserRecord::new(u.clone(), None))
        .collect();
    s.insert_users(&records).await.unwrap();
    let cases = [
        "dense",
        "rare",
        "u01",
        "_",
        "nowhere",
        "0_dense",
        "u0102_dense_rare",
    ]
    .into_iter()
    .flat_map(|text| [(text, false, 7), (text, true, 7), (text, true, 60)]);
    for (text, descending, page_size) in cases {
        let order = OrderBy {
            field: OrderField::CreatedAt,
            descending,
        };
        let mut expected: Vec<&User> = users
            .iter()
            .filter(|u| u.search_text().contains(text))
            .collect();
        expected.sort_by_key(|u| (u.created_at, u.id.clone()));
        if descending {
            expected.reverse();
        }
        let filter = UserFilter {
            query: Some(text.to_owned()),
            ..UserFilter::default()
        };
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let query = ListQuery::new(filter.clone(), order, page_size, &token).unwrap();
            let page = list_page(s, query).await.unwrap();
            seen.extend(page.users.into_iter().map(|u| u.id));
            match page.next_page_token {
                Some(next) => token = next,
                None => break,
            }
        }
        let expected: Vec<UserId> = expected.into_iter().map(|u| u.id.clone()).collect();
        assert_eq!(
            seen, expected,
            "{text:?}, descending {descending}, {page_size}"
        );
        let count = s.count_users(&filter).await.unwrap();
        assert_eq!(usize::try_from(count).unwrap(), expected.len(), "{text:?}");
    }
}

/// Concurrent mutations adding identifiers to one user each see the ones
/// added before them: the record a mutation gets is read after the user's
/// lock is held, identifiers included, so the user row written back (its
/// search text here) reflects every address.
pub async fn concurrent_identifier_changes_see_each_other(store: Arc<dyn UserStore>) {
    let user = new_user(&["a@example.com"], &[], None, 0);
    insert(store.as_ref(), &user).await;
    update_concurrently(&store, &user.id, 8, |i, record| {
        let email = Email::parse(&format!("added{i}@example.com")).unwrap();
        record.user.add_email(email, true, false, at(1)).map(drop)
    })
    .await;
    let loaded = store.get_user(&user.id).await.unwrap().unwrap();
    assert_eq!(loaded.email_addresses.len(), 9);
    for i in 0..8 {
        let query = UserFilter {
            query: Some(format!("added{i}@")),
            ..UserFilter::default()
        };
        assert_eq!(
            ids(store.as_ref(), query).await,
            HashSet::from([user.id.clone()]),
            "added{i}"
        );
    }
}
