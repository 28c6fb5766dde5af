//! Dialogs (RFC 3261 §12): identity, state, and what a dialog must remember to build its
//! in-dialog requests: CSeqs, local and remote URIs, remote target, route set, secure flag.
//!
//! # What it owns, what it may not touch
//! One dialog's state, stored compactly (the strings it keeps are copied into one
//! allocation, never a whole datagram). It knows nothing of threads, channels, sockets or the
//! clock; the [`crate::shard`] drives it.

mod record;

pub use record::{
    DialogRecord, HeldRecord, RECORD_VERSION, RecordError, ServedRecord, SessionTimerRecord,
    UsageRecords, encode_record, record_call_id, record_dialog_key,
};

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};

use crate::message::{
    BuildError, HeaderName, Message, NameAddr, RequestBuilder, Uri, find_outside,
};

/// A dialog's identity: Call-ID, local tag, remote tag (§12). The remote tag is empty for a
/// call we placed that no response has established yet. Cheap to clone (one shared buffer,
/// allocated once).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The dialog table key: the Call-ID's and local tag's lengths (two little-endian
    /// u16), then Call-ID, local tag and remote tag. Keeping the lengths in the shared
    /// buffer keeps the id at 16 bytes, so events that carry one stay small.
    key: std::sync::Arc<[u8]>,
}

/// Bytes before the Call-ID in a key: the two lengths.
const KEY_PREFIX: usize = 4;

impl DialogId {
    /// A dialog id from its three parts (a Call-ID or local tag longer than 65,535 bytes,
    /// which no datagram can carry, is cut there).
    pub fn new(call_id: &[u8], local_tag: &[u8], remote_tag: &[u8]) -> DialogId {
        // Written on the stack and copied once into the shared slice (usual ids are well
        // under 128 bytes; longer ones go through a Vec).
        let (call_id, local_tag) = (cap(call_id), cap(local_tag));
        let len = KEY_PREFIX + call_id.len() + local_tag.len() + remote_tag.len();
        let key: std::sync::Arc<[u8]> = if len <= 128 {
            let mut buf = [0u8; 128];
            put_key(&mut &mut buf[..], call_id, local_tag, remote_tag);
            std::sync::Arc::from(&buf[..len])
        } else {
            let mut key = Vec::with_capacity(len);
            write_key(&mut key, call_id, local_tag, remote_tag);
            std::sync::Arc::from(key)
        };
        DialogId { key }
    }

    fn lengths(&self) -> (usize, usize) {
        let len = |i: usize| usize::from(u16::from_le_bytes([self.key[i], self.key[i + 1]]));
        (len(0), len(2))
    }

    /// The Call-ID (what the runtime hashes to find the owning shard).
    pub fn call_id(&self) -> &[u8] {
        let (call_id, _) = self.lengths();
        &self.key[KEY_PREFIX..KEY_PREFIX + call_id]
    }

    /// Our tag.
    pub fn local_tag(&self) -> &[u8] {
        let (call_id, local) = self.lengths();
        let start = KEY_PREFIX + call_id;
        &self.key[start..start + local]
    }

    /// The peer's tag (empty until a response established the dialog, on the UAC side).
    pub fn remote_tag(&self) -> &[u8] {
        let (call_id, local) = self.lengths();
        &self.key[KEY_PREFIX + call_id + local..]
    }

