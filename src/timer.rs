//! A hierarchical hashed timer wheel, owned by one shard: every transaction and dialog timer
//! of the shard lives here.
//!
//! # What it owns, what it may not touch
//! Deadlines and their payloads. It reads no clock: time comes in as `now: Instant`.
//!
//! # Shape
//! Seven levels of 64 slots; a slot of level `l` spans `64^l` ticks (default tick 10 ms, so the
//! levels reach 640 ms, 41 s, 44 min, 47 h, …). A timer sits in the level given by the highest
//! bit in which its deadline tick differs from the current tick, and moves down a level each
//! time its slot comes due (cascading), reaching level 0 in its last 64 ticks. Entries live in
//! a slab and are linked into their slot's list, so insert and cancel are O(1); per-level
//! occupancy bitmaps find the next due slot without walking empty ticks.
//!
//! # Guarantees
//! A timer with deadline `d` fires at the first tick boundary at or after `d`: never early,
//! at most one tick late. Timers due in different ticks fire in deadline order; timers of the
//! same tick fire in an unspecified order. Handles are generational: cancelling a timer that
//! already fired (or was cancelled) is a harmless no-op.

use std::time::{Duration, Instant};

const LEVELS: usize = 7;
const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
const NIL: u32 = u32::MAX;
/// Largest tick distance the wheel represents; later deadlines are clamped to it.
const MAX_TICKS: u64 = (1 << (SLOT_BITS * LEVELS as u32)) - 1;

/// Identifies a scheduled timer. Stale handles (fired or cancelled) are recognised by their
/// generation and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// Where an entry is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Slot { level: u8, slot: u8 },
    Expired,
}

struct Entry<T> {
    value: Option<T>,
    when: u64,
    prev: u32,
    next: u32,
    generation: u32,
    place: Place,
}

/// The timer wheel. `T` is the payload handed back when a timer fires.
pub struct TimerWheel<T> {
    start: Instant,
    tick_nanos: u64,
    /// The last instant converted by `nanos_since_start`, and its answer.
    last_conversion: (Instant, u64),
    /// Ticks processed so far: every timer due at or before `elapsed` has moved to `expired`.
    elapsed: u64,
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    /// Due timers not yet handed out, in firing order (a FIFO linked through the entries).
    expired_head: u32,
    expired_tail: u32,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// A wheel whose tick 0 is `start`, with ticks of `resolution` (at least 1 ms).
    pub fn new(start: Instant, resolution: Duration) -> Self {
        let tick_nanos = resolution.as_nanos().clamp(1_000_000, u128::from(u64::MAX)) as u64;
        TimerWheel {
            start,
            tick_nanos,
            last_conversion: (start, 0),
            elapsed: 0,
            entries: Vec::new(),
            free: Vec::new(),
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            expired_head: NIL,
            expired_tail: NIL,
            len: 0,
        }
    }

    /// Number of scheduled timers (including due ones not yet polled).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick resolution.
    pub fn resolution(&self) -> Duration {
        Duration::from_nanos(self.tick_nanos)
    }

    /// The first tick boundary at or after `t` (ticks before `start` count as tick 0).
    fn tick_at_or_after(&mut self, t: Instant) -> u64 {
        self.nanos_since_start(t).div_ceil(self.tick_nanos)
    }

    /// The last tick boundary at or before `t`.
    fn tick_at_or_before(&mut self, t: Instant) -> u64 {
        self.nanos_since_start(t) / self.tick_nanos
    }

    /// Nanoseconds from `start` to `t` (0 before it), in u64 arithmetic: a 128-bit
    /// division per timer cost more than the rest of an insert. Saturates after 584 years.
    /// The last answer is kept: timers set while handling one datagram share their deadline
    /// instant, and the polls of one wake-up share `now` (the subtraction of two `Instant`s
    /// costs about as much as the rest of a cancel).
    fn nanos_since_start(&mut self, t: Instant) -> u64 {
        if t == self.last_conversion.0 {
            return self.last_conversion.1;
        }
        let d = t.saturating_duration_since(self.start);
        let nanos = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        self.last_conversion = (t, nanos);
        nanos
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.start + Duration::from_nanos(tick.saturating_mul(self.tick_nanos))
    }

    /// Schedules `value` to fire at `deadline`.
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerHandle {
        let when = self.tick_at_or_after(deadline);
        self.insert_at_tick(when, value)
    }

    /// Schedules `value` to fire `after` from `now`: as `insert(now + after, value)`, but
    /// `now` is converted to the wheel's time once for every timer set at that instant (a
    /// datagram's handling sets several), and `after` costs no `Instant` arithmetic. (A
    /// `now` before the wheel's start counts as the start.)
    pub fn insert_after(&mut self, now: Instant, after: Duration, value: T) -> TimerHandle {
        let when = self.tick_after(now, after);
        self.insert_at_tick(when, value)
    }

