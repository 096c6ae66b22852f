//! The table of connected peers: libp2p ids ⇄ protocol ids. Filled on the first connection to a
//! peer and emptied when its last connection closes; the protocol id is derived from the key the
//! noise handshake authenticated (see [`protocol_peer_id`](super::identity::protocol_peer_id)).

use std::collections::BTreeMap;

use gradmesh_protocol::PeerId;

/// Connected peers in both directions. Both maps always hold the same pairs.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    by_transport: BTreeMap<libp2p::PeerId, PeerId>,
    by_protocol: BTreeMap<PeerId, libp2p::PeerId>,
}

impl PeerTable {
    /// Records a connected peer; `false` when it was already known.
    pub(crate) fn insert(&mut self, transport: libp2p::PeerId, protocol: PeerId) -> bool {
        let is_new = self.by_transport.insert(transport, protocol).is_none();
        self.by_protocol.insert(protocol, transport);
        debug_assert_eq!(self.by_transport.len(), self.by_protocol.len());
        is_new
    }

    /// Forgets a peer; returns its protocol id when it was known.
    pub(crate) fn remove(&mut self, transport: &libp2p::PeerId) -> Option<PeerId> {
        let protocol = self.by_transport.remove(transport)?;
        self.by_protocol.remove(&protocol);
        debug_assert_eq!(self.by_transport.len(), self.by_protocol.len());
        Some(protocol)
    }

    pub(crate) fn transport_of(&self, protocol: &PeerId) -> Option<libp2p::PeerId> {
        self.by_protocol.get(protocol).copied()
    }

    pub(crate) fn protocol_of(&self, transport: &libp2p::PeerId) -> Option<PeerId> {
        self.by_transport.get(transport).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_remove() {
        let transport = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let protocol = PeerId::from_index(1);
        let mut table = PeerTable::default();
        assert!(table.insert(transport, protocol));
        assert!(!table.insert(transport, protocol));
        assert_eq!(table.transport_of(&protocol), Some(transport));
        assert_eq!(table.protocol_of(&transport), Some(protocol));
        assert_eq!(table.remove(&transport), Some(protocol));
        assert_eq!(table.transport_of(&protocol), None);
        assert_eq!(table.remove(&transport), None);
    }
}
