//! The order of the line: requests holding a pass first (FIFO) while passes are under their
//! share of the concurrency (the caller says so), then new arrivals by deficit round robin
//! across tenants (quantum = the tenant's weight, each request costs 1), first come first
//! served inside a tenant.
//!
//! Every operation is O(1) amortised except the rare insertion of a returning ticket holder
//! in the middle of its tenant's line (a binary search and a shift). Cancellation (a client that
//! gives up, or whose `hold` ran out) marks its entry dead in place; dead entries are skipped
//! when they reach the front, and a line or the round-robin ring is compacted once dead entries
//! outnumber live ones, so memory stays proportional to the live waiters.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The place of an entry in its line: arrival sequence (kept by tickets), then a unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub seq: u64,
    pub id: u64,
}

/// Dead entries a line may carry beyond its live count before it is compacted.
const SLACK: usize = 32;

struct Entry<T> {
    key: Key,
    item: Option<T>,
}

/// One FIFO line, sorted by key.
struct Line<T> {
    entries: VecDeque<Entry<T>>,
    live: usize,
    weight: u32,
    deficit: u32,
    /// Which ring slot is this line's (stale ring slots carry an older epoch).
    epoch: u64,
}

impl<T> Line<T> {
    fn new(weight: u32, epoch: u64) -> Self {
        Line {
            entries: VecDeque::new(),
            live: 0,
            weight: weight.max(1),
            deficit: 0,
            epoch,
        }
    }

    fn insert(&mut self, key: Key, item: T) {
        let entry = Entry {
            key,
            item: Some(item),
        };
        match self.entries.back() {
            Some(last) if last.key > key => {
                let at = self.entries.partition_point(|e| e.key < key);
                self.entries.insert(at, entry);
            }
            _ => self.entries.push_back(entry),
        }
        self.live += 1;
    }

    fn pop(&mut self) -> Option<(Key, T)> {
        while let Some(entry) = self.entries.pop_front() {
            if let Some(item) = entry.item {
                self.live -= 1;
                return Some((entry.key, item));
            }
        }
        None
    }

    fn remove(&mut self, key: Key) -> Option<T> {
        let at = self.entries.partition_point(|e| e.key < key);
        let entry = self.entries.get_mut(at).filter(|e| e.key == key)?;
        let item = entry.item.take()?;
        self.live -= 1;
        if self.live == 0 {
            self.entries.clear();
        } else if self.entries.len() > 2 * self.live + SLACK {
            self.entries.retain(|e| e.item.is_some());
        }
        Some(item)
    }

    /// Entries (dead ones included, at most about as many as live ones) before `key`.
    fn ahead(&self, key: Key) -> usize {
        self.entries.partition_point(|e| e.key < key)
    }
}

/// Which line a waiter stands in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Holds a valid pass: goes before every tenant.
    Pass,
    Tenant(Arc<str>),
}

