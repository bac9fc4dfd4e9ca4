//! A ring of a fixed number of slots: once full, each push overwrites the oldest one, so its
//! memory is set when it is made, whatever is pushed into it.

/// Up to `capacity` values, oldest first; the slots are allocated once, at creation.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    slots: Vec<T>,
    capacity: usize,
    /// Where the next push goes once the ring is full (the oldest value).
    next: usize,
}

impl<T> Ring<T> {
    /// A ring of `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Ring {
            slots: Vec::with_capacity(capacity),
            capacity,
            next: 0,
        }
    }

    /// Add a value, dropping the oldest one when the ring is full.
    pub fn push(&mut self, value: T) {
        if self.slots.len() < self.capacity {
            self.slots.push(value);
        } else if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = value;
            self.next = (self.next + 1) % self.capacity;
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + Clone + '_ {
        let (newer, older) = self.slots.split_at(self.next);
        older.iter().chain(newer.iter())
    }

    /// The most recent value.
    pub fn last(&self) -> Option<&T> {
        self.iter().next_back()
    }

    /// The most recent `n` values, oldest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &T> + '_ {
        self.iter().skip(self.len().saturating_sub(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_values_in_order() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        assert_eq!(ring.last(), None);
        for v in 1..=2 {
            ring.push(v);
        }
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [1, 2]);
        for v in 3..=7 {
            ring.push(v);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(ring.last(), Some(&7));
        assert_eq!(ring.recent(2).copied().collect::<Vec<_>>(), [6, 7]);
        assert_eq!(ring.recent(10).count(), 3);
    }

    #[test]
    fn memory_is_set_at_creation() {
        let mut ring = Ring::new(900);
        let allocated = ring.slots.capacity();
        for v in 0..100_000u64 {
            ring.push(v);
        }
        assert_eq!(ring.len(), 900);
        assert_eq!(ring.slots.capacity(), allocated);
        assert_eq!(ring.iter().next(), Some(&(100_000 - 900)));
    }

    #[test]
    fn a_ring_has_at_least_one_slot() {
        let mut ring = Ring::new(0);
        ring.push('a');
        ring.push('b');
        assert_eq!(ring.iter().copied().collect::<String>(), "b");
    }
}
