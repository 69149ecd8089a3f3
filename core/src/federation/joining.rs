//! Joins this node is making through other servers, while they are under way.
//!
//! A resident server that lets one of our users in tells us its members' presence as soon as
//! it has stored the join. That presence can arrive while our side is still storing the
//! room from the `send_join` answer, before those members are known here, and presence about
//! users who share no room with a local user is dropped. So presence from a server that a
//! join is going through is held back, and applied, in the order it came, once the join has
//! been stored (or has failed).

use std::{collections::HashMap, sync::Mutex};

use serde_json::Value;

use crate::http::AppState;

/// Most `m.presence` EDUs held back for one server while joins through it are under way;
/// further ones are applied at once, as if no join were under way.
const MAX_HELD: usize = 32;

/// The servers joins are going through, and the presence they sent meanwhile.
#[derive(Default)]
pub(crate) struct Joining {
    servers: Mutex<HashMap<String, Held>>,
}

#[derive(Default)]
struct Held {
    /// Joins under way through the server.
    joins: usize,
    /// Contents of the `m.presence` EDUs it sent meanwhile, oldest first.
    presence: Vec<Value>,
}

impl Joining {
    /// Holds back `content`, an `m.presence` EDU from `origin`, if a join through `origin` is
    /// under way (true); false if it is to be applied now.
    pub(crate) fn hold_presence(&self, origin: &str, content: &Value) -> bool {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        match servers.get_mut(origin) {
            Some(held) if held.presence.len() < MAX_HELD => {
                held.presence.push(content.clone());
                true
            }
            _ => false,
        }
    }

    fn begin(&self, server: &str) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.entry(server.to_owned()).or_default().joins += 1;
    }

    /// Ends a join through `server`, unless presence is still held back for it: then that
    /// presence is returned (oldest first) and the join stays under way, so what arrives
    /// meanwhile is held too; the caller applies it and calls again. Once nothing is held,
    /// the join ends, and the server is forgotten with its last join.
    fn end_or_take(&self, server: &str) -> Vec<Value> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(held) = servers.get_mut(server) else {
            return Vec::new();
        };
        if held.joins > 1 {
            // Another join through it is still under way: it applies what is held.
            held.joins -= 1;
            return Vec::new();
        }
        if held.presence.is_empty() {
            servers.remove(server);
            return Vec::new();
        }
        std::mem::take(&mut held.presence)
    }
}

/// A join through one server under way; see [`JoinUnderWay::stored`].
pub(crate) struct JoinUnderWay {
    state: AppState,
    server: String,
    ended: bool,
}

impl JoinUnderWay {
    /// Marks a join through `server` under way: presence it sends is held back from now on.
    pub(crate) fn begin(state: &AppState, server: &str) -> Self {
        state.joining.begin(server);
        Self {
            state: state.clone(),
            server: server.to_owned(),
            ended: false,
        }
    }

    /// The join is stored (or failed): what the server sent meanwhile is applied, in order,
    /// before presence arriving from now on is applied as it comes.
    pub(crate) async fn stored(mut self) {
        self.ended = true;
        loop {
            let held = self.state.joining.end_or_take(&self.server);
            if held.is_empty() {
                break;
            }
            for content in &held {
                self.state
                    .presence
                    .receive_remote(&self.server, content)
                    .await;
            }
        }
    }
}

impl Drop for JoinUnderWay {
    /// A join given up half-way (an error, or its request dropped): presence it held back is
    /// applied by a task of the node.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut held = Vec::new();
        loop {
            let more = self.state.joining.end_or_take(&self.server);
            if more.is_empty() {
                break;
            }
            held.extend(more);
        }
        if held.is_empty() {
            return;
        }
        let (state, server) = (self.state.clone(), self.server.clone());
        self.state.tasks.spawn(async move {
            for content in &held {
                state.presence.receive_remote(&server, content).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn presence_is_held_while_a_join_is_under_way_and_given_back_in_order() {
        let joining = Joining::default();
        assert!(!joining.hold_presence("a", &json!(1)), "no join under way");
        joining.begin("a");
        assert!(joining.hold_presence("a", &json!(1)));
        assert!(joining.hold_presence("a", &json!(2)));
        assert!(!joining.hold_presence("b", &json!(3)), "another server");
        assert_eq!(joining.end_or_take("a"), [json!(1), json!(2)]);
        // Still under way until nothing is held: what came meanwhile is held too.
        assert!(joining.hold_presence("a", &json!(4)));
        assert_eq!(joining.end_or_take("a"), [json!(4)]);
        assert!(joining.end_or_take("a").is_empty());
        assert!(!joining.hold_presence("a", &json!(5)), "the join has ended");
    }

    #[test]
    fn the_last_of_several_joins_through_a_server_takes_what_is_held() {
        let joining = Joining::default();
        joining.begin("a");
        joining.begin("a");
        assert!(joining.hold_presence("a", &json!(1)));
        assert!(joining.end_or_take("a").is_empty());
        assert!(joining.hold_presence("a", &json!(2)));
        assert_eq!(joining.end_or_take("a"), [json!(1), json!(2)]);
        assert!(joining.end_or_take("a").is_empty());
        assert!(!joining.hold_presence("a", &json!(3)));
    }

    #[test]
    fn at_most_so_much_is_held() {
        let joining = Joining::default();
        joining.begin("a");
        for n in 0..MAX_HELD {
            assert!(joining.hold_presence("a", &json!(n)));
        }
        assert!(!joining.hold_presence("a", &json!("one too many")));
    }
}
