//! Header names: the ones sipshard gives typed views for, their compact forms (RFC 3261
//! §7.3.3 and the IANA registry), and case-insensitive classification without allocation.

use std::fmt;

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, compact $compact:literal)? ;)*) => {
        /// A header name, classified case-insensitively; compact forms map to the long name.
        ///
        /// [`HeaderName::Other`] is any header sipshard has no typed view for; its name is
        /// still available as written from the message.
        #[non_exhaustive]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canonical, "`")]
                $variant,
            )*
            /// A header sipshard does not know by name.
            Other,
        }

        impl HeaderName {
            /// Every known name, in declaration order (not including `Other`).
            pub const KNOWN: &'static [HeaderName] = &[$(HeaderName::$variant,)*];

            /// Number of known names (the size of per-name index tables).
            pub const COUNT: usize = Self::KNOWN.len();

            /// The canonical spelling used when sipshard writes this header.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(HeaderName::$variant => $canonical,)*
                    HeaderName::Other => "",
                }
            }

            /// `"<canonical>: "`, what a header line of this name starts with when sipshard
            /// writes it (one copy instead of two); empty for `Other`.
            pub(crate) const fn line_prefix(self) -> &'static str {
                match self {
                    $(HeaderName::$variant => concat!($canonical, ": "),)*
                    HeaderName::Other => "",
                }
            }

            /// The compact form (RFC 3261 §7.3.3), if the header has one.
            pub fn compact(self) -> Option<u8> {
                match self {
                    $($(HeaderName::$variant => Some($compact),)?)*
                    _ => None,
                }
            }

            fn from_compact(b: u8) -> HeaderName {
                match b.to_ascii_lowercase() {
                    $($($compact => HeaderName::$variant,)?)*
                    _ => HeaderName::Other,
                }
            }


        }
    };
}

header_names! {
    Via => "Via", compact b'v';
    From => "From", compact b'f';
    To => "To", compact b't';
    CallId => "Call-ID", compact b'i';
    CSeq => "CSeq";
    Contact => "Contact", compact b'm';
    MaxForwards => "Max-Forwards";
    ContentLength => "Content-Length", compact b'l';
    ContentType => "Content-Type", compact b'c';
    Route => "Route";
    RecordRoute => "Record-Route";
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", compact b'k';
    Unsupported => "Unsupported";
    Allow => "Allow";
    AllowEvents => "Allow-Events", compact b'u';
    Event => "Event", compact b'o';
    SubscriptionState => "Subscription-State";
    ReferTo => "Refer-To", compact b'r';
    ReferredBy => "Referred-By", compact b'b';
    Replaces => "Replaces";
    RSeq => "RSeq";
    RAck => "RAck";
    SessionExpires => "Session-Expires", compact b'x';
    MinSE => "Min-SE";
    Authorization => "Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyAuthenticate => "Proxy-Authenticate";
    Accept => "Accept";
    ContentEncoding => "Content-Encoding", compact b'e';
    Subject => "Subject", compact b's';
    Date => "Date";
    RetryAfter => "Retry-After";
    Warning => "Warning";
    Timestamp => "Timestamp";
    UserAgent => "User-Agent";
    Server => "Server";
    AcceptContact => "Accept-Contact", compact b'a';
    RejectContact => "Reject-Contact", compact b'j';
    RequestDisposition => "Request-Disposition", compact b'd';
    Identity => "Identity", compact b'y';
}

const MAX_NAME_LEN: usize = 20;
const SLOTS: usize = 2;

/// Known names keyed by (length, first letter): at most two candidates per key, told apart by
/// their last letter before the one full comparison. Indices into [`HeaderName::KNOWN`];
/// `u8::MAX` is empty. Built at compile time; a collision of three fails the build.
static BY_LEN_FIRST: [[u8; SLOTS]; (MAX_NAME_LEN + 1) * 32] = {
    let mut t = [[u8::MAX; SLOTS]; (MAX_NAME_LEN + 1) * 32];
    let mut i = 0;
    while i < HeaderName::COUNT {
        let name = HeaderName::KNOWN[i].as_str().as_bytes();
        assert!(
            name.len() <= MAX_NAME_LEN,
            "header name longer than MAX_NAME_LEN"
        );
        let key = name.len() * 32 + (name[0] & 31) as usize;
        let mut slot = 0;
        while t[key][slot] != u8::MAX {
            slot += 1;
            assert!(
                slot < SLOTS,
                "too many header names share length and first letter"
            );
        }
        t[key][slot] = i as u8;
        i += 1;
    }
    t
};