/// The line of one queue.
pub struct Scheduler<T> {
    passes: Line<T>,
    tenants: HashMap<Arc<str>, Line<T>>,
    /// Tenants with waiters, in round-robin order; a slot whose epoch no longer matches its
    /// tenant's line is stale and skipped.
    ring: VecDeque<(Arc<str>, u64)>,
    stale: usize,
    next_epoch: u64,
    live: usize,
    /// Sum of the weights of the tenants in the ring.
    active_weight: u64,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Scheduler<T> {
    pub fn new() -> Self {
        Scheduler {
            passes: Line::new(1, 0),
            tenants: HashMap::new(),
            ring: VecDeque::new(),
            stale: 0,
            next_epoch: 1,
            live: 0,
            active_weight: 0,
        }
    }

    /// Live waiters, all lines together.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live waiters holding a pass.
    pub fn passes(&self) -> usize {
        self.passes.live
    }

    /// Put a waiter in line. `weight` is used when the tenant's line is created.
    pub fn push(&mut self, class: &Class, key: Key, weight: u32, item: T) {
        self.live += 1;
        match class {
            Class::Pass => self.passes.insert(key, item),
            Class::Tenant(tenant) => {
                let line = match self.tenants.get_mut(tenant) {
                    Some(line) => line,
                    None => {
                        let epoch = self.next_epoch;
                        self.next_epoch += 1;
                        self.ring.push_back((tenant.clone(), epoch));
                        let line = Line::new(weight, epoch);
                        self.active_weight += u64::from(line.weight);
                        self.tenants.entry(tenant.clone()).or_insert(line)
                    }
                };
                line.insert(key, item);
            }
        }
    }

    /// Take a waiter out of line (it gave up or its hold ran out). None when it is no longer
    /// there (it was just admitted).
    pub fn remove(&mut self, class: &Class, key: Key) -> Option<T> {
        let item = match class {
            Class::Pass => self.passes.remove(key)?,
            Class::Tenant(tenant) => {
                let line = self.tenants.get_mut(tenant)?;
                let item = line.remove(key)?;
                if line.live == 0 {
                    self.drop_tenant(tenant);
                }
                item
            }
        };
        self.live -= 1;
        Some(item)
    }

    fn drop_tenant(&mut self, tenant: &Arc<str>) {
        if let Some(line) = self.tenants.remove(tenant) {
            self.active_weight -= u64::from(line.weight);
            // Its ring slot goes stale; compact the ring when stale slots dominate.
            self.stale += 1;
            if self.stale > self.tenants.len() + SLACK {
                let tenants = &self.tenants;
                self.ring
                    .retain(|(name, epoch)| tenants.get(name).is_some_and(|l| l.epoch == *epoch));
                self.stale = 0;
            }
        }
    }

    /// The next waiter to admit, with its class.
    pub fn pop(&mut self) -> Option<(Class, Key, T)> {
        self.pop_with(true)
    }

    /// The next waiter to admit; passes go first only when `passes_first` (they are under
    /// their share), else only when no tenant waits.
    pub fn pop_with(&mut self, passes_first: bool) -> Option<(Class, Key, T)> {
        let tenants_waiting = self.live > self.passes.live;
        if passes_first || !tenants_waiting {
            if let Some((key, item)) = self.passes.pop() {
                self.live -= 1;
                return Some((Class::Pass, key, item));
            }
        }
        loop {
            let (tenant, epoch) = self.ring.front()?.clone();
            let Some(line) = self.tenants.get_mut(&tenant).filter(|l| l.epoch == epoch) else {
                self.ring.pop_front();
                self.stale = self.stale.saturating_sub(1);
                continue;
            };
            if line.deficit == 0 {
                line.deficit = line.weight;
            }
            let Some((key, item)) = line.pop() else {
                // Cannot happen (a line in the ring has live entries); heal anyway.
                self.tenants.remove(&tenant);
                self.ring.pop_front();
                continue;
            };
            line.deficit -= 1;
            self.live -= 1;
            if line.live == 0 {
                let weight = line.weight;
                self.tenants.remove(&tenant);
                self.active_weight -= u64::from(weight);
                self.ring.pop_front();
            } else if line.deficit == 0 {
                self.ring.rotate_left(1);
            }
            return Some((Class::Tenant(tenant), key, item));
        }
    }

    /// An estimate of the place in line (1 = next) of the waiter `key` of `class`.
    pub fn position(&self, class: &Class, key: Key) -> usize {
        let place = match class {
            Class::Pass => self.passes.ahead(key) + 1,
            Class::Tenant(tenant) => {
                let Some(line) = self.tenants.get(tenant) else {
                    return self.live.max(1);
                };
                let ahead = line.ahead(key).min(line.live.saturating_sub(1));
                let weight = line.weight as usize;
                let rounds = ahead / weight;
                let others = (self.active_weight as usize).saturating_sub(weight);
                self.passes.live + ahead + 1 + rounds * others
            }
        };
        place.clamp(1, self.live.max(1))
    }

    /// Live waiters per tenant, deepest first, at most `top`.
    pub fn depths(&self, top: usize) -> Vec<(Arc<str>, usize)> {
        let mut all: Vec<(Arc<str>, usize)> = self
            .tenants
            .iter()
            .map(|(name, line)| (name.clone(), line.live))
            .collect();
        let deepest_first = |a: &(Arc<str>, usize), b: &(Arc<str>, usize)| {
            b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
        };
        // The `top` deepest first, without sorting every tenant in line.
        if top < all.len() {
            if top == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(top - 1, deepest_first);
            all.truncate(top);
        }
        all.sort_by(deepest_first);
        all
    }

    /// Tenants with waiters.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Class {
        Class::Tenant(Arc::from(name))
    }

    fn key(seq: u64) -> Key {
        Key { seq, id: seq }
    }

    fn drain(s: &mut Scheduler<u64>, n: usize) -> Vec<(String, u64)> {
        (0..n)
            .filter_map(|_| s.pop())
            .map(|(class, _, item)| match class {
                Class::Pass => ("pass".to_string(), item),
                Class::Tenant(t) => (t.to_string(), item),
            })
            .collect()
    }

    #[test]
    fn deepest_tenants_first() {
        let mut s = Scheduler::new();
        let mut seq = 0;
        for (name, depth) in [("c", 2), ("a", 5), ("d", 1), ("b", 5), ("e", 3)] {
            for _ in 0..depth {
                s.push(&tenant(name), key(seq), 1, seq);
                seq += 1;
            }
        }
        let names = |top| -> Vec<(String, usize)> {
            s.depths(top)
                .into_iter()
                .map(|(t, d)| (t.to_string(), d))
                .collect()
        };
        let all = names(10);
        assert_eq!(
            all,
            [("a", 5), ("b", 5), ("e", 3), ("c", 2), ("d", 1)]
                .map(|(t, d)| (t.to_string(), d))
                .to_vec()
        );
        for top in 0..=5 {
            assert_eq!(names(top), all[..top].to_vec(), "top {top}");
        }
    }

    #[test]
    fn fifo_within_a_tenant() {
        let mut s = Scheduler::new();
        for i in 0..10 {
            s.push(&tenant("a"), key(i), 1, i);
        }
        let order: Vec<u64> = drain(&mut s, 10).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        assert!(s.is_empty());
    }

