//! Account deactivation: the account is locked first, then it leaves every room.

use ruma::UserId;
use serde_json::Map;

use crate::{
    error::Result, federation::membership as fed_membership, rooms::membership::MembershipAction,
    services::Services,
};

/// Deactivates a local account: it can no longer log in and its name stays taken; all its
/// devices (tokens, keys) are gone, its profile is cleared, it leaves the rooms it joined and
/// declines its invites. A room that cannot be left now (a remote invite whose servers are
/// unreachable) is skipped and logged; the account stays deactivated.
pub async fn deactivate(services: &std::sync::Arc<Services>, user: &UserId) -> Result<()> {
    services.accounts.deactivate(user).await?;
    let memberships = services.rooms.memberships(user.as_str()).await?;
    for (room_id, membership) in memberships {
        let outcome = match membership.as_str() {
            "join" | "knock" => leave(services, user, &room_id).await,
            "invite" if !fed_membership::is_resident(services, &room_id).await? => {
                fed_membership::reject_remote_invite(services, user, &room_id).await
            }
            "invite" => leave(services, user, &room_id).await,
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            tracing::warn!(room = %room_id, error = %e, "deactivated account could not leave a room");
        }
    }
    Ok(())
}

async fn leave(services: &Services, user: &UserId, room_id: &str) -> Result<()> {
    services
        .rooms
        .change_membership(
            user,
            room_id,
            user,
            MembershipAction::Leave,
            None,
            Map::new(),
        )
        .await
}
