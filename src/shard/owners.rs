//! Who each client transaction of ours belongs to: one table, so that a response, a
//! timeout or a transport failure reaches its owner by one lookup and one `match`, where
//! it used to probe a map per kind of request.
//!
//! # What it owns, what it may not touch
//! The table from client transaction to owner; the owners' behaviour stays with their
//! features.

use crate::transaction::ClientTxnId;

use super::standalone::Sent;
use super::{Call, SlotRef, Usage};

/// What a client transaction of ours was sent for.
#[derive(Debug)]
pub(super) enum Owner {
    /// Our INVITE: the call it places (its dialogs, one per To tag).
    Call(Call),
    /// Our re-INVITE in the dialog at this slot.
    Reinvite(SlotRef),
    /// Our other in-dialog request (`SendRequest`, a refresh, a NOTIFY, a REFER), and the
    /// usage its failure ends (RFC 5057).
    Request(SlotRef, Usage),
    /// Our request outside any dialog (`SendStandalone`).
    Standalone(Sent),
    /// Our SUBSCRIBE, for the subscription at this slot.
    Subscribe(SlotRef),
    /// Our BYE: a final response ends the dialog.
    Bye(SlotRef),
}

/// The table.
#[derive(Debug, Default)]
pub(super) struct Owners(ahash::HashMap<ClientTxnId, Owner>);

impl Owners {
    pub(super) fn insert(&mut self, txn: ClientTxnId, owner: Owner) {
        self.0.insert(txn, owner);
    }

    pub(super) fn insert_call(&mut self, txn: ClientTxnId, call: Call) {
        self.0.insert(txn, Owner::Call(call));
    }

    pub(super) fn insert_standalone(&mut self, txn: ClientTxnId, sent: Sent) {
        self.0.insert(txn, Owner::Standalone(sent));
    }

    pub(super) fn get(&self, txn: &ClientTxnId) -> Option<&Owner> {
        self.0.get(txn)
    }

    pub(super) fn remove(&mut self, txn: &ClientTxnId) -> Option<Owner> {
        self.0.remove(txn)
    }

    /// Removes `txn`'s entry when `kind` says it is of that kind.
    fn take_if(&mut self, txn: &ClientTxnId, kind: fn(&Owner) -> bool) -> Option<Owner> {
        match self.0.get(txn) {
            Some(o) if kind(o) => self.0.remove(txn),
            _ => None,
        }
    }

    pub(super) fn call(&self, txn: &ClientTxnId) -> Option<&Call> {
        match self.0.get(txn) {
            Some(Owner::Call(c)) => Some(c),
            _ => None,
        }
    }

    pub(super) fn call_mut(&mut self, txn: &ClientTxnId) -> Option<&mut Call> {
        match self.0.get_mut(txn) {
            Some(Owner::Call(c)) => Some(c),
            _ => None,
        }
    }

    pub(super) fn take_call(&mut self, txn: &ClientTxnId) -> Option<Call> {
        match self.take_if(txn, |o| matches!(o, Owner::Call(_))) {
            Some(Owner::Call(c)) => Some(c),
            _ => None,
        }
    }

    pub(super) fn take_request(&mut self, txn: &ClientTxnId) -> Option<(SlotRef, Usage)> {
        match self.take_if(txn, |o| matches!(o, Owner::Request(..))) {
            Some(Owner::Request(r, u)) => Some((r, u)),
            _ => None,
        }
    }

    pub(super) fn take_reinvite(&mut self, txn: &ClientTxnId) -> Option<SlotRef> {
        match self.take_if(txn, |o| matches!(o, Owner::Reinvite(_))) {
            Some(Owner::Reinvite(r)) => Some(r),
            _ => None,
        }
    }

    pub(super) fn take_standalone(&mut self, txn: &ClientTxnId) -> Option<Sent> {
        match self.take_if(txn, |o| matches!(o, Owner::Standalone(_))) {
            Some(Owner::Standalone(s)) => Some(s),
            _ => None,
        }
    }

    pub(super) fn take_subscribe(&mut self, txn: &ClientTxnId) -> Option<SlotRef> {
        match self.take_if(txn, |o| matches!(o, Owner::Subscribe(_))) {
            Some(Owner::Subscribe(r)) => Some(r),
            _ => None,
        }
    }

    pub(super) fn take_bye(&mut self, txn: &ClientTxnId) -> Option<SlotRef> {
        match self.take_if(txn, |o| matches!(o, Owner::Bye(_))) {
            Some(Owner::Bye(r)) => Some(r),
            _ => None,
        }
    }

    /// An ended transaction's entry, unless it is a call's INVITE or a standalone
    /// request, whose ends their features handle themselves.
    pub(super) fn forget_ended(&mut self, txn: &ClientTxnId) {
        self.take_if(txn, |o| !matches!(o, Owner::Call(_) | Owner::Standalone(_)));
    }
}