/// Lowercase spelling of every known name, zero-padded.
static LOWER: [[u8; MAX_NAME_LEN]; HeaderName::COUNT] = {
    let mut t = [[0u8; MAX_NAME_LEN]; HeaderName::COUNT];
    let mut i = 0;
    while i < HeaderName::COUNT {
        let name = HeaderName::KNOWN[i].as_str().as_bytes();
        let mut j = 0;
        while j < name.len() {
            t[i][j] = name[j].to_ascii_lowercase();
            j += 1;
        }
        i += 1;
    }
    t
};

/// Whether the token `name` (2 to [`MAX_NAME_LEN`] bytes) spells `lower`'s name in any case,
/// by the OR-0x20 rule of [`HeaderName::from_long`]; eight bytes at a time from 8 bytes on
/// (the words at the start and the end, and the middle one past 16, may overlap).
#[inline]
fn equals_lower(name: &[u8], lower: &[u8; MAX_NAME_LEN]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let n = name.len();
    if n < 8 {
        return name
            .iter()
            .zip(lower)
            .fold(0u8, |acc, (&a, &b)| acc | ((a | 0x20) ^ b))
            == 0;
    }
    let word = |s: &[u8], at: usize| {
        let bytes: [u8; 8] = s[at..at + 8].try_into().expect("at + 8 <= n <= s.len()");
        u64::from_le_bytes(bytes)
    };
    word(name, 0) | CASE == word(lower, 0)
        && word(name, n - 8) | CASE == word(lower, n - 8)
        && (n <= 16 || word(name, 8) | CASE == word(lower, 8))
}

impl HeaderName {
    /// Whether RFC 3261's grammar (§25.1) lets this header's list be empty: `Accept`,
    /// `Allow` and `Supported` are `[ element *(COMMA element) ]`, so `Supported:` with no
    /// option tag is legal (baresip sends it). `Require`, `Proxy-Require`, `Unsupported`
    /// and the other lists need at least one element.
    pub const fn list_may_be_empty(self) -> bool {
        matches!(
            self,
            HeaderName::Accept | HeaderName::Allow | HeaderName::Supported
        )
    }

    /// `name` must be a token. Known names hold only letters and '-', and for token
    /// characters `b | 0x20` equals a lowercase letter or '-' only when `b` is that letter
    /// (either case) or '-', so one OR per byte compares case-insensitively, branch-free.
    #[inline]
    fn from_long(name: &[u8]) -> HeaderName {
        if name.len() > MAX_NAME_LEN {
            return HeaderName::Other;
        }
        let key = name.len() * 32 + (name[0] & 31) as usize;
        let last = name[name.len() - 1] | 0x20;
        for &idx in &BY_LEN_FIRST[key] {
            if idx == u8::MAX {
                break;
            }
            let lower = &LOWER[idx as usize];
            if lower[name.len() - 1] == last && equals_lower(name, lower) {
                return HeaderName::KNOWN[idx as usize];
            }
        }
        HeaderName::Other
    }

    /// Classifies a header name as written (long or compact form, any case). A name that is
    /// not a token is [`HeaderName::Other`].
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if !crate::message::lex::is_token(name) {
            return HeaderName::Other;
        }
        Self::from_token(name)
    }

    /// Classifies a name already known to be a token (the parser checked it).
    #[inline]
    pub(crate) fn from_token(name: &[u8]) -> HeaderName {
        match name.len() {
            0 => HeaderName::Other,
            1 => Self::from_compact(name[0]),
            _ => Self::from_long(name),
        }
    }

    /// Index into per-name tables; `None` for [`HeaderName::Other`].
    #[inline]
    pub(crate) fn index(self) -> Option<usize> {
        match self {
            HeaderName::Other => None,
            known => Some(known as usize),
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderName::Other => f.write_str("extension"),
            known => f.write_str(known.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_compact_forms_classify_alike() {
        for &h in HeaderName::KNOWN {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
            assert_eq!(
                HeaderName::from_bytes(h.as_str().to_ascii_uppercase().as_bytes()),
                h
            );
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), h);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), h);
            }
        }
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Call_ID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
    }

    #[test]
    fn one_changed_byte_anywhere_makes_another_name() {
        // Every position, including those only the overlapping 8-byte words compare.
        for &h in HeaderName::KNOWN {
            let name = h.as_str().as_bytes();
            for at in 0..name.len() {
                for b in [b'x', b'_', b'.', b'Q', b'1'] {
                    if name[at].eq_ignore_ascii_case(&b) {
                        continue;
                    }
                    let mut changed = name.to_vec();
                    changed[at] = b;
                    assert_ne!(HeaderName::from_bytes(&changed), h, "{changed:?}");
                }
            }
        }
    }

    #[test]
    fn indices_are_dense() {
        for (i, &h) in HeaderName::KNOWN.iter().enumerate() {
            assert_eq!(h.index(), Some(i));
        }
        assert_eq!(HeaderName::Other.index(), None);
    }
}