    /// The table key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The Call-ID inside a dialog table key (the form [`DialogId`] holds, a record or a
/// store key carries). `None`: too short to be one.
pub(crate) fn key_call_id(key: &[u8]) -> Option<&[u8]> {
    let call_id = usize::from(u16::from_le_bytes([*key.first()?, *key.get(1)?]));
    key.get(KEY_PREFIX..KEY_PREFIX + call_id)
}

/// At most what a key's u16 length can say.
fn cap(part: &[u8]) -> &[u8] {
    &part[..part.len().min(usize::from(u16::MAX))]
}

/// Writes the table key of (Call-ID, local tag, remote tag) into `out` (cleared first): the
/// form [`DialogId`] holds, so a lookup can build it in a reused buffer.
pub(crate) fn write_key(out: &mut Vec<u8>, call_id: &[u8], local_tag: &[u8], remote_tag: &[u8]) {
    out.clear();
    put_key(out, cap(call_id), cap(local_tag), remote_tag);
}

/// Appends the table key (see [`write_key`]) to `out`, which must have room for it; the
/// Call-ID and local tag are at most 65,535 bytes ([`cap`]).
fn put_key(out: &mut impl BufMut, call_id: &[u8], local_tag: &[u8], remote_tag: &[u8]) {
    // Capped by the callers, so the casts keep every bit.
    out.put_u16_le(call_id.len() as u16);
    out.put_u16_le(local_tag.len() as u16);
    out.put_slice(call_id);
    out.put_slice(local_tag);
    out.put_slice(remote_tag);
}

impl fmt::Debug for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DialogId({}, {}, {})",
            String::from_utf8_lossy(self.call_id()),
            String::from_utf8_lossy(self.local_tag()),
            String::from_utf8_lossy(self.remote_tag())
        )
    }
}

impl fmt::Display for DialogId {
    /// `Call-ID;local=TAG;remote=TAG`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};local={};remote={}",
            String::from_utf8_lossy(self.call_id()),
            String::from_utf8_lossy(self.local_tag()),
            String::from_utf8_lossy(self.remote_tag())
        )
    }
}

/// Dialog state (§12): early after a provisional with a To tag, confirmed after a 2xx.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DialogState {
    /// Created by a 1xx, or (UAS) by an INVITE not yet answered with a final response.
    Early,
    /// A 2xx was sent or received.
    Confirmed,
    /// Ended; no request can be sent in it.
    Terminated,
}

/// Which side of the dialog-creating INVITE we were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We sent the INVITE.
    Uac,
    /// We received it.
    Uas,
}

/// Offsets of the strings a dialog keeps, inside its one `strings` buffer.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    /// local name-addr with ;tag (our From/To value), remote likewise, remote target URI.
    local_end: u32,
    remote_end: u32,
    target_end: u32,
    // the route set follows, as one comma-separated Route value
}

/// One dialog's state.
#[derive(Debug)]
pub struct Dialog {
    /// Its identity.
    pub id: DialogId,
    /// Its state.
    pub state: DialogState,
    /// Our side.
    pub role: Role,
    /// Last CSeq we used.
    pub local_cseq: u32,
    /// Last CSeq the peer used, once it sent a request in the dialog.
    pub remote_cseq: Option<u32>,
    /// True when the dialog was created over SIPS (§12.1.1).
    pub secure: bool,
    /// Where in-dialog requests go (see [`Dialog::new`]).
    pub peer: SocketAddr,
    /// Over what they go: the transport the dialog was made over (UDP unless set).
    pub transport: crate::transaction::Transport,
    strings: Box<[u8]>,
    layout: Layout,
}