    /// The first tick boundary at or after `after` from `now`.
    fn tick_after(&mut self, now: Instant, after: Duration) -> u64 {
        let after_nanos = after
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(after.subsec_nanos()));
        self.nanos_since_start(now)
            .saturating_add(after_nanos)
            .div_ceil(self.tick_nanos)
    }

    fn insert_at_tick(&mut self, when: u64, value: T) -> TimerHandle {
        let when = when.min(self.elapsed.saturating_add(MAX_TICKS));
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    value: None,
                    when: 0,
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                    place: Place::Expired,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let e = &mut self.entries[index as usize];
        e.value = Some(value);
        e.when = when;
        let generation = e.generation;
        self.len += 1;
        self.place(index);
        TimerHandle { index, generation }
    }

    /// When the timer `handle` is due (at the wheel's resolution), or `None` when the
    /// handle is stale.
    pub fn deadline(&self, handle: TimerHandle) -> Option<Instant> {
        let e = self.entries.get(handle.index as usize)?;
        (e.generation == handle.generation && e.value.is_some()).then(|| self.instant_of(e.when))
    }

    /// Cancels a timer; returns its payload, or `None` when the handle is stale.
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        let e = self.entries.get(handle.index as usize)?;
        if e.generation != handle.generation || e.value.is_none() {
            return None;
        }
        self.unlink(handle.index);
        Some(self.release(handle.index))
    }

    /// Moves the timer `handle` to `deadline` with `value`: one unlink and one placement
    /// instead of a cancel and an insert (a transaction's TU deadline becomes its Timer J).
    /// `handle` is stale afterwards; a stale `handle` schedules a new timer.
    /// The deadline is `after` from `now`, as for [`TimerWheel::insert_after`].
    pub fn reschedule(
        &mut self,
        handle: TimerHandle,
        now: Instant,
        after: Duration,
        value: T,
    ) -> TimerHandle {
        let when = self.tick_after(now, after);
        let live = self
            .entries
            .get(handle.index as usize)
            .is_some_and(|e| e.generation == handle.generation && e.value.is_some());
        if !live {
            return self.insert_at_tick(when, value);
        }
        self.unlink(handle.index);
        let when = when.min(self.elapsed.saturating_add(MAX_TICKS));
        let e = &mut self.entries[handle.index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.value = Some(value);
        e.when = when;
        let generation = e.generation;
        self.place(handle.index);
        TimerHandle {
            index: handle.index,
            generation,
        }
    }

    /// The instant of the next tick at which a timer is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.expired_head != NIL {
            return Some(self.instant_of(self.elapsed));
        }
        self.next_due_slot()
            .map(|(_, _, tick)| self.instant_of(tick))
    }

    /// Hands out the next timer due at `now`, in deadline order; `None` when no more are due.
    pub fn poll_expired(&mut self, now: Instant) -> Option<(TimerHandle, T)> {
        if self.expired_head == NIL {
            self.advance(now);
        }
        let index = self.expired_head;
        if index == NIL {
            return None;
        }
        self.unlink(index);
        let generation = self.entries[index as usize].generation;
        let value = self.release(index);
        Some((TimerHandle { index, generation }, value))
    }

    /// Moves every timer due at or before `now` to the expired list.
    fn advance(&mut self, now: Instant) {
        let now_tick = self.tick_at_or_before(now);
        if now_tick <= self.elapsed {
            // Nothing new can be due: reaching `elapsed` moved every timer due by then to
            // the expired list, and later inserts due by then went there directly.
            return;
        }
        while let Some((level, slot, tick)) = self.next_due_slot() {
            if tick > now_tick {
                break;
            }
            self.elapsed = tick;
            // Take the whole slot; each entry fires or drops to a lower level.
            let mut cur = self.heads[level][slot];
            self.heads[level][slot] = NIL;
            self.occupied[level] &= !(1u64 << slot);
            while cur != NIL {
                let next = self.entries[cur as usize].next;
                self.place(cur);
                cur = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
    }

    /// The lowest level's next occupied slot and the tick at which it comes due. Entries in
    /// a lower level are always due before those of a higher one.
    fn next_due_slot(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let bits = self.occupied[level];
            if bits == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let now_slot = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
            // Rotate so that bit 0 is the current slot; the first set bit is the next slot.
            let distance = bits.rotate_right(now_slot).trailing_zeros();
            let slot = ((now_slot + distance) as usize) % SLOTS;
            // The slot's first tick, in the current rotation of this level (a distance of 0
            // at level > 0 means a full turn ahead is impossible: entries there are placed
            // strictly ahead, so it is this turn).
            let level_span = 1u64 << (shift + SLOT_BITS);
            let base = self.elapsed & !(level_span - 1);
            let mut tick = base + ((slot as u64) << shift);
            if tick < (self.elapsed & !((1u64 << shift) - 1)) {
                tick += level_span;
            }
            return Some((level, slot, tick.max(self.elapsed)));
        }
        None
    }

    /// Links entry `index` where its deadline puts it relative to `elapsed`.
    fn place(&mut self, index: u32) {
        let when = self.entries[index as usize].when;
        if when <= self.elapsed {
            self.push_expired(index);
            return;
        }
        let masked = (self.elapsed ^ when) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((when >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize;
        let head = self.heads[level][slot];
        {
            let e = &mut self.entries[index as usize];
            e.prev = NIL;
            e.next = head;
            e.place = Place::Slot {
                level: level as u8,
                slot: slot as u8,
            };
        }
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[level][slot] = index;
        self.occupied[level] |= 1u64 << slot;
    }

    fn push_expired(&mut self, index: u32) {
        let tail = self.expired_tail;
        {
            let e = &mut self.entries[index as usize];
            e.prev = tail;
            e.next = NIL;
            e.place = Place::Expired;
        }
        if tail == NIL {
            self.expired_head = index;
        } else {
            self.entries[tail as usize].next = index;
        }
        self.expired_tail = index;
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, place) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next, e.place)
        };
        if prev != NIL {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        match place {
            Place::Slot { level, slot } => {
                let (level, slot) = (level as usize, slot as usize);
                if self.heads[level][slot] == index {
                    self.heads[level][slot] = next;
                    if next == NIL {
                        self.occupied[level] &= !(1u64 << slot);
                    }
                }
            }
            Place::Expired => {
                if self.expired_head == index {
                    self.expired_head = next;
                }
                if self.expired_tail == index {
                    self.expired_tail = prev;
                }
            }
        }
    }

    fn release(&mut self, index: u32) -> T {
        let e = &mut self.entries[index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.prev = NIL;
        e.next = NIL;
        self.free.push(index);
        self.len -= 1;
        // Only called on linked (occupied) entries, whose value is always Some.
        e.value
            .take()
            .expect("a linked timer entry always holds its value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    const RES: Duration = Duration::from_millis(10);

    #[test]
    fn reschedule_moves_a_timer_and_stales_its_old_handle() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w: TimerWheel<u32> = TimerWheel::new(t0, ms(10));
        let a = w.insert(t0 + ms(100), 1);
        let b = w.reschedule(a, t0, ms(5_000), 2);
        assert_ne!(a, b);
        assert_eq!(w.len(), 1);
        assert_eq!(w.cancel(a), None, "the old handle is stale");
        assert_eq!(
            w.poll_expired(t0 + ms(4_990)),
            None,
            "not at the old deadline"
        );
        let (fired, value) = w.poll_expired(t0 + ms(5_000)).expect("due at the new one");
        assert_eq!((fired, value), (b, 2));
        assert!(w.is_empty());
        // A stale handle schedules a new timer.
        let c = w.reschedule(b, t0 + ms(1_000), ms(5_000), 3);
        assert_eq!(w.len(), 1);
        assert_eq!(w.poll_expired(t0 + ms(6_000)).map(|(_, v)| v), Some(3));
        assert_eq!(w.cancel(c), None);
    }

    #[test]
    fn fires_at_the_first_tick_at_or_after_the_deadline() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, RES);
        w.insert(t0 + Duration::from_millis(25), "a");
        w.insert(t0 + Duration::from_millis(10), "b");
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(w.poll_expired(t0 + Duration::from_millis(9)), None);
        assert_eq!(
            w.poll_expired(t0 + Duration::from_millis(10)).map(|x| x.1),
            Some("b")
        );
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(30)));
        assert_eq!(w.poll_expired(t0 + Duration::from_millis(29)), None);
        assert_eq!(
            w.poll_expired(t0 + Duration::from_millis(30)).map(|x| x.1),
            Some("a")
        );
        assert!(w.is_empty());
    }

    #[test]
    fn stale_handles_are_harmless() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, RES);
        let h = w.insert(t0 + Duration::from_secs(1), 1);
        assert_eq!(w.cancel(h), Some(1));
        assert_eq!(w.cancel(h), None);
        let h2 = w.insert(t0 + Duration::from_secs(1), 2); // reuses the slab slot
        assert_eq!(
            w.cancel(h),
            None,
            "old generation must not cancel the new timer"
        );
        assert_eq!(w.len(), 1);
        let (fired, v) = w.poll_expired(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((fired, v), (h2, 2));
        assert_eq!(w.cancel(h2), None);
    }

    #[test]
    fn long_deadlines_cascade_down() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, RES);
        for secs in [1u64, 60, 3600, 7200] {
            w.insert(t0 + Duration::from_secs(secs), secs);
        }
        let mut fired = Vec::new();
        let mut wakeups = 0;
        while let Some(d) = w.next_deadline() {
            // A wake-up may only cascade timers down a level; it never fires one early.
            while let Some((_, v)) = w.poll_expired(d) {
                assert_eq!(
                    d,
                    t0 + Duration::from_secs(v),
                    "fires exactly on a tick boundary"
                );
                fired.push(v);
            }
            wakeups += 1;
        }
        assert!(wakeups < 40, "{wakeups} wake-ups for 4 timers");
        assert_eq!(fired, [1, 60, 3600, 7200]);
    }

    /// Random inserts, cancels and advances against a BTreeMap model: every timer fires in
    /// the poll that first reaches its deadline's tick, never early, never a tick late.
    #[test]
    fn matches_a_btreemap_model() {
        for seed in 0..40u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let t0 = Instant::now();
            let mut w = TimerWheel::new(t0, RES);
            let mut model: BTreeMap<(u64, u64), TimerHandle> = BTreeMap::new();
            let mut now = t0;
            let mut id = 0u64;
            for _ in 0..3_000 {
                match rng.next_u32() % 10 {
                    0..=4 => {
                        // deadlines from 1 ms to ~1 hour, biased to short ones
                        let ms = match rng.next_u32() % 4 {
                            0 => 1 + rng.next_u64() % 100,
                            1 => 1 + rng.next_u64() % 5_000,
                            2 => 1 + rng.next_u64() % 120_000,
                            _ => 1 + rng.next_u64() % 3_600_000,
                        };
                        let deadline = now + Duration::from_millis(ms);
                        let h = w.insert(deadline, id);
                        let due = deadline.duration_since(t0).as_nanos() as u64;
                        model.insert((due, id), h);
                        id += 1;
                    }
                    5..=6 => {
                        if let Some((&k, &h)) = model
                            .iter()
                            .nth(rng.next_u32() as usize % model.len().max(1))
                        {
                            assert_eq!(w.cancel(h), Some(k.1));
                            model.remove(&k);
                        }
                    }
                    _ => {
                        let step = Duration::from_millis(match rng.next_u32() % 3 {
                            0 => rng.next_u64() % 20,
                            1 => rng.next_u64() % 2_000,
                            _ => rng.next_u64() % 600_000,
                        });
                        now += step;
                        let now_ns = now.duration_since(t0).as_nanos() as u64;
                        let res_ns = RES.as_nanos() as u64;
                        let now_tick_ns = now_ns / res_ns * res_ns;
                        let mut fired = Vec::new();
                        while let Some((_, v)) = w.poll_expired(now) {
                            fired.push(v);
                        }
                        // The model: everything whose deadline rounds up to a tick <= now.
                        let due: Vec<_> = model
                            .keys()
                            .filter(|(d, _)| d.div_ceil(res_ns) * res_ns <= now_tick_ns)
                            .copied()
                            .collect();
                        let mut want: Vec<_> = due.iter().map(|k| k.1).collect();
                        for k in &due {
                            model.remove(k);
                        }
                        let mut got = fired.clone();
                        got.sort_unstable();
                        want.sort_unstable();
                        assert_eq!(got, want, "seed {seed}");
                        // Deadline order across ticks.
                        let ticks: Vec<u64> = fired
                            .iter()
                            .map(|v| {
                                due.iter()
                                    .find(|k| k.1 == *v)
                                    .map(|k| k.0.div_ceil(res_ns))
                                    .unwrap_or(0)
                            })
                            .collect();
                        assert!(
                            ticks.windows(2).all(|p| p[0] <= p[1]),
                            "seed {seed}: out of order"
                        );
                    }
                }
                assert_eq!(w.len(), model.len());
                if let (Some(next), Some(((d, _), _))) =
                    (w.next_deadline(), model.first_key_value())
                {
                    // The wheel's next deadline is never later than the earliest model timer's
                    // tick (it may be earlier: a cascade point).
                    let res_ns = RES.as_nanos() as u64;
                    assert!(
                        next.duration_since(t0).as_nanos() as u64 <= d.div_ceil(res_ns) * res_ns
                    );
                }
            }
        }
    }
}
