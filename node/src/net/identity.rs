//! The node's persistent ed25519 identity and the mapping from libp2p peers to protocol peers.
//!
//! The identity file holds the libp2p protobuf encoding of an ed25519 keypair. It is created with
//! mode 0600 when missing and refused when group or others may read it, as ssh does with its
//! keys. A protocol [`PeerId`] is blake3 of the raw 32-byte ed25519 public key.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gradmesh_protocol::{PeerId, PeerKey};
use libp2p::identity::{Keypair, PublicKey};

/// Identity files are a few dozen bytes; anything larger is not one.
const IDENTITY_FILE_BYTES_MAX: u64 = 1024;
/// The identity multihash code: ed25519 libp2p peer ids embed the public key itself.
const IDENTITY_MULTIHASH_CODE: u64 = 0x00;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file may be read by group or others.
    #[error(
        "identity file {path} has mode {mode:o}; it must not be accessible to group/others (chmod 600)"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a protobuf-encoded ed25519 keypair.
    #[error("identity file {path} does not hold an ed25519 keypair")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The path is a directory.
    #[error("--identity {path} is a directory; give a file in it, e.g. {path}/node.key")]
    Directory {
        /// The directory.
        path: PathBuf,
    },
}

/// Loads the keypair at `path`, or creates one there (mode 0600) when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => load(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path).map_err(io_err),
        Err(e) => Err(io_err(e)),
    }
}

/// A secret file's permission bits when group or others may access it (then it is refused, as
/// ssh refuses such keys); `None` when only its owner may.
pub(super) fn open_to_others(meta: &fs::Metadata) -> Option<u32> {
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

fn load(path: &Path, meta: &fs::Metadata) -> Result<Keypair, IdentityError> {
    if meta.is_dir() {
        return Err(IdentityError::Directory {
            path: path.to_owned(),
        });
    }
    if let Some(mode) = open_to_others(meta) {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let malformed = || IdentityError::Malformed {
        path: path.to_owned(),
    };
    if meta.len() > IDENTITY_FILE_BYTES_MAX {
        return Err(malformed());
    }
    let bytes = fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })?;
    let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|_| malformed())?;
    if keypair.public().try_into_ed25519().is_err() {
        return Err(malformed());
    }
    Ok(keypair)
}

fn create(path: &Path) -> std::io::Result<Keypair> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let keypair = Keypair::generate_ed25519();
    let encoded = keypair
        .to_protobuf_encoding()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // `create_new` fails instead of overwriting a key another process wrote meanwhile.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&encoded)?;
    file.sync_all()?;
    Ok(keypair)
}

/// The protocol's signing key of an ed25519 identity (the same key signs votes; its id is
/// [`protocol_peer_id_of_key`] of the public key); `None` for other key types.
#[must_use]
pub fn protocol_key_of(keypair: &Keypair) -> Option<PeerKey> {
    let ed25519 = keypair.clone().try_into_ed25519().ok()?;
    let secret: [u8; 32] = ed25519.secret().as_ref().try_into().ok()?;
    Some(PeerKey::from_secret(secret))
}

/// The protocol peer id of an ed25519 public key; `None` for other key types.
#[must_use]
pub fn protocol_peer_id_of_key(key: &PublicKey) -> Option<PeerId> {
    let ed25519 = key.clone().try_into_ed25519().ok()?;
    Some(PeerId::from_key_bytes(&ed25519.to_bytes()))
}

/// The protocol peer id of a libp2p peer. ed25519 peer ids embed the public key (identity
/// multihash), and noise has proven the remote holds it, so no identify round-trip is needed.
/// `None` for peers with other key types, which the mesh does not admit.
#[must_use]
pub fn protocol_peer_id(peer: &libp2p::PeerId) -> Option<PeerId> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH_CODE {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    protocol_peer_id_of_key(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gradmesh-id-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("sub").join("identity.key")
    }

    #[test]
    fn creates_with_0600_then_loads_the_same_key() {
        let path = temp_path("create");
        let created = load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_or_create(&path).expect("load");
        assert_eq!(created.public(), loaded.public());
        let _ = fs::remove_dir_all(path.parent().and_then(Path::parent).expect("dir"));
    }

    #[test]
    fn refuses_readable_or_garbage_files() {
        let path = temp_path("refuse");
        load_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::InsecurePermissions { mode: 0o644, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, b"not a key").expect("write");
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Malformed { .. })
        ));
        let dir = path.parent().expect("dir");
        let error = load_or_create(dir).expect_err("a directory is no identity");
        assert!(error.to_string().contains("is a directory"), "{error}");
        let _ = fs::remove_dir_all(path.parent().and_then(Path::parent).expect("dir"));
    }

    #[test]
    fn peer_ids_map_from_libp2p_ids_and_keys_alike() {
        let keypair = Keypair::generate_ed25519();
        let from_key = protocol_peer_id_of_key(&keypair.public()).expect("ed25519");
        let from_id = protocol_peer_id(&keypair.public().to_peer_id()).expect("identity hash");
        assert_eq!(from_key, from_id);
        let raw = keypair
            .public()
            .try_into_ed25519()
            .expect("ed25519")
            .to_bytes();
        assert_eq!(from_id, PeerId::from_key_bytes(&raw));
    }
}
