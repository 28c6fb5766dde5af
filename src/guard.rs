//! Defence against hostile sources (Kamailio's pike and htable bans, in one shard): a limit
//! on requests per source address, limits on failed authentications per source and per
//! user, and bans that drop everything from a source for a while.
//!
//! # What it owns, what it may not touch
//! Counters per source address and per user, for one shard, in bounded tables, and the bans
//! this shard knows (its own, and those its peers told it of). Sans-IO: time comes in as
//! `now`; a ban made here is handed out by the shard to its peers, which are told with
//! [`Guard::ban`]. It writes one log line per ban, and one per failed authentication (at
//! most [`LOG_LINES_PER_SECOND`] a second, the rest counted), in the format the fail2ban
//! filter in `deploy/fail2ban/` matches; it never logs credentials. It reads no message:
//! the shard tells it what failed.
//!
//! Counting is per shard: datagrams are screened by the shard thread that received them
//! (one source's datagrams all reach one socket), and authentications by the shard owning
//! the address-of-record, so a guessing run against one user is counted in one place.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed-authentication lines a shard writes per second at most; the rest are counted in
/// the next line written.
pub const LOG_LINES_PER_SECOND: u32 = 20;

/// Limits per shard. A limit of 0 is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Requests (datagrams and stream messages) one source address may send per `window`
    /// before it is banned (pike's density). Off by default: behind an SBC or a load
    /// generator every request comes from one address; list those in `exempt`.
    pub requests_per_source: u32,
    /// Failed authentications from one source address per `window` before it is banned.
    pub auth_failures_per_source: u32,
    /// Failed authentications for one user per `window` before that user is locked for
    /// `ban` (REGISTERs for it get 403, whatever their credentials): a guessing run spread
    /// over many addresses.
    pub auth_failures_per_user: u32,
    /// The counting window.
    pub window: Duration,
    /// How long a ban or a lock lasts.
    pub ban: Duration,
    /// Addresses never limited nor banned (an upstream proxy, a monitoring host).
    pub exempt: Vec<IpAddr>,
    /// Most sources (and, apart, users) counted at once; past it, expired counts are swept
    /// and a new source waits until there is room (it is let through, uncounted).
    pub max_tracked: usize,
}

impl Default for GuardConfig {
    /// No request limit; 10 failed authentications from one address, or 30 for one user,
    /// in 60 s ban that address (lock that user) for 10 minutes (fail2ban's defaults are
    /// 5 in 10 minutes for 10 minutes).
    fn default() -> Self {
        GuardConfig {
            requests_per_source: 0,
            auth_failures_per_source: 10,
            auth_failures_per_user: 30,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            exempt: Vec::new(),
            max_tracked: 65_536,
        }
    }
}

/// What the guard counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Requests dropped because their source was banned.
    pub dropped_banned: u64,
    /// Bans this shard made (its peers' are not counted here).
    pub bans: u64,
    /// Failed authentications.
    pub auth_failures: u64,
    /// Users locked for failed authentications.
    pub user_locks: u64,
    /// Requests refused because their user was locked.
    pub refused_locked: u64,
    /// Sources or users not counted because the tables were full.
    pub untracked: u64,
}

impl GuardStats {
    /// Adds another shard's counts.
    pub fn merge(&mut self, other: &GuardStats) {
        self.dropped_banned += other.dropped_banned;
        self.bans += other.bans;
        self.auth_failures += other.auth_failures;
        self.user_locks += other.user_locks;
        self.refused_locked += other.refused_locked;
        self.untracked += other.untracked;
    }
}

/// Counts within one window.
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    requests: u32,
    failures: u32,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            requests: 0,
            failures: 0,
        }
    }
}

/// A ban made here, for the shard to tell its peers of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The banned address.
    pub source: IpAddr,
    /// Until when.
    pub until: Instant,
}

/// One shard's guard.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    sources: ahash::HashMap<IpAddr, Window>,
    users: ahash::HashMap<Box<[u8]>, Window>,
    bans: ahash::HashMap<IpAddr, Instant>,
    locks: ahash::HashMap<Box<[u8]>, Instant>,
    stats: GuardStats,
    /// Failure lines written in the current second, when it began, and lines held back.
    log_second: Option<Instant>,
    log_lines: u32,
    log_suppressed: u64,
}

