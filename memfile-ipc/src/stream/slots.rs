//! The producer's bookkeeping of a stream's slots, without any I/O: which slots are free,
//! which consumers hold which frame, and the rule that a slot is free only when nobody
//! holds it. The blocking and the async producer share it.

/// Which slots of one consumer it holds (the frame in it is the slot's current one).
#[derive(Debug)]
pub(crate) struct Holds {
    held: Vec<bool>,
    count: usize,
}

impl Holds {
    pub(crate) fn new(slots: usize) -> Holds {
        Holds {
            held: vec![false; slots],
            count: 0,
        }
    }

    /// How many slots this consumer holds.
    pub(crate) fn count(&self) -> usize {
        self.count
    }
}

/// The pool's slots: free ones on a stack (the most recently released on top: its pages
/// are the warmest), and for each the frame in it and how many consumers hold it.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Vec<u32>,
    holders: Vec<u32>,
    seq: Vec<u64>,
    next_seq: u64,
}

impl Slots {
    pub(crate) fn new(slots: usize) -> Slots {
        // Slot 0 on top: the first loans go in address order.
        let free = (0..slots as u32).rev().collect();
        Slots {
            free,
            holders: vec![0; slots],
            seq: vec![0; slots],
            next_seq: 1,
        }
    }

    /// How many slots nobody holds (and nobody has on loan).
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    /// Takes a free slot for a loan.
    pub(crate) fn take(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Puts back a slot whose loan ended without a publish.
    pub(crate) fn put_back(&mut self, slot: u32) {
        debug_assert_eq!(self.holders[slot as usize], 0);
        self.free.push(slot);
    }

    /// Starts publishing the loaned `slot`: its new frame's sequence number.
    pub(crate) fn begin_publish(&mut self, slot: u32) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq[slot as usize] = seq;
        self.holders[slot as usize] = 0;
        seq
    }

    /// The frame in `slot` went to the consumer whose holds these are.
    pub(crate) fn delivered(&mut self, slot: u32, holds: &mut Holds) {
        let s = slot as usize;
        debug_assert!(!holds.held[s]);
        holds.held[s] = true;
        holds.count += 1;
        self.holders[s] += 1;
    }

    /// Ends a publish: a slot that went to nobody is free at once.
    pub(crate) fn end_publish(&mut self, slot: u32) {
        if self.holders[slot as usize] == 0 {
            self.free.push(slot);
        }
    }

    /// A consumer released frame `seq` in `slot`. `false` (and nothing changes) if it does
    /// not hold that frame: a stale, repeated or invented release.
    pub(crate) fn release(&mut self, holds: &mut Holds, slot: u32, seq: u64) -> bool {
        let s = slot as usize;
        if s >= self.holders.len() || !holds.held[s] || self.seq[s] != seq {
            return false;
        }
        self.drop_hold(holds, s);
        true
    }

    /// A consumer is gone: everything it held is released.
    pub(crate) fn release_all(&mut self, holds: &mut Holds) {
        for s in 0..holds.held.len() {
            if holds.held[s] {
                self.drop_hold(holds, s);
            }
        }
    }

    fn drop_hold(&mut self, holds: &mut Holds, s: usize) {
        holds.held[s] = false;
        holds.count -= 1;
        self.holders[s] -= 1;
        if self.holders[s] == 0 {
            self.free.push(s as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Holds, Slots};

    #[test]
    fn a_slot_is_free_only_when_every_holder_released_it() {
        let mut slots = Slots::new(2);
        let (mut a, mut b) = (Holds::new(2), Holds::new(2));
        let s = slots.take().unwrap();
        assert_eq!(s, 0);
        let seq = slots.begin_publish(s);
        slots.delivered(s, &mut a);
        slots.delivered(s, &mut b);
        slots.end_publish(s);
        assert_eq!(slots.free(), 1);
        assert!(slots.release(&mut a, s, seq));
        assert_eq!(slots.free(), 1, "b still holds it");
        assert!(!slots.release(&mut a, s, seq), "a released it already");
        assert!(!slots.release(&mut b, s, seq + 1), "not b's frame");
        assert!(!slots.release(&mut b, 7, seq), "no such slot");
        assert!(slots.release(&mut b, s, seq));
        assert_eq!(slots.free(), 2);
        assert_eq!((a.count(), b.count()), (0, 0));
    }

    #[test]
    fn a_stale_release_does_not_free_the_slot_s_next_frame() {
        let mut slots = Slots::new(1);
        let mut a = Holds::new(1);
        let s = slots.take().unwrap();
        let first = slots.begin_publish(s);
        slots.delivered(s, &mut a);
        slots.end_publish(s);
        assert!(slots.release(&mut a, s, first));
        let s = slots.take().unwrap();
        let second = slots.begin_publish(s);
        slots.delivered(s, &mut a);
        slots.end_publish(s);
        assert!(
            !slots.release(&mut a, s, first),
            "the first frame's release again"
        );
        assert_eq!(slots.free(), 0);
        assert!(slots.release(&mut a, s, second));
    }

    #[test]
    fn a_gone_consumer_releases_everything_and_unsent_slots_come_back() {
        let mut slots = Slots::new(3);
        let mut a = Holds::new(3);
        for _ in 0..2 {
            let s = slots.take().unwrap();
            slots.begin_publish(s);
            slots.delivered(s, &mut a);
            slots.end_publish(s);
        }
        let s = slots.take().unwrap();
        slots.begin_publish(s);
        slots.end_publish(s); // went to nobody
        assert_eq!(slots.free(), 1);
        slots.release_all(&mut a);
        assert_eq!(slots.free(), 3);
        assert_eq!(a.count(), 0);
        let s = slots.take().unwrap();
        slots.put_back(s);
        assert_eq!(slots.free(), 3);
    }
}
