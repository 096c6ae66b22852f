//! Transports: TCP + noise + yamux, optionally wrapped in a pnet pre-shared key, and QUIC when
//! no mesh key is set; and circuits through relays (for peers behind NAT), upgraded like TCP.
//!
//! pnet encrypts the raw TCP stream with the mesh key before noise runs, so a peer without the
//! key cannot even start the noise handshake. It cannot wrap QUIC (QUIC brings its own TLS over
//! UDP), so with a mesh key QUIC is left out entirely rather than opening a door that skips it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, noise, quic, relay, tcp, yamux};

use super::identity::open_to_others;

/// Upper bound on a whole connection upgrade (pnet, noise, yamux negotiation). A peer with a
/// different mesh key decrypts our handshake to garbage; when that garbage reads as a long
/// length prefix the handshake waits for bytes that never come, and only this timeout ends it.
/// A real handshake takes a few round trips, far below it.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Key files are three short lines; anything larger is not one.
const MESH_KEY_FILE_BYTES_MAX: u64 = 4096;

/// The transport every swarm of the node runs on.
pub(crate) type MeshTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// Why a mesh key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshKeyError {
    /// The file could not be read.
    #[error("mesh key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The contents are neither a `/key/swarm/psk/1.0.0/` file nor 64 hex digits.
    #[error("mesh key file {path}: expected a /key/swarm/psk/1.0.0/ key file or 64 hex digits")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The file may be read by group or others (the key is the mesh's only secret).
    #[error(
        "mesh key file {path} has mode {mode:o}; it must not be accessible to group/others \
         (chmod 600 {path})"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Parses a mesh key: either the standard key-file format
/// (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits on three lines) or the 64 hex digits alone.
pub fn parse_mesh_key(text: &str) -> Option<PreSharedKey> {
    let trimmed = text.trim();
    if trimmed.starts_with("/key/swarm/psk/1.0.0/") {
        return PreSharedKey::from_str(trimmed).ok();
    }
    if trimmed.len() != 64 || !trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(trimmed, &mut key).ok()?;
    Some(PreSharedKey::new(key))
}

/// Reads a mesh key file (see [`parse_mesh_key`]).
pub fn read_mesh_key(path: &Path) -> Result<PreSharedKey, MeshKeyError> {
    let io_err = |source| MeshKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let malformed = || MeshKeyError::Malformed {
        path: path.to_owned(),
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if let Some(mode) = open_to_others(&meta) {
        return Err(MeshKeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MESH_KEY_FILE_BYTES_MAX {
        return Err(malformed());
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    parse_mesh_key(&text).ok_or_else(malformed)
}

/// Builds the node's transport: circuits through `relay` (the relay client's transport) first,
/// since TCP would refuse their addresses anyway, then TCP (and QUIC without a mesh key). Noise
/// authenticates the peer (its libp2p id is its key), over a circuit as over TCP: the relay
/// only ever sees ciphertext, and with a mesh key the circuit is wrapped in pnet as well.
pub(crate) fn build_transport(
    keypair: &Keypair,
    mesh_key: Option<PreSharedKey>,
    relay: relay::client::Transport,
) -> Result<MeshTransport, noise::Error> {
    let tcp_config = tcp::Config::default().nodelay(true);
    let (relayed, direct) = match mesh_key {
        None => {
            let tcp = secure_and_multiplex(tcp::tokio::Transport::new(tcp_config), keypair)?;
            let quic = quic::tokio::Transport::new(quic::Config::new(keypair))
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
            let direct = tcp
                .or_transport(quic)
                .map(|either, _| either.into_inner())
                .boxed();
            (secure_and_multiplex(relay, keypair)?, direct)
        }
        Some(psk) => {
            let tcp = tcp::tokio::Transport::new(tcp_config)
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket));
            let relay = relay.and_then(move |circuit, _| PnetConfig::new(psk).handshake(circuit));
            (
                secure_and_multiplex(relay, keypair)?,
                secure_and_multiplex(tcp, keypair)?,
            )
        }
    };
    Ok(relayed
        .or_transport(direct)
        .map(|either, _| either.into_inner())
        .boxed())
}

fn secure_and_multiplex<T>(base: T, keypair: &Keypair) -> Result<MeshTransport, noise::Error>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    Ok(base
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn key_file_and_bare_hex_give_the_same_key() {
        let bare = parse_mesh_key(HEX).expect("hex");
        let file =
            parse_mesh_key(&format!("/key/swarm/psk/1.0.0/\n/base16/\n{HEX}\n")).expect("file");
        assert_eq!(
            bare.fingerprint().to_string(),
            file.fingerprint().to_string()
        );
        assert_eq!(
            file.to_key_file(),
            format!("/key/swarm/psk/1.0.0/\n/base16/\n{HEX}\n")
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for text in [
            "",
            "abc",
            &HEX[..63],
            &format!("{HEX}00"),
            "/key/swarm/psk/1.0.0/\n/base64/\nAA",
        ] {
            assert!(parse_mesh_key(text).is_none(), "{text:?}");
        }
        let non_hex = HEX.replace('0', "g");
        assert!(parse_mesh_key(&non_hex).is_none());
    }

    /// The mesh key is a secret like the identity: a file others may read is refused by name.
    #[test]
    fn a_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("mesh.key");
        std::fs::write(&path, HEX).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_mesh_key(&path).expect_err("0644 is refused");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(read_mesh_key(&path).is_ok());
    }
}
