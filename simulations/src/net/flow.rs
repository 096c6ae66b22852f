//! Flow storage: a slab of active flows and, per link, the list of flows crossing it.
//!
//! Both directions of the flow↔link incidence are kept so that starting, finishing and cancelling
//! a flow are O(links per flow) (swap-remove with back-pointers) and a rate recomputation can walk
//! the connected component of the links it touches without scanning every flow.

use crate::time::SimTime;

/// Index of a link (a peer's uplink or downlink, or a site's WAN uplink or downlink).
pub(crate) type LinkIdx = u32;
/// Index of a flow slot in the slab.
pub(crate) type FlowSlot = u32;
/// A flow crosses the sender's uplink, the receiver's downlink and, between sites, the two sites'
/// WAN links: never more than four.
pub(crate) const LINKS_PER_FLOW_MAX: usize = 4;

/// One shared resource with a capacity in bytes per second.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) capacity: f64,
    pub(crate) flows: Vec<FlowSlot>,
    /// Scratch for the max-min solver: visit stamp, residual capacity, unfrozen flow count.
    pub(crate) stamp: u32,
    pub(crate) residual: f64,
    pub(crate) unfrozen: u32,
}

/// One message in transit through its links.
#[derive(Debug)]
pub(crate) struct Flow<P> {
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) links: [LinkIdx; LINKS_PER_FLOW_MAX],
    pub(crate) n_links: u8,
    /// `pos[i]` is this flow's index in `links[i]`'s flow list.
    pos: [u32; LINKS_PER_FLOW_MAX],
    /// Bytes still to send as of `updated_at`, at the current `rate` (bytes/s).
    pub(crate) remaining: f64,
    pub(crate) rate: f64,
    pub(crate) updated_at: SimTime,
    /// Bumped on every rate change, so stale completion entries can be recognized.
    pub(crate) version: u32,
    pub(crate) stamp: u32,
    pub(crate) frozen: bool,
    pub(crate) new_rate: f64,
    /// Send order (unique per network).
    pub(crate) seq: u64,
    pub(crate) message: Option<P>,
}

/// What a new flow needs; the table fills in the bookkeeping.
#[derive(Debug)]
pub(crate) struct NewFlow<P> {
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) links: [LinkIdx; LINKS_PER_FLOW_MAX],
    pub(crate) n_links: u8,
    pub(crate) wire_bytes: f64,
    pub(crate) now: SimTime,
    pub(crate) seq: u64,
    pub(crate) message: P,
}

/// The slab of flows plus the links they cross.
#[derive(Debug)]
pub(crate) struct FlowTable<P> {
    pub(crate) flows: Vec<Flow<P>>,
    free: Vec<FlowSlot>,
    live: usize,
    pub(crate) links: Vec<Link>,
}

impl<P> FlowTable<P> {
    pub(crate) fn new(capacities: impl IntoIterator<Item = f64>) -> Self {
        let links = capacities
            .into_iter()
            .map(|capacity| Link {
                capacity,
                flows: Vec::new(),
                stamp: 0,
                residual: 0.0,
                unfrozen: 0,
            })
            .collect();
        Self {
            flows: Vec::new(),
            free: Vec::new(),
            live: 0,
            links,
        }
    }

    pub(crate) const fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn is_live(&self, slot: FlowSlot) -> bool {
        self.flows
            .get(slot as usize)
            .is_some_and(|f| f.message.is_some())
    }

    /// Adds a flow (rate 0 until the next recomputation) and returns its slot.
    pub(crate) fn insert(&mut self, new: NewFlow<P>) -> FlowSlot {
        let flow = Flow {
            src: new.src,
            dst: new.dst,
            links: new.links,
            n_links: new.n_links,
            pos: [0; LINKS_PER_FLOW_MAX],
            remaining: new.wire_bytes,
            rate: 0.0,
            updated_at: new.now,
            version: 0,
            stamp: 0,
            frozen: false,
            new_rate: 0.0,
            seq: new.seq,
            message: Some(new.message),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let version = self.flows[slot as usize].version.wrapping_add(1);
                self.flows[slot as usize] = Flow { version, ..flow };
                slot
            }
            None => {
                self.flows.push(flow);
                u32::try_from(self.flows.len() - 1).expect("fewer than 2^32 concurrent flows")
            }
        };
        let f = &mut self.flows[slot as usize];
        for i in 0..usize::from(f.n_links) {
            let link = &mut self.links[f.links[i] as usize];
            f.pos[i] = u32::try_from(link.flows.len()).expect("fewer than 2^32 flows per link");
            link.flows.push(slot);
        }
        self.live += 1;
        slot
    }

    /// Removes a live flow, detaching it from its links, and returns its message.
    pub(crate) fn remove(&mut self, slot: FlowSlot) -> Option<P> {
        let message = self.flows[slot as usize].message.take()?;
        let (links, pos, n) = {
            let f = &self.flows[slot as usize];
            (f.links, f.pos, usize::from(f.n_links))
        };
        for i in 0..n {
            let link_idx = links[i];
            let list = &mut self.links[link_idx as usize].flows;
            let at = pos[i] as usize;
            list.swap_remove(at);
            if let Some(&moved) = list.get(at) {
                let m = &mut self.flows[moved as usize];
                let k = m.links[..usize::from(m.n_links)]
                    .iter()
                    .position(|&l| l == link_idx)
                    .expect("a flow listed on a link crosses that link");
                m.pos[k] = pos[i];
            }
        }
        let f = &mut self.flows[slot as usize];
        f.version = f.version.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_flow(src: u32, dst: u32, links: &[LinkIdx]) -> NewFlow<u32> {
        let mut l = [0; LINKS_PER_FLOW_MAX];
        l[..links.len()].copy_from_slice(links);
        NewFlow {
            src,
            dst,
            links: l,
            n_links: u8::try_from(links.len()).unwrap(),
            wire_bytes: 10.0,
            now: SimTime::ZERO,
            seq: 0,
            message: src * 100 + dst,
        }
    }

    #[test]
    fn insert_remove_keeps_link_lists_consistent() {
        let mut t = FlowTable::new([1.0, 1.0, 1.0]);
        let a = t.insert(new_flow(0, 1, &[0, 1]));
        let b = t.insert(new_flow(0, 2, &[0, 2]));
        let c = t.insert(new_flow(1, 2, &[1, 2]));
        assert_eq!(t.remove(a), Some(1));
        assert_eq!(t.links[0].flows, vec![b]);
        assert_eq!(t.links[1].flows, vec![c]);
        assert_eq!(t.remove(a), None);
        let d = t.insert(new_flow(2, 0, &[2, 0]));
        assert_eq!(d, a, "slots are reused");
        assert_eq!(t.remove(b), Some(2));
        assert_eq!(t.links[2].flows, vec![d, c]);
        assert_eq!(t.remove(c), Some(102));
        assert_eq!(t.remove(d), Some(200));
        assert_eq!(t.live(), 0);
        assert!(t.links.iter().all(|l| l.flows.is_empty()));
    }
}