impl Guard {
    /// A guard with `config`'s limits.
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            sources: ahash::HashMap::default(),
            users: ahash::HashMap::default(),
            bans: ahash::HashMap::default(),
            locks: ahash::HashMap::default(),
            stats: GuardStats::default(),
            log_second: None,
            log_lines: 0,
            log_suppressed: 0,
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// Whether a request from `source` at `now` may be processed: false while `source` is
    /// banned, or when it is over its request limit (which bans it; the ban is returned
    /// through `banned`). The common case, no ban and no request limit, is one branch.
    pub fn admit(&mut self, now: Instant, source: IpAddr, banned: &mut Option<Ban>) -> bool {
        if self.bans.is_empty() && self.config.requests_per_source == 0 {
            return true;
        }
        if let Some(&until) = self.bans.get(&source) {
            if now < until {
                self.stats.dropped_banned += 1;
                return false;
            }
            self.bans.remove(&source);
        }
        let limit = self.config.requests_per_source;
        if limit == 0 || self.is_exempt(source) {
            return true;
        }
        let window = self.config.window;
        let Some(counts) = track(
            &mut self.sources,
            source,
            now,
            window,
            self.config.max_tracked,
        ) else {
            self.stats.untracked += 1;
            return true;
        };
        counts.requests += 1;
        if counts.requests > limit {
            *banned = Some(self.ban_here(now, source, "request-rate"));
            self.stats.dropped_banned += 1;
            return false;
        }
        true
    }

    /// Whether `user` is locked at `now` (counted as a refusal when it is).
    pub fn user_locked(&mut self, now: Instant, user: &[u8]) -> bool {
        match self.locks.get(user) {
            Some(&until) if now < until => {
                self.stats.refused_locked += 1;
                true
            }
            Some(_) => {
                self.locks.remove(user);
                false
            }
            None => false,
        }
    }

    /// An authentication from `source` for `user` in `realm` failed: logged (rate-limited)
    /// and counted; returns the ban it caused, if any.
    pub fn auth_failed(
        &mut self,
        now: Instant,
        source: IpAddr,
        user: &[u8],
        realm: &str,
    ) -> Option<Ban> {
        self.stats.auth_failures += 1;
        if self.may_log(now) {
            let suppressed = std::mem::take(&mut self.log_suppressed);
            tracing::warn!(
                target: "sipshard::guard",
                "authentication failed source={source} user={:?} realm={:?} suppressed={suppressed}",
                printable(user),
                realm,
            );
        }
        let (window, max) = (self.config.window, self.config.max_tracked);
        let per_user = self.config.auth_failures_per_user;
        if per_user > 0 {
            match track(&mut self.users, Box::from(user), now, window, max) {
                Some(counts) => {
                    counts.failures += 1;
                    if counts.failures >= per_user && !self.locks.contains_key(user) {
                        self.locks.insert(Box::from(user), now + self.config.ban);
                        self.stats.user_locks += 1;
                        tracing::warn!(
                            target: "sipshard::guard",
                            "user locked user={:?} realm={:?} seconds={} reason=auth-failures",
                            printable(user),
                            realm,
                            self.config.ban.as_secs(),
                        );
                    }
                }
                None => self.stats.untracked += 1,
            }
        }
        let per_source = self.config.auth_failures_per_source;
        if per_source == 0 || self.is_exempt(source) {
            return None;
        }
        let counts = match track(&mut self.sources, source, now, window, max) {
            Some(counts) => counts,
            None => {
                self.stats.untracked += 1;
                return None;
            }
        };
        counts.failures += 1;
        (counts.failures >= per_source && !self.bans.contains_key(&source))
            .then(|| self.ban_here(now, source, "auth-failures"))
    }

    /// A peer shard banned `ban.source`: this shard drops it too. The table is bounded
    /// by `max_tracked`: when full, bans over by the time this one began are swept, and
    /// when still full the oldest-ending ban makes room.
    pub fn ban(&mut self, ban: Ban) {
        if self.bans.len() >= self.config.max_tracked && !self.bans.contains_key(&ban.source) {
            let began = ban.until.checked_sub(self.config.ban).unwrap_or(ban.until);
            self.bans.retain(|_, until| *until > began);
            if self.bans.len() >= self.config.max_tracked
                && let Some(first) = self
                    .bans
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(source, _)| *source)
            {
                self.bans.remove(&first);
            }
        }
        let until = self.bans.entry(ban.source).or_insert(ban.until);
        *until = (*until).max(ban.until);
    }

    /// Whether `source` is banned at `now`.
    pub fn is_banned(&self, now: Instant, source: IpAddr) -> bool {
        self.bans.get(&source).is_some_and(|&until| now < until)
    }

    /// For a message another shard screened before the ban reached it: true (and
    /// counted as dropped) when `source` is banned at `now`. Counts no request.
    pub fn drop_if_banned(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.bans.is_empty() || !self.is_banned(now, source) {
            return false;
        }
        self.stats.dropped_banned += 1;
        true
    }

    fn ban_here(&mut self, now: Instant, source: IpAddr, reason: &str) -> Ban {
        let ban = Ban {
            source,
            until: now + self.config.ban,
        };
        self.ban(ban);
        self.sources.remove(&source);
        self.stats.bans += 1;
        tracing::warn!(
            target: "sipshard::guard",
            "banned source={source} seconds={} reason={reason}",
            self.config.ban.as_secs(),
        );
        ban
    }

    fn is_exempt(&self, source: IpAddr) -> bool {
        self.config.exempt.contains(&source)
    }

    /// Whether one more failure line fits this second's budget.
    fn may_log(&mut self, now: Instant) -> bool {
        let second = self.log_second.get_or_insert(now);
        if now.duration_since(*second) >= Duration::from_secs(1) {
            *second = now;
            self.log_lines = 0;
        }
        if self.log_lines < LOG_LINES_PER_SECOND {
            self.log_lines += 1;
            true
        } else {
            self.log_suppressed += 1;
            false
        }
    }
}