impl Dialog {
    /// A dialog from the values RFC 3261 §12.1 says to keep. `local`/`remote` are our and
    /// the peer's name-addr *with* tags (the From/To values we put in requests), `target`
    /// the remote target URI (the peer's Contact), `route_set` the Route values in the
    /// order in-dialog requests carry them. `peer` is where requests are sent: the caller
    /// resolves the first route or the target (sipshard does no DNS).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: DialogId,
        role: Role,
        state: DialogState,
        local_cseq: u32,
        remote_cseq: Option<u32>,
        local: &[u8],
        remote: &[u8],
        target: &[u8],
        route_set: &[&[u8]],
        secure: bool,
        peer: SocketAddr,
    ) -> Dialog {
        let routes_len: usize = route_set.iter().map(|r| r.len() + 1).sum();
        let mut strings =
            Vec::with_capacity(local.len() + remote.len() + target.len() + routes_len);
        strings.extend_from_slice(local);
        let local_end = strings.len() as u32;
        strings.extend_from_slice(remote);
        let remote_end = strings.len() as u32;
        strings.extend_from_slice(target);
        let target_end = strings.len() as u32;
        for (i, r) in route_set.iter().enumerate() {
            if i > 0 {
                strings.push(b',');
            }
            strings.extend_from_slice(r);
        }
        Dialog {
            id,
            state,
            role,
            local_cseq,
            remote_cseq,
            secure,
            peer,
            transport: crate::transaction::Transport::Udp,
            strings: strings.into_boxed_slice(),
            layout: Layout {
                local_end,
                remote_end,
                target_end,
            },
        }
    }

    /// The same dialog, its in-dialog requests going over `transport`.
    pub fn with_transport(mut self, transport: crate::transaction::Transport) -> Dialog {
        self.transport = transport;
        self
    }

    /// Our From (UAC) or To (UAS) value, with our tag.
    pub fn local(&self) -> &[u8] {
        &self.strings[..self.layout.local_end as usize]
    }

    /// The peer's value, with its tag.
    pub fn remote(&self) -> &[u8] {
        &self.strings[self.layout.local_end as usize..self.layout.remote_end as usize]
    }

    /// The remote target URI (from the peer's Contact).
    pub fn remote_target(&self) -> &[u8] {
        &self.strings[self.layout.remote_end as usize..self.layout.target_end as usize]
    }

    /// The URI in-dialog requests are sent towards (§12.2.1.1, §8.1.2): the first route's,
    /// when there is a route set, else the remote target. Its address and `transport`
    /// parameter say where the next hop is.
    pub fn next_hop_uri(&self) -> &[u8] {
        let routes = self.route_set();
        let first_end = find_outside(routes, b',')
            .ok()
            .flatten()
            .unwrap_or(routes.len());
        routes
            .get(..first_end)
            .filter(|r| !r.is_empty())
            .and_then(|r| NameAddr::parse(r).ok())
            .map_or(self.remote_target(), |first| first.uri_bytes)
    }

    /// The route set as one comma-separated Route value (empty when there is none).
    pub fn route_set(&self) -> &[u8] {
        &self.strings[self.layout.target_end as usize..]
    }

    /// Replaces the remote target (a target refresh: the Contact of a re-INVITE or its 2xx,
    /// §12.2).
    pub fn set_remote_target(&mut self, target: &[u8]) {
        if target == self.remote_target() {
            return;
        }
        let (local, remote, routes) = (
            self.local().to_vec(),
            self.remote().to_vec(),
            self.route_set().to_vec(),
        );
        let mut strings =
            Vec::with_capacity(local.len() + remote.len() + target.len() + routes.len());
        strings.extend_from_slice(&local);
        strings.extend_from_slice(&remote);
        strings.extend_from_slice(target);
        let target_end = strings.len() as u32;
        strings.extend_from_slice(&routes);
        self.strings = strings.into_boxed_slice();
        self.layout.target_end = target_end;
    }

    /// Builds an in-dialog request (§12.2.1.1) into `out`: Request-URI and Route from the
    /// remote target and route set (loose routing, or strict routing when the first route
    /// lacks `lr`), From/To/Call-ID from the dialog, a new CSeq (the INVITE's for an ACK),
    /// our Via (`via`, with the branch) and Contact. Extra headers and the body are the
    /// caller's.
    pub fn build_request(
        &mut self,
        out: &mut BytesMut,
        method: &[u8],
        via: &[u8],
        contact: &[u8],
        extra: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<usize, BuildError> {
        let cseq = if method == b"ACK" {
            self.local_cseq
        } else {
            self.local_cseq = self.local_cseq.wrapping_add(1) & 0x7fff_ffff;
            self.local_cseq
        };
        self.build(out, method, cseq, via, contact, extra, body)
    }

    /// Builds the ACK for a 2xx to our INVITE or re-INVITE whose CSeq number was
    /// `invite_cseq` (§13.2.2.4: the ACK carries the INVITE's CSeq number, whatever PRACK,
    /// UPDATE or INFO went out in the dialog since).
    pub fn build_ack(
        &mut self,
        out: &mut BytesMut,
        via: &[u8],
        invite_cseq: u32,
    ) -> Result<usize, BuildError> {
        self.build(out, b"ACK", invite_cseq, via, b"", &[], b"")
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        out: &mut BytesMut,
        method: &[u8],
        cseq_number: u32,
        via: &[u8],
        contact: &[u8],
        extra: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<usize, BuildError> {
        let is_ack = method == b"ACK";
        let routes = self.route_set();
        // The values were stored as written, joined by commas; a comma inside `<…>` (a user
        // part may hold one) or quotes is not a separator.
        let first_end = find_outside(routes, b',')
            .ok()
            .flatten()
            .unwrap_or(routes.len());
        let first = Some(&routes[..first_end])
            .filter(|r| !r.is_empty())
            .and_then(|r| NameAddr::parse(r).ok());
        let strict = first
            .as_ref()
            .is_some_and(|r| matches!(&r.uri, Uri::Sip(u) if !u.lr()));
        let target = self.remote_target();
        let (request_uri, route): (&[u8], Cow<'_, [u8]>) = match (&first, strict) {
            // §12.2.1.1 strict routing: the first route becomes the Request-URI, the remote
            // target goes last in Route.
            (Some(r), true) => {
                let mut route = routes.get(first_end + 1..).unwrap_or_default().to_vec();
                if !route.is_empty() {
                    route.push(b',');
                }
                route.push(b'<');
                route.extend_from_slice(target);
                route.push(b'>');
                (r.uri_bytes, Cow::Owned(route))
            }
            _ => (target, Cow::Borrowed(routes)),
        };
        let mut b = RequestBuilder::new(out, method, request_uri);
        b.header_named(HeaderName::Via, via)
            .header_named(HeaderName::MaxForwards, b"70");
        if !route.is_empty() {
            b.header_named(HeaderName::Route, &route);
        }
        // "<number> <method>", on the stack unless the method is a long extension (a u32 has
        // at most 10 digits: 10 + 1 + 36 bytes fit the 48, so no put below can run out).
        let mut small = [0u8; 48];
        let cseq: Cow<'_, [u8]> = if method.len() <= 36 {
            let mut w: &mut [u8] = &mut small;
            crate::message::push_decimal(&mut w, u64::from(cseq_number));
            w.put_u8(b' ');
            w.put_slice(method);
            let len = 48 - w.len();
            Cow::Borrowed(&small[..len])
        } else {
            let mut v = Vec::with_capacity(12 + method.len());
            crate::message::push_decimal(&mut v, u64::from(cseq_number));
            v.push(b' ');
            v.extend_from_slice(method);
            Cow::Owned(v)
        };
        b.header_named(HeaderName::From, self.local())
            .header_named(HeaderName::To, self.remote())
            .header_named(HeaderName::CallId, self.id.call_id())
            .header_named(HeaderName::CSeq, &cseq);
        if !contact.is_empty() && !is_ack {
            b.header_named(HeaderName::Contact, contact);
        }
        for (name, value) in extra {
            b.header(name, value);
        }
        b.finish(body)
    }
}

