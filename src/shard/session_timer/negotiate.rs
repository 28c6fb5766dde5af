//! RFC 4028 §9: what the peer's request and our configuration settle (the interval, who
//! refreshes), and the settings that drive it.
//!
//! # What it owns, what it may not touch
//! Pure functions of a request and the settings; the timer's life in a dialog (arming,
//! refreshing, the BYE) is the parent module's.

use crate::message::Message;

/// RFC 4028 §4: no session interval (and no Min-SE) is below 90 seconds.
pub const MIN_SE_FLOOR: u32 = 90;
/// The longest interval a 422 may ask of us (a day): a peer cannot make us retry forever.
pub(super) const MAX_INTERVAL: u32 = 86_400;
/// The option tag of RFC 4028.
pub(in crate::shard) const TAG_TIMER: &[u8] = b"timer";

/// Who sends the refreshes, as the `refresher` parameter names them: the UAC or the UAS of
/// the request that settled the interval.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (the sender of the INVITE, re-INVITE or UPDATE).
    #[default]
    Uac,
    /// The callee.
    Uas,
}

impl Refresher {
    pub(super) fn parameter(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }

    pub(super) fn parse(value: &[u8]) -> Option<Refresher> {
        if value.eq_ignore_ascii_case(b"uac") {
            Some(Refresher::Uac)
        } else if value.eq_ignore_ascii_case(b"uas") {
            Some(Refresher::Uas)
        } else {
            None
        }
    }
}

/// Session timer settings of a shard (RFC 4028); `ShardConfig::session_timers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimers {
    /// The interval (seconds) we ask for, and the most we grant: a peer asking for more is
    /// answered with this. Default 1800 (RFC 4028 §4 recommends it).
    pub session_expires: u32,
    /// The smallest interval we accept (seconds, at least 90): Min-SE of our 422s and
    /// requests. Default 90.
    pub min_se: u32,
    /// Ask for a timer when the other side did not: `Session-Expires` in our INVITEs, and in
    /// our 2xx to an INVITE without one. When false, a timer runs only where the peer (or a
    /// proxy) asks for one (`accept`).
    pub ask: bool,
    /// Who refreshes when the caller supports timers and leaves the choice to us (as UAS).
    pub refresher: Refresher,
}

impl Default for SessionTimers {
    fn default() -> Self {
        SessionTimers {
            session_expires: 1800,
            min_se: MIN_SE_FLOOR,
            ask: true,
            refresher: Refresher::Uac,
        }
    }
}

impl SessionTimers {
    /// Both intervals raised to the RFC's floor, and `session_expires` to `min_se`.
    pub fn normalized(mut self) -> Self {
        self.min_se = self.min_se.max(MIN_SE_FLOOR);
        self.session_expires = self.session_expires.max(self.min_se);
        self
    }
}

/// What a request of the peer's and our 2xx to it settle: the interval, who refreshes, and
/// whether the peer supports timers (then our 2xx says `Require: timer`, §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::shard) struct Negotiated {
    pub(super) interval: u32,
    pub(super) refresher: Refresher,
    pub(super) peer_supports: bool,
}

/// RFC 4028 §9 for the peer's INVITE, re-INVITE or UPDATE (`current`: the dialog's running
/// interval): `Ok(None)` when no timer is asked for or wanted, `Err(min_se)` for a 422.
pub(in crate::shard) fn negotiate(
    config: &SessionTimers,
    request: &Message,
    current: Option<u32>,
) -> Result<Option<Negotiated>, u32> {
    let peer_supports = lists_timer(request);
    let asked = request.session_expires().ok().flatten();
    let their_min = request
        .min_se()
        .ok()
        .flatten()
        .map_or(MIN_SE_FLOOR, |m| m.seconds.max(MIN_SE_FLOOR));
    let floor = their_min.max(config.min_se);
    let interval = match asked {
        Some(se) if se.seconds < floor => {
            if peer_supports && se.seconds < config.min_se {
                return Err(floor);
            }
            // Errata 1687: a peer that cannot retry gets the interval raised instead.
            floor
        }
        // §9: the UAS may lower the interval, never below Min-SE, and never raises it.
        Some(se) => se.seconds.min(config.session_expires.max(floor)),
        None => match current {
            Some(running) => running.max(floor),
            None if config.ask => config.session_expires.max(floor),
            None => return Ok(None),
        },
    };
    // §9 Table 2: a peer without timer support cannot refresh; else its choice, or ours.
    let refresher = if peer_supports {
        asked
            .and_then(|se| se.refresher())
            .and_then(Refresher::parse)
            .unwrap_or(config.refresher)
    } else {
        Refresher::Uas
    };
    Ok(Some(Negotiated {
        interval,
        refresher,
        peer_supports,
    }))
}