    #[test]
    fn small_tenant_is_not_stuck_behind_a_big_one() {
        let mut s = Scheduler::new();
        for i in 0..10_000 {
            s.push(&tenant("lycee"), key(i), 1, i);
        }
        for i in 0..3 {
            s.push(&tenant("ecole"), key(20_000 + i), 1, 20_000 + i);
        }
        let first = drain(&mut s, 6);
        let ecole = first.iter().filter(|(t, _)| t == "ecole").count();
        assert_eq!(
            ecole, 3,
            "one in two admissions goes to the small tenant: {first:?}"
        );
    }

    #[test]
    fn weights_share_admissions() {
        let mut s = Scheduler::new();
        for i in 0..1000 {
            s.push(&tenant("a"), key(i), 3, i);
            s.push(&tenant("b"), key(i + 1000), 1, i);
        }
        let got = drain(&mut s, 400);
        let a = got.iter().filter(|(t, _)| t == "a").count();
        assert_eq!(a, 300, "weight 3 against 1 gives three quarters");
    }

    #[test]
    fn passes_go_first() {
        let mut s = Scheduler::new();
        s.push(&tenant("a"), key(1), 1, 1);
        s.push(&Class::Pass, key(2), 1, 2);
        assert_eq!(drain(&mut s, 2), vec![("pass".into(), 2), ("a".into(), 1)]);
    }

    #[test]
    fn a_ticket_goes_before_later_arrivals_of_its_tenant() {
        let mut s = Scheduler::new();
        for i in 10..20 {
            s.push(&tenant("a"), key(i), 1, i);
        }
        // Came back with a ticket from seq 5.
        s.push(&tenant("a"), Key { seq: 5, id: 99 }, 1, 5);
        // And one from the middle.
        s.push(&tenant("a"), Key { seq: 15, id: 1 }, 1, 15_000);
        let order: Vec<u64> = drain(&mut s, 12).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order[0], 5);
        let mid = order.iter().position(|&i| i == 15_000).unwrap();
        assert_eq!(order[mid - 1], 14);
        assert_eq!(order[mid + 1], 15);
    }

    #[test]
    fn removal_and_bounded_memory() {
        let mut s = Scheduler::new();
        for i in 0..1000 {
            s.push(&tenant("a"), key(i), 1, i);
        }
        for i in 0..990 {
            assert_eq!(s.remove(&tenant("a"), key(i)), Some(i));
        }
        assert_eq!(s.remove(&tenant("a"), key(3)), None, "removed once only");
        assert_eq!(s.len(), 10);
        let line = s.tenants.get("a").unwrap();
        assert!(
            line.entries.len() <= 2 * 10 + SLACK,
            "{}",
            line.entries.len()
        );
        let order: Vec<u64> = drain(&mut s, 20).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, (990..1000).collect::<Vec<_>>());
    }

    #[test]
    fn tenants_coming_and_going_leave_nothing_behind() {
        let mut s: Scheduler<u64> = Scheduler::new();
        for i in 0..10_000 {
            let t = tenant(&format!("t{i}"));
            s.push(&t, key(i), 1, i);
            s.remove(&t, key(i));
        }
        assert!(s.is_empty());
        assert_eq!(s.tenant_count(), 0);
        assert!(s.ring.len() <= SLACK + 1, "ring of {}", s.ring.len());
        assert_eq!(s.active_weight, 0);
    }

    #[test]
    fn no_starvation_under_a_stream_of_new_tenants() {
        // A steady flow of new tenants must not starve an old, deep tenant: every tenant in the
        // ring is served once per round.
        let mut s = Scheduler::new();
        for i in 0..100 {
            s.push(&tenant("old"), key(i), 1, i);
        }
        let mut served_old = 0;
        let (mut since_old, mut longest_gap) = (0, 0);
        for round in 0..200u64 {
            s.push(&tenant(&format!("new{round}")), key(1000 + round), 1, 0);
            for (t, _) in drain(&mut s, 2) {
                if t == "old" {
                    served_old += 1;
                    since_old = 0;
                } else if served_old < 100 {
                    since_old += 1;
                    longest_gap = longest_gap.max(since_old);
                }
            }
        }
        assert_eq!(served_old, 100, "the old tenant got through");
        assert!(
            longest_gap <= 2,
            "the old tenant waited {longest_gap} admissions"
        );
    }

    #[test]
    fn position_estimates() {
        let mut s = Scheduler::new();
        for i in 0..10 {
            s.push(&tenant("a"), key(i), 1, i);
        }
        for i in 0..3 {
            s.push(&tenant("b"), key(100 + i), 1, i);
        }
        assert_eq!(s.position(&tenant("a"), key(0)), 1);
        // Third of a: two rounds ahead, each round also serves b.
        assert_eq!(s.position(&tenant("a"), key(2)), 5);
        assert_eq!(s.position(&tenant("b"), key(100)), 1);
        assert!(s.position(&tenant("a"), key(9)) <= s.len());
    }
}