/// The route set a UAS keeps from a dialog-creating request: its Record-Route values in
/// order, each as written (`<uri;lr>` with its parameters) (§12.1.1).
pub fn uas_route_set(request: &Message) -> Vec<&[u8]> {
    request
        .list_values(HeaderName::RecordRoute)
        .filter_map(Result::ok)
        .collect()
}

/// The route set a UAC keeps from a dialog-creating response: its Record-Route values in
/// reverse order (§12.1.2).
pub fn uac_route_set(response: &Message) -> Vec<&[u8]> {
    let mut v = uas_route_set(response);
    v.reverse();
    v
}

/// The first Contact URI of a message (the remote target), as written.
pub fn contact_uri(msg: &Message) -> Option<&[u8]> {
    // The message checks parsed every Contact already: only the URI's place is needed.
    crate::message::uri_of(msg.list_values(HeaderName::Contact).next()?.ok()?)
}

/// The value of a To or From header with `;tag=` appended when it has none.
pub fn with_tag(value: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 5 + tag.len());
    v.extend_from_slice(value);
    if matches!(crate::message::tag_param(value), Ok(None)) {
        v.extend_from_slice(b";tag=");
        v.extend_from_slice(tag);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialog_id_parts() {
        let id = DialogId::new(b"abc@h", b"loc", b"rem");
        assert_eq!(id.call_id(), b"abc@h");
        assert_eq!(id.local_tag(), b"loc");
        assert_eq!(id.remote_tag(), b"rem");
        let early = DialogId::new(b"abc@h", b"loc", b"");
        assert_eq!(early.remote_tag(), b"");
        assert_ne!(id, early);
        // Past the stack buffer: the same parts and the same table key.
        let long_call_id = [b'c'; 200];
        let long = DialogId::new(&long_call_id, b"loc", b"rem");
        assert_eq!(long.call_id(), &long_call_id[..]);
        assert_eq!(
            (long.local_tag(), long.remote_tag()),
            (&b"loc"[..], &b"rem"[..])
        );
        let mut key = Vec::new();
        write_key(&mut key, &long_call_id, b"loc", b"rem");
        assert_eq!(long.key(), &key[..]);
        write_key(&mut key, b"abc@h", b"loc", b"rem");
        assert_eq!(id.key(), &key[..]);
        // The lengths keep parts apart that concatenate alike.
        assert_ne!(
            DialogId::new(b"ab", b"c", b""),
            DialogId::new(b"a", b"bc", b"")
        );
        assert_ne!(
            DialogId::new(b"a", b"b", b"c"),
            DialogId::new(b"a", b"bc", b"")
        );
        // Two words: events carrying ids stay small.
        assert_eq!(std::mem::size_of::<DialogId>(), 16);
    }

    fn dialog_with_routes(routes: &[&[u8]]) -> Dialog {
        Dialog::new(
            DialogId::new(b"c@h", b"loc", b"rem"),
            Role::Uac,
            DialogState::Confirmed,
            1,
            None,
            b"<sip:a@h>;tag=loc",
            b"<sip:b@h>;tag=rem",
            b"sip:bob@192.0.2.4:5062",
            routes,
            false,
            "192.0.2.4:5062".parse().expect("literal address"),
        )
    }

    fn built(d: &mut Dialog, method: &[u8]) -> Message {
        let mut out = BytesMut::new();
        d.build_request(
            &mut out,
            method,
            b"SIP/2.0/UDP h;branch=z9hG4bK1",
            b"<sip:a@h>",
            &[],
            b"",
        )
        .expect("a request from dialog state");
        Message::parse(out.freeze()).expect("our own request parses")
    }

    /// The Request-URI and Route values of a BYE sent in a dialog with route set `routes`.
    fn routed(routes: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let bye = built(&mut dialog_with_routes(routes), b"BYE");
        let uri = bye.request_uri_bytes().unwrap_or_default().to_vec();
        let route = bye
            .list_values(HeaderName::Route)
            .flatten()
            .map(<[u8]>::to_vec);
        (uri, route.collect())
    }

    #[test]
    fn loose_routing_sends_to_the_remote_target_through_the_route_set() {
        let (p1, p2): (&[u8], &[u8]) = (b"<sip:p1.example.com;lr>", b"<sip:p2.example.com;lr>");
        let (uri, route) = routed(&[p1, p2]);
        assert_eq!(uri, b"sip:bob@192.0.2.4:5062");
        assert_eq!(route, [p1, p2]);
    }

    #[test]
    fn strict_routing_puts_the_first_route_in_the_request_uri() {
        // §12.2.1.1: a first route without `lr` is a strict router.
        let (p2, target): (&[u8], &[u8]) =
            (b"<sip:p2.example.com;lr>", b"<sip:bob@192.0.2.4:5062>");
        let (uri, route) = routed(&[b"<sip:p1.example.com>", p2]);
        assert_eq!(uri, b"sip:p1.example.com");
        assert_eq!(route, [p2, target]);
        // A comma in the first route's user part does not split it.
        let (uri, route) = routed(&[b"<sip:a,b@p1.example.com>", p2]);
        assert_eq!(uri, b"sip:a,b@p1.example.com");
        assert_eq!(route, [p2, target]);
        let (_, route) = routed(&[b"<sip:p1.example.com>"]);
        assert_eq!(route, [target]);
    }

    #[test]
    fn a_long_extension_method_still_gets_its_cseq() {
        let method = b"X-A-VERY-LONG-EXTENSION-METHOD-NAME-OF-FORTY";
        let req = built(&mut dialog_with_routes(&[]), method);
        let cseq = req.cseq().expect("a CSeq");
        assert_eq!((cseq.seq, cseq.method_bytes), (2, &method[..]));
        assert_eq!(req.header(HeaderName::Route), None);
    }
}