/// `timer` in the request's Supported or Require.
fn lists_timer(message: &Message) -> bool {
    let is_timer = |t: Result<&[u8], _>| t.is_ok_and(|t: &[u8]| t.eq_ignore_ascii_case(TAG_TIMER));
    message.supported().any(is_timer) || message.require().any(is_timer)
}

/// Whether the message's Allow lists UPDATE.
pub(super) fn allows_update(message: &Message) -> bool {
    message
        .allow()
        .any(|m| m.is_ok_and(|m| m.eq_ignore_ascii_case(b"UPDATE")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn invite(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).expect("the test INVITE parses")
    }

    fn accept() -> SessionTimers {
        SessionTimers {
            ask: false,
            ..SessionTimers::default()
        }
    }

    #[test]
    fn supported_peer_below_our_minimum_gets_422() {
        let m = invite("Supported: timer\r\nSession-Expires: 60\r\n");
        assert_eq!(negotiate(&accept(), &m, None), Err(90));
        let strict = SessionTimers {
            min_se: 300,
            ..accept()
        };
        let m = invite("Supported: timer\r\nSession-Expires: 200\r\n");
        assert_eq!(negotiate(&strict, &m, None), Err(300));
    }

    #[test]
    fn unsupporting_peer_gets_the_interval_raised_and_we_refresh() {
        let m = invite("Session-Expires: 60\r\n");
        let n = negotiate(&accept(), &m, None).expect("no 422 without timer support");
        assert_eq!(
            n,
            Some(Negotiated {
                interval: 90,
                refresher: Refresher::Uas,
                peer_supports: false
            })
        );
    }

    #[test]
    fn interval_is_lowered_to_ours_but_never_below_their_min_se() {
        let m = invite("Supported: timer\r\nSession-Expires: 7200;refresher=uas\r\n");
        let n = negotiate(&accept(), &m, None).unwrap().unwrap();
        assert_eq!((n.interval, n.refresher), (1800, Refresher::Uas));
        let m = invite("Supported: timer\r\nSession-Expires: 7200\r\nMin-SE: 3600\r\n");
        let n = negotiate(&accept(), &m, None).unwrap().unwrap();
        assert_eq!((n.interval, n.refresher), (3600, Refresher::Uac));
        let m = invite("Supported: timer\r\nx: 120\r\n");
        let n = negotiate(&accept(), &m, None).unwrap().unwrap();
        assert_eq!(n.interval, 120, "a shorter interval than ours is kept");
    }

    #[test]
    fn no_timer_unless_asked_by_either_side() {
        let m = invite("Supported: timer\r\n");
        assert_eq!(negotiate(&accept(), &m, None), Ok(None));
        let n = negotiate(&SessionTimers::default(), &m, None)
            .unwrap()
            .unwrap();
        assert_eq!((n.interval, n.refresher), (1800, Refresher::Uac));
        let n = negotiate(&accept(), &m, Some(600)).unwrap().unwrap();
        assert_eq!(
            n.interval, 600,
            "a running timer goes on without Session-Expires"
        );
        let plain = invite("");
        let n = negotiate(&SessionTimers::default(), &plain, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            n.refresher,
            Refresher::Uas,
            "a peer without support cannot refresh"
        );
    }

    #[test]
    fn settings_are_raised_to_the_floor() {
        let s = SessionTimers {
            session_expires: 30,
            min_se: 10,
            ..SessionTimers::default()
        }
        .normalized();
        assert_eq!((s.session_expires, s.min_se), (90, 90));
    }
}
