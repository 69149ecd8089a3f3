//! The node's services, wired together once at start-up and shared by every handler.

use std::sync::{Arc, OnceLock};

use crate::{
    accounts::Accounts,
    config::Config,
    e2ee::E2ee,
    error::Result,
    identity::Identity,
    media::Media,
    notifier::Notifier,
    presence::Presence,
    push::PushRules,
    rooms::Rooms,
    sliding_sync::SlidingSync,
    storage::{DB_FILE, Db},
    sync::SyncService,
    tasks::Tasks,
    typing::Typing,
    uia::Uia,
    user_data::UserData,
};

/// Everything a request handler may call.
pub struct Services {
    /// The configuration the node started with.
    pub config: Config,
    /// The node's key and server name.
    pub identity: Arc<Identity>,
    /// The database.
    pub db: Db,
    /// Wakes long-polling syncs.
    pub notifier: Arc<Notifier>,
    /// Accounts, devices, tokens.
    pub accounts: Accounts,
    /// Rooms and events.
    pub rooms: Rooms,
    /// `/sync`.
    pub sync: SyncService,
    /// Simplified sliding sync (MSC4186).
    pub sliding_sync: SlidingSync,
    /// Typing notifications.
    pub typing: Typing,
    /// Profiles, account data, receipts, filters.
    pub user_data: UserData,
    /// User-interactive auth sessions.
    pub uia: Uia,
    /// Rate limits on password checks and registration.
    pub limits: crate::rate_limit::Limiter,
    /// End-to-end encryption: keys, to-device messages, key backup.
    pub e2ee: E2ee,
    /// The media repository.
    pub media: Media,
    /// Push rules.
    pub push: PushRules,
    /// Presence of local users.
    pub presence: Presence,
    /// Events from other servers waiting for the events they depend on.
    pub(crate) inbound: crate::federation::inbound::Inbound,
    /// How often local users' membership choices were made again after state resolution
    /// undid them.
    pub(crate) own_memberships: crate::federation::own_membership::OwnMemberships,
    /// Joins under way through other servers, and the presence held back meanwhile.
    pub(crate) joining: crate::federation::joining::Joining,
    /// Destinations the outbox backs off from that have talked to us since.
    pub(crate) heard: crate::federation::outbox::Heard,
    /// Every background task of the node; stopped and awaited by [`crate::Node::shutdown`].
    pub tasks: Tasks,
    client_url: OnceLock<String>,
    federation: OnceLock<crate::federation::transport::FederationClient>,
}

impl Services {
    /// Opens the data directory (creating it), the key and the database.
    pub fn open(config: Config) -> Result<Arc<Self>> {
        crate::accounts::check_random_source()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let identity = Arc::new(Identity::load_or_create(&config.data_dir)?);
        let db = Db::open(&config.data_dir.join(DB_FILE))?;
        let notifier = Arc::new(Notifier::default());
        let tasks = Tasks::default();
        let accounts = Accounts::new(
            db.clone(),
            identity.server_name(),
            config.password_cost,
            notifier.clone(),
        );
        let rooms = Rooms::new(db.clone(), identity.clone(), notifier.clone());
        let typing = Typing::new(notifier.clone(), tasks.clone());
        let sync = SyncService::new(db.clone(), notifier.clone(), typing.clone());
        let sliding_sync = SlidingSync::new(db.clone(), notifier.clone(), typing.clone());
        let user_data = UserData::new(db.clone(), notifier.clone(), rooms.clone());
        let e2ee = E2ee::new(
            db.clone(),
            notifier.clone(),
            identity.server_name().to_owned(),
        );
        let media = Media::open(
            db.clone(),
            &config.data_dir,
            identity.server_name().as_str(),
            config.max_upload_bytes,
            crate::media::Quotas {
                per_user: config.media_quota_per_user,
                total: config.media_quota_total,
            },
            notifier.clone(),
        )?;
        let push = PushRules::new(db.clone(), notifier.clone());
        let presence = Presence::new(
            db.clone(),
            notifier.clone(),
            identity.server_name().as_str(),
        );
        let limits = crate::rate_limit::Limiter::new(config.rate_limits);
        Ok(Arc::new(Self {
            config,
            identity,
            db,
            notifier,
            accounts,
            rooms,
            sync,
            sliding_sync,
            typing,
            user_data,
            uia: Uia::default(),
            limits,
            e2ee,
            media,
            push,
            presence,
            inbound: Default::default(),
            own_memberships: Default::default(),
            joining: Default::default(),
            heard: Default::default(),
            tasks,
            client_url: OnceLock::new(),
            federation: OnceLock::new(),
        }))
    }

    /// Local users' requests that may be answered by other servers (joins, leaves, aliases,
    /// typing and receipts, keys): the one way into the server-server API for client handlers.
    pub fn federated(self: &Arc<Self>) -> crate::federated::Federated<'_> {
        crate::federated::Federated::new(self)
    }

    /// The base URL of the client API, once listening.
    pub fn client_url(&self) -> String {
        self.client_url.get().cloned().unwrap_or_default()
    }

    pub(crate) fn set_client_url(&self, url: String) {
        let _ = self.client_url.set(url);
    }

    /// The federation client, while peer-to-peer networking runs.
    pub fn federation(&self) -> Option<&crate::federation::transport::FederationClient> {
        self.federation.get()
    }

    pub(crate) fn set_federation(&self, client: crate::federation::transport::FederationClient) {
        let _ = self.federation.set(client);
    }
}
