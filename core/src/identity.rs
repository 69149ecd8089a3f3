//! The node's identity: one ed25519 key, its server name, and its Matrix signing key.
//!
//! The server name is the public key in lowercase, unpadded RFC 4648 base32 (52 characters,
//! a valid DNS label), so any node can compute a peer's verify key from its name alone.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use ed25519_dalek::{SigningKey, VerifyingKey, pkcs8::EncodePrivateKey};
use ruma::{OwnedServerName, ServerName, signatures::Ed25519KeyPair};

use crate::error::{Error, Result};

/// File name of the 32-byte key seed inside the data directory.
pub const KEY_FILE: &str = "signing.key";
/// The key id every Neurite node signs with.
pub const KEY_ID: &str = "ed25519:p2p";
/// The version part of [`KEY_ID`].
pub const KEY_VERSION: &str = "p2p";

/// The node's key pair and the names derived from it.
pub struct Identity {
    signing_key: SigningKey,
    key_pair: Ed25519KeyPair,
    server_name: OwnedServerName,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the key from `data_dir`, creating it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let seed = match fs::read(&path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                Error::Key(format!("{} must hold exactly 32 bytes", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_seed(&path)?,
            Err(e) => return Err(e.into()),
        };
        Self::from_seed(&seed)
    }

    /// Builds the identity from a 32-byte ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let signing_key = SigningKey::from_bytes(seed);
        let der = signing_key
            .to_pkcs8_der()
            .map_err(|e| Error::Key(e.to_string()))?;
        let key_pair = Ed25519KeyPair::from_der(der.as_bytes(), KEY_VERSION.to_owned())
            .map_err(|e| Error::Key(e.to_string()))?;
        let name = server_name_for_key(&signing_key.verifying_key());
        let server_name = ServerName::parse(&name).map_err(|e| Error::Key(e.to_string()))?;
        Ok(Self {
            signing_key,
            key_pair,
            server_name,
        })
    }

    /// This node's server name.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The key pair in the form ruma's signing functions take.
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The public half of the key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// The same key as a libp2p identity: the node's `PeerId` derives from it.
    pub fn libp2p_keypair(&self) -> Result<libp2p::identity::Keypair> {
        libp2p::identity::Keypair::ed25519_from_bytes(self.signing_key.to_bytes())
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> libp2p::PeerId {
        peer_id_for_key(&self.verifying_key())
    }
}

fn peer_id_for_key(key: &VerifyingKey) -> libp2p::PeerId {
    // An ed25519 public key always decodes; `expect` documents an invariant, not input.
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map(libp2p::identity::PublicKey::from)
        .expect("a valid ed25519 verifying key is a valid libp2p ed25519 key");
    public.to_peer_id()
}

/// The libp2p peer id of the node with this server name, or `None` if it is not a Neurite name.
pub fn peer_id_for_server_name(name: &str) -> Option<libp2p::PeerId> {
    key_for_server_name(name).map(|k| peer_id_for_key(&k))
}

/// The server name of a peer, if its peer id inlines an ed25519 key (as every Neurite node's does).
pub fn server_name_for_peer(peer: &libp2p::PeerId) -> Option<String> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    let key = VerifyingKey::from_bytes(&ed.to_bytes()).ok()?;
    Some(server_name_for_key(&key))
}

/// The server name that encodes `key`: lowercase unpadded base32.
pub fn server_name_for_key(key: &VerifyingKey) -> String {
    data_encoding::BASE32_NOPAD
        .encode(key.as_bytes())
        .to_ascii_lowercase()
}

/// The verify key a server name encodes, or `None` if the name is not a Neurite name.
///
/// Only the one spelling [`server_name_for_key`] gives is a Neurite name: lowercase, and with
/// the unused low bits of the last character zero. Server names are compared as strings
/// everywhere (user ids, signatures, rooms), so accepting `ABC…` or a second spelling of
/// the last character would let one key speak as many servers, each with a fresh set of
/// the bounds kept per server.
pub fn key_for_server_name(name: &str) -> Option<VerifyingKey> {
    if name.len() != 52 || !name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
        return None;
    }
    let bytes = data_encoding::BASE32_NOPAD
        .decode(name.to_ascii_uppercase().as_bytes())
        .ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    let key = VerifyingKey::from_bytes(&bytes).ok()?;
    (server_name_for_key(&key) == name).then_some(key)
}

/// The public key map for one Neurite server, computed from its name (what signature checks
/// of its events and requests verify against).
pub fn public_key_map(server_name: &str) -> Option<ruma::signatures::PublicKeyMap> {
    let key = key_for_server_name(server_name)?;
    let set = std::collections::BTreeMap::from([(
        KEY_ID.to_owned(),
        ruma::serde::Base64::new(key.as_bytes().to_vec()),
    )]);
    Some(std::collections::BTreeMap::from([(
        server_name.to_owned(),
        set,
    )]))
}

fn create_seed(path: &PathBuf) -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Key(e.to_string()))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(&seed)?;
    file.sync_all()?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_round_trips_to_the_key() {
        let id = Identity::from_seed(&[7u8; 32]).unwrap();
        let name = id.server_name().as_str();
        assert_eq!(name.len(), 52);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(key_for_server_name(name).unwrap(), id.verifying_key());
        assert!(key_for_server_name("example.org").is_none());
    }

    #[test]
    fn a_key_has_one_server_name_only() {
        let id = Identity::from_seed(&[7u8; 32]).unwrap();
        let name = id.server_name().as_str();
        // Upper case, or any letter of it, names no server.
        assert!(key_for_server_name(&name.to_ascii_uppercase()).is_none());
        let mut mixed = name.to_owned();
        let at = mixed.find(|c: char| c.is_ascii_lowercase()).unwrap();
        mixed.replace_range(at..=at, &mixed[at..=at].to_ascii_uppercase());
        assert!(key_for_server_name(&mixed).is_none());
        assert!(peer_id_for_server_name(&mixed).is_none());
        assert!(public_key_map(&mixed).is_none());
        // The last character carries one bit of the key; its other spellings are refused.
        let last = name.as_bytes()[51];
        let other_spellings = (b'a'..=b'z')
            .chain(b'2'..=b'7')
            .filter(|&c| c != last)
            .map(|c| format!("{}{}", &name[..51], c as char))
            .filter(|n| key_for_server_name(n).is_some_and(|k| k == id.verifying_key()))
            .count();
        assert_eq!(other_spellings, 0);
    }

    #[test]
    fn peer_id_and_server_name_are_two_views_of_one_key() {
        let id = Identity::from_seed(&[9u8; 32]).unwrap();
        let from_keypair = id.libp2p_keypair().unwrap().public().to_peer_id();
        assert_eq!(from_keypair, id.peer_id());
        assert_eq!(
            peer_id_for_server_name(id.server_name().as_str()),
            Some(id.peer_id())
        );
        assert_eq!(
            server_name_for_peer(&id.peer_id()).as_deref(),
            Some(id.server_name().as_str())
        );
    }

    #[test]
    fn key_survives_restart_and_is_private() {
        let dir = std::env::temp_dir().join(format!("neurite-id-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let a = Identity::load_or_create(&dir).unwrap();
        let b = Identity::load_or_create(&dir).unwrap();
        assert_eq!(a.server_name(), b.server_name());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
