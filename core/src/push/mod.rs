//! Push rules and what they feed: each user's rule set (`/pushrules`, in [`rules`]), their
//! evaluation as events join a room's timeline ([`evaluation`]), which records the unread
//! notification counts of `/sync` and the `/notifications` list, and the pushers and
//! notifications clients read back ([`pushers`]).
//!
//! A user's rules live in their `m.push_rules` account data (as `{"global": ruleset}`), so
//! clients see every change in `/sync` too. A user who never changed a rule has no stored
//! copy and gets the server defaults. The rule logic itself is ruma's [`ruma::push::Ruleset`].

mod evaluation;
mod pushers;
mod rules;

use std::sync::Arc;

pub use self::{
    evaluation::{record_event, thread_root},
    pushers::{NotificationPage, UnreadCounts, unread_counts},
    rules::{
        KINDS, RuleChange, account_data_content, check_path, client_json, new_rule, parse_actions,
        rule_json, ruleset_from_stored,
    },
};
use crate::{notifier::Notifier, storage::Db};

/// The push rule service.
#[derive(Clone)]
pub struct PushRules {
    db: Db,
    notifier: Arc<Notifier>,
}

impl PushRules {
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        Self { db, notifier }
    }
}
