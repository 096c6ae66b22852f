//! Max-min fair rates by progressive filling, recomputed only on the connected component of the
//! links whose flow set changed.
//!
//! Progressive filling: every unfrozen flow's rate rises together until some link saturates; the
//! flows crossing it freeze at that link's fair share (residual / unfrozen flows), and the others
//! continue. Processing links in increasing order of fair share with a heap gives exactly that
//! order, because freezing a flow at the minimal share never lowers another link's share:
//! (r − s)/(n − 1) ≥ r/n whenever s ≤ r/n. That monotonicity also permits a lazy heap (entries are
//! refreshed when popped, not when updated). Cost: O(F·k + L·log L) for the F flows and L links
//! of the affected component, each flow crossing k ≤ 4 links, plus one heap operation per observed
//! share rise. Flows in other components keep their
//! rates, which is what makes a 10,000-peer run of independent groups cheap.

use super::flow::{FlowSlot, FlowTable, LinkIdx};
use crate::time::SimTime;
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// Reusable scratch space for recomputations (no allocation in steady state).
#[derive(Debug, Default)]
pub(crate) struct Solver {
    stamp: u32,
    comp_links: Vec<LinkIdx>,
    comp_flows: Vec<FlowSlot>,
    stack: Vec<LinkIdx>,
    /// Min-heap of (fair share as f64 bits, link). Positive f64s order like their bit patterns.
    heap: BinaryHeap<Reverse<(u64, LinkIdx)>>,
    /// Flow-link incidences visited by all recomputations so far (a cost measure).
    pub(crate) visits_total: u64,
    pub(crate) recomputes_total: u64,
}

/// A flow whose rate changed, with its new completion time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rescheduled {
    pub(crate) finish_at: SimTime,
    pub(crate) slot: FlowSlot,
    pub(crate) version: u32,
    /// The flow's send order, to complete same-instant flows in send order.
    pub(crate) seq: u64,
}

impl Solver {
    /// Recomputes the rates of every flow connected to `dirty` links, settling their progress at
    /// `now` first, and pushes the new completion time of each flow whose rate changed.
    pub(crate) fn recompute<P>(
        &mut self,
        table: &mut FlowTable<P>,
        dirty: &[LinkIdx],
        now: SimTime,
        out: &mut Vec<Rescheduled>,
    ) {
        self.stamp = self.stamp.wrapping_add(1);
        self.collect_component(table, dirty);
        self.fill(table);
        self.apply(table, now, out);
        self.recomputes_total += 1;
    }

    /// Depth-first walk link → flows → links, marking visited links and flows with the stamp.
    fn collect_component<P>(&mut self, table: &mut FlowTable<P>, dirty: &[LinkIdx]) {
        self.comp_links.clear();
        self.comp_flows.clear();
        self.stack.clear();
        for &l in dirty {
            if table.links[l as usize].stamp != self.stamp {
                table.links[l as usize].stamp = self.stamp;
                self.stack.push(l);
            }
        }
        while let Some(l) = self.stack.pop() {
            self.comp_links.push(l);
            let degree = table.links[l as usize].flows.len();
            for i in 0..degree {
                let slot = table.links[l as usize].flows[i];
                let flow = &mut table.flows[slot as usize];
                if flow.stamp == self.stamp {
                    continue;
                }
                flow.stamp = self.stamp;
                flow.frozen = false;
                self.comp_flows.push(slot);
                let (links, n) = (flow.links, usize::from(flow.n_links));
                for &other in &links[..n] {
                    let o = &mut table.links[other as usize];
                    if o.stamp != self.stamp {
                        o.stamp = self.stamp;
                        self.stack.push(other);
                    }
                }
            }
            self.visits_total += degree as u64;
        }
    }

    /// Progressive filling over the collected component; writes `new_rate` of each flow.
    fn fill<P>(&mut self, table: &mut FlowTable<P>) {
        self.heap.clear();
        for &l in &self.comp_links {
            let link = &mut table.links[l as usize];
            link.residual = link.capacity;
            link.unfrozen = u32::try_from(link.flows.len()).unwrap_or(u32::MAX);
            if link.unfrozen > 0 {
                self.heap
                    .push(Reverse((share_key(link.residual, link.unfrozen), l)));
            }
        }
        while let Some(Reverse((key, l))) = self.heap.pop() {
            let link = &table.links[l as usize];
            if link.unfrozen == 0 {
                continue; // Saturated already.
            }
            // Shares only rise while filling, so entries are not pushed on updates: a popped
            // entry whose link's share has risen since goes back with its current share (lazy
            // increase-key): one push per link plus one per rise actually observed.
            let current = share_key(link.residual, link.unfrozen);
            if f64::from_bits(current) > f64::from_bits(key) * (1.0 + SHARE_TOLERANCE) {
                self.heap.push(Reverse((current, l)));
                continue;
            }
            let share = f64::from_bits(current);
            for i in 0..table.links[l as usize].flows.len() {
                let slot = table.links[l as usize].flows[i];
                if !table.flows[slot as usize].frozen {
                    freeze(table, slot, share);
                }
            }
        }
    }

    /// Settles progress at `now` for flows whose rate changes and reschedules their completion.
    fn apply<P>(&self, table: &mut FlowTable<P>, now: SimTime, out: &mut Vec<Rescheduled>) {
        for &slot in &self.comp_flows {
            let flow = &mut table.flows[slot as usize];
            if flow.new_rate.to_bits() == flow.rate.to_bits() {
                continue;
            }
            let elapsed_s = now.micros_since(flow.updated_at) as f64 / 1e6;
            flow.remaining = (flow.remaining - flow.rate * elapsed_s).max(0.0);
            flow.updated_at = now;
            flow.rate = flow.new_rate;
            flow.version = flow.version.wrapping_add(1);
            let finish_us = crate::time::secs_to_micros_ceil(flow.remaining / flow.rate);
            out.push(Rescheduled {
                finish_at: now.plus_micros(finish_us),
                slot,
                version: flow.version,
                seq: flow.seq,
            });
        }
    }
}

/// Relative slack under which a popped share counts as current: float rounding may make a share
/// that is mathematically unchanged differ in its last bits.
const SHARE_TOLERANCE: f64 = 1e-12;

/// Freezes `slot` at `share`, taking it off the residual of every link it crosses.
fn freeze<P>(table: &mut FlowTable<P>, slot: FlowSlot, share: f64) {
    let flow = &mut table.flows[slot as usize];
    flow.frozen = true;
    flow.new_rate = share;
    let (links, n) = (flow.links, usize::from(flow.n_links));
    for &l in &links[..n] {
        let link = &mut table.links[l as usize];
        link.residual = (link.residual - share).max(0.0);
        link.unfrozen -= 1;
    }
}

/// The fair share `residual / unfrozen` as an ordered key. A share is kept strictly positive (a
/// float residue of zero would stall a flow forever), so bit order equals numeric order.
fn share_key(residual: f64, unfrozen: u32) -> u64 {
    (residual / f64::from(unfrozen))
        .max(f64::MIN_POSITIVE)
        .to_bits()
}
