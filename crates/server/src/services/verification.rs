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
use crate::error::ApiError;

/// The key and limits of verification codes.
#[derive(Clone, Debug)]
pub struct CodeSettings {
    pub key: CodeKey,
    pub policy: CodePolicy,
}

/// Prepares a code for an identifier; returns its user and, when the
/// caller asked for it, the code.
pub(crate) async fn prepare(
    state: &AppState,
    id: &IdentificationId,
    channel: Channel,
    return_code: bool,
) -> Result<(User, Option<VerificationCode>), ApiError> {
    if !return_code {
        return Err(DomainError::precondition(
            reason::DELIVERY_NOT_CONFIGURED,
            "this server has no code delivery configured; ask for the code with return_code",
        )
        .into());
    }
    let owner = owner_id(state, id, channel.what()).await?;
    let code = VerificationCode::generate();
    let hash = state.codes.key.hash(id, &code);
    let (policy, now, target) = (state.codes.policy, state.clock.now(), id.clone());
    let user = state
        .users
        .update_user(
            &owner,
            Box::new(move |r| {
                r.user
                    .prepare_verification(channel, &target, hash, &policy, now)
            }),
        )
        .await?;
    tracing::info!(user_id = %user.id, identification_id = %id, "verification code prepared");
    Ok((user, return_code.then_some(code)))
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
