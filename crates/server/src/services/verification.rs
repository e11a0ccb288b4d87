//! Preparing and checking verification codes, shared by the email and phone
//! services (and, later, the Frontend API).
//!
//! Codes are hashed before the transaction that stores them, and attempts
//! run inside the user's locked transaction, so concurrent attempts are
//! counted one by one: 20 concurrent wrong codes evaluate at most 5, and a
//! right code sent twice at once verifies once. An attempt's outcome is
//! committed before it is reported, so wrong and expired attempts count even
//! though the caller gets an error.

pub(crate) use roster_domain::Channel;
use roster_domain::{
    AttemptOutcome, CodeKey, CodePolicy, DomainError, IdentificationId, User, VerificationCode,
    reason,
};
use roster_proto::convert;

use super::owner_id;
use crate::AppState;
use crate::delivery::CodeMessage;
use crate::error::ApiError;

/// The key and limits of verification codes.
#[derive(Clone, Debug)]
pub struct CodeSettings {
    pub key: CodeKey,
    pub policy: CodePolicy,
}

/// Prepares a code for an identifier and delivers it, or, when the
/// caller asked for it (`return_code`, Backend API only), returns it
/// instead of delivering it.
///
/// The code is committed before it is sent, so the identifier's lock is not
/// held across the network. If delivery fails the code is withdrawn again
/// and the caller gets UNAVAILABLE: no code is left that nobody received.
/// Delivery and withdrawal run in their own task, so a caller who hangs up
/// mid-send cannot leave the code behind either.
pub(crate) async fn prepare(
    state: &AppState,
    id: &IdentificationId,
    channel: Channel,
    return_code: bool,
) -> Result<(User, Option<VerificationCode>), ApiError> {
    let delivery = if return_code {
        None
    } else {
        Some(state.delivery.for_channel(channel).cloned().ok_or_else(|| {
            DomainError::precondition(
                reason::DELIVERY_NOT_CONFIGURED,
                format!(
                    "this server has no delivery configured for {}s; ask for the code with return_code",
                    channel.what()
                ),
            )
        })?)
    };
    let owner = owner_id(state, id, channel.what()).await?;
    let code = VerificationCode::generate();
    let hash = state.codes.key.hash(id, &code);
    let (policy, now, target) = (state.codes.policy, state.clock.now(), id.clone());
    let stored = hash.clone();
    let user = state
        .users
        .update_user(
            &owner,
            Box::new(move |r| r.prepare_verification(channel, &target, stored, &policy, now)),
        )
        .await?;
    tracing::info!(user_id = %user.id, identification_id = %id, "verification code prepared");
    let Some(delivery) = delivery else {
        return Ok((user, Some(code)));
    };
    let message = CodeMessage {
        channel,
        to: identifier_text(&user, channel, id)?,
        code,
        locale: user.locale.as_ref().map(ToString::to_string),
        user_id: Some(user.id.clone()),
        identification_id: id.clone(),
        expire_at: now.plus_millis(policy.ttl_ms),
        valid_minutes: policy.ttl_ms / 60_000,
    };
    let (users, clock, target, owner) = (
        state.users.clone(),
        state.clock.clone(),
        id.clone(),
        user.id.clone(),
    );
    deliver_or_withdraw(delivery, message, async move {
        users
            .update_user(
                &owner,
                Box::new(move |r| {
                    r.user
                        .withdraw_verification(channel, &target, &hash, clock.now())
                }),
            )
            .await
            .map(|_| ())
    })
    .await?;
    tracing::info!(user_id = %user.id, identification_id = %id, "verification code delivered");
    Ok((user, None))
}

/// Sends `message`; if that fails, runs `withdraw` (which takes the
/// undelivered code back) and reports UNAVAILABLE. Both run in a task of
/// their own, so a caller hanging up mid-send cannot leave the code behind.
pub(crate) async fn deliver_or_withdraw(
    delivery: std::sync::Arc<dyn crate::delivery::Deliver>,
    message: CodeMessage,
    withdraw: impl Future<Output = Result<(), roster_storage::StorageError>> + Send + 'static,
) -> Result<(), ApiError> {
    let sent = tokio::spawn(async move {
        let Err(error) = delivery.deliver(&message).await else {
            return Ok(());
        };
        if let Err(e) = withdraw.await {
            tracing::error!(error = %e, "withdrawing an undelivered code failed");
        }
        Err(error)
    })
    .await?;
    sent.map_err(ApiError::Delivery)
}

/// The address or number `id` stands for, to send a code to.
fn identifier_text(
    user: &User,
    channel: Channel,
    id: &IdentificationId,
) -> Result<String, ApiError> {
    let text = match channel {
        Channel::Email => user.email(id).map(|e| e.email.to_string()),
        Channel::Phone => user.phone(id).map(|p| p.phone.to_string()),
    };
    text.ok_or(ApiError::Internal("a prepared identifier vanished"))
}

/// Checks a code; returns the user with the identifier verified, or the
/// error the outcome calls for (after recording it).
pub(crate) async fn attempt(
    state: &AppState,
    id: &IdentificationId,
    code: &str,
    channel: Channel,
) -> Result<User, ApiError> {
    let code = VerificationCode::parse(code).map_err(|v| DomainError::from(v.nested("code")))?;
    let owner = owner_id(state, id, channel.what()).await?;
    let (key, policy, now, target) = (
        state.codes.key.clone(),
        state.codes.policy,
        state.clock.now(),
        id.clone(),
    );
    let mut outcome = AttemptOutcome::NotPrepared;
    let user = state
        .users
        .update_user(
            &owner,
            Box::new(|r| {
                outcome = r
                    .user
                    .attempt_verification(channel, &target, &code, &key, &policy, now)?;
                Ok(())
            }),
        )
        .await?;
    if outcome == AttemptOutcome::Verified {
        tracing::info!(user_id = %user.id, identification_id = %id, "identifier verified");
    } else {
        tracing::info!(user_id = %user.id, identification_id = %id, outcome = ?outcome, "verification attempt refused");
    }
    outcome.into_result()?;
    Ok(user)
}

/// Parses the id of a Prepare or Attempt request.
pub(crate) fn target(id: &str) -> Result<IdentificationId, ApiError> {
    Ok(convert::identification_id("id", id)?)
}
