//! The devices joined in permanent mode, each with its outbox: the bounded queue of session
//! invitations its connection task writes out between pings.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use peerfold_protocol::DeviceId;
use peerfold_protocol::relay::SessionInvitation;
use tokio::sync::mpsc;

use crate::session::Sessions;

/// Invitations queued for one device. Small on purpose: a device that does not read is not
/// going to join sessions either, and a `ConnectRequest` gives up after a second.
const OUTBOX: usize = 16;

/// Where invitations for a joined device go.
pub(crate) type Outbox = mpsc::Sender<SessionInvitation>;

/// Joined devices by ID.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    joined: Mutex<HashMap<DeviceId, Outbox>>,
}

impl Registry {
    /// Joins `device`, unless it is joined already (strelaysrv answers "already connected"
    /// then, and keeps the first connection).
    pub(crate) fn join<'a>(
        &'a self,
        device: DeviceId,
        sessions: &'a Sessions,
    ) -> Option<(Membership<'a>, mpsc::Receiver<SessionInvitation>)> {
        let mut joined = self.joined.lock().unwrap_or_else(PoisonError::into_inner);
        if joined.contains_key(&device) {
            return None;
        }
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        joined.insert(device, outbox);
        let membership = Membership {
            registry: self,
            sessions,
            device,
        };
        Some((membership, inbox))
    }

    /// The outbox of a joined device.
    pub(crate) fn outbox(&self, device: &DeviceId) -> Option<Outbox> {
        let joined = self.joined.lock().unwrap_or_else(PoisonError::into_inner);
        joined.get(device).cloned()
    }
}

/// A device's place in the registry, held by its connection task. Dropping it (however the
/// task ends) leaves the registry and kills the device's sessions, as strelaysrv does when a
/// permanent connection dies: the device cannot have learnt about new ones anyway.
#[derive(Debug)]
pub(crate) struct Membership<'a> {
    registry: &'a Registry,
    sessions: &'a Sessions,
    device: DeviceId,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.registry
            .joined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.device);
        self.sessions.drop_device(&self.device);
    }
}