/// The counts of `key` in the current window (a new window once the old one is over);
/// `None` when the table is full even after expired windows are swept.
fn track<K: std::hash::Hash + Eq>(
    table: &mut ahash::HashMap<K, Window>,
    key: K,
    now: Instant,
    window: Duration,
    max: usize,
) -> Option<&mut Window> {
    if table.len() >= max && !table.contains_key(&key) {
        table.retain(|_, w| now.duration_since(w.started) < window);
        if table.len() >= max {
            return None;
        }
    }
    let counts = table.entry(key).or_insert_with(|| Window::new(now));
    if now.duration_since(counts.started) >= window {
        *counts = Window::new(now);
    }
    Some(counts)
}

/// A user name as a log may show it: at most 64 bytes, lossy UTF-8 (the log's `{:?}`
/// escapes quotes and line breaks, so a name cannot forge a line).
fn printable(user: &[u8]) -> String {
    String::from_utf8_lossy(&user[..user.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn failed_authentications_ban_a_source_for_the_ban_period() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardConfig {
            auth_failures_per_source: 3,
            ..GuardConfig::default()
        });
        let mut banned = None;
        assert!(g.auth_failed(t0, source(1), b"alice", "r").is_none());
        assert!(g.auth_failed(t0, source(1), b"alice", "r").is_none());
        let ban = g.auth_failed(t0, source(1), b"alice", "r").expect("a ban");
        assert_eq!(ban.until, t0 + Duration::from_secs(600));
        assert!(!g.admit(t0, source(1), &mut banned));
        assert!(g.admit(t0, source(2), &mut banned), "another source");
        assert!(
            g.admit(ban.until, source(1), &mut banned),
            "the ban is over"
        );
        assert_eq!(g.stats().bans, 1);
        assert_eq!(g.stats().dropped_banned, 1);
    }

    #[test]
    fn failures_in_separate_windows_do_not_add_up() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardConfig {
            auth_failures_per_source: 2,
            ..GuardConfig::default()
        });
        assert!(g.auth_failed(t0, source(1), b"a", "r").is_none());
        let later = t0 + Duration::from_secs(61);
        assert!(g.auth_failed(later, source(1), b"a", "r").is_none());
        assert!(g.auth_failed(later, source(1), b"a", "r").is_some());
    }

    #[test]
    fn a_user_guessed_at_from_many_sources_is_locked() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardConfig {
            auth_failures_per_user: 5,
            ..GuardConfig::default()
        });
        for i in 0..5 {
            assert!(g.auth_failed(t0, source(i), b"alice", "r").is_none());
        }
        assert!(g.user_locked(t0, b"alice"));
        assert!(!g.user_locked(t0, b"bob"));
        assert!(!g.user_locked(t0 + Duration::from_secs(600), b"alice"));
        assert_eq!(g.stats().user_locks, 1);
    }

    #[test]
    fn a_request_flood_bans_its_source_and_exempt_sources_pass() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardConfig {
            requests_per_source: 100,
            exempt: vec![source(9)],
            ..GuardConfig::default()
        });
        let mut banned = None;
        for _ in 0..100 {
            assert!(g.admit(t0, source(1), &mut banned));
        }
        assert!(!g.admit(t0, source(1), &mut banned));
        assert_eq!(banned.map(|b| b.source), Some(source(1)));
        for _ in 0..1000 {
            assert!(g.admit(t0, source(9), &mut banned));
        }
    }

    #[test]
    fn peers_bans_are_kept_and_tables_stay_bounded() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardConfig {
            requests_per_source: 10,
            max_tracked: 4,
            ..GuardConfig::default()
        });
        g.ban(Ban {
            source: source(7),
            until: t0 + Duration::from_secs(5),
        });
        assert!(g.is_banned(t0, source(7)));
        let mut banned = None;
        for i in 0..10 {
            assert!(g.admit(t0, source(i + 20), &mut banned));
        }
        assert!(g.sources.len() <= 4);
        assert_eq!(g.stats().untracked, 6);
        // Bans are bounded too.
        for i in 0..10 {
            g.ban(Ban {
                source: source(100 + i),
                until: t0 + Duration::from_secs(600),
            });
        }
        assert!(g.bans.len() <= 4);
        assert!(g.is_banned(t0, source(109)), "the newest ban stays");
    }
}
