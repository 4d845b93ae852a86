//! From an authenticated link to a session: unknown devices are recorded as pending and
//! turned away, paused ones refused, one link per device kept, and the session run.
//!
//! Who wakes me: the accept loops and the dialer, with a new link. Whom I wake: the pullers
//! of the folders shared with the peer (a new connection may bring what they lacked).

use std::sync::Arc;

use peerfold_protocol::DeviceId;
use tracing::{Instrument, debug, info, warn};

use super::Reason;
use super::link::{Link, PathKind};
use super::session::{self, SessionContext};
use crate::events::{Event, PendingDeviceSeen};
use crate::net::Transport;

/// Accepts connections on endpoint `index` until the engine stops.
pub(crate) async fn accept_loop(
    transport: Arc<Transport>,
    index: usize,
    context: Arc<SessionContext>,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            () = context.life.cancelled() => return,
            incoming = transport.accept(index) => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        let context2 = context.clone();
        context.life.spawn(async move {
            let our_name = context2.config.get().device_name.clone();
            match incoming.finish(&our_name).await {
                Ok((link, peer)) => {
                    run_connection(&context2, link, peer, false).await;
                }
                Err(e) => debug!(error = %e, "incoming handshake failed"),
            }
        });
    }
}

/// Runs one link to `peer` until it ends; returns why a session that ran ended, as its
/// link says (`None` when it was refused or lost to another link).
pub(crate) async fn run_connection(
    context: &SessionContext,
    link: Arc<dyn Link>,
    peer: DeviceId,
    dialed: bool,
) -> Option<String> {
    let span = tracing::info_span!("peer", device = %peer.short());
    connection(context, link, peer, dialed)
        .instrument(span)
        .await
}

async fn connection(
    context: &SessionContext,
    link: Arc<dyn Link>,
    peer: DeviceId,
    dialed: bool,
) -> Option<String> {
    let remote = link.remote_address();
    if !context.config.is_known(peer) && context.config.is_ignored(peer) {
        debug!(device = %peer, %remote, "ignored device; turned away");
        link.close(&Reason::UnknownDevice);
        return None;
    }
    if !context.config.is_known(peer) {
        info!(device = %peer, %remote, "unknown device; recorded as pending");
        let now = jiff::Timestamp::now().as_second();
        let address = remote.clone();
        if let Err(e) = context
            .store
            .write(move |s| s.record_pending_device(peer, "", &address, now))
            .await
        {
            warn!(error = %e, "cannot record pending device");
        }
        context
            .events
            .emit(Event::PendingDeviceAdded(PendingDeviceSeen {
                device: peer,
                name: String::new(),
                address: remote,
            }));
        link.close(&Reason::UnknownDevice);
        return None;
    }
    if context.config.is_paused(peer) {
        debug!(%remote, "paused device; connection refused");
        link.close(&Reason::Paused);
        return None;
    }
    if context
        .config
        .device(peer)
        .is_some_and(|d| !d.may_connect_from(&remote))
    {
        info!(%remote, "connection from outside the device's allowed networks; refused");
        link.close(&Reason::NotAllowedNetwork);
        return None;
    }
    let link = context.rates.throttle(peer, link);
    let Some(retired) = context.registry.register(peer, link.clone(), dialed).await else {
        // Not cut: the peer may have taken this link as its own and be waiting on block
        // requests over it. The session answers them and closes it once it is quiet.
        let lost = tokio_util::sync::CancellationToken::new();
        lost.cancel();
        if let Err(e) = session::run(context, link.clone(), peer, dialed, lost).await {
            debug!(error = %e, "a connection that lost to another one ended");
        }
        link.close(&Reason::Duplicate);
        return None;
    };
    let punched = link.path() == PathKind::Direct && context.punching.opened(peer, &remote);
    if punched {
        context.registry.mark_punched(peer, link.id());
    }
    info!(%remote, dialed, punched, "connected");
    // Pulls that failed for want of this peer can go on now.
    for folder in context.folders.shared_with(peer) {
        folder.replan_everything();
        folder.pull.notify_one();
    }
    let result = session::run(context, link.clone(), peer, dialed, retired).await;
    // Read before this side closes the link, after which it reads "closed" (the peer's
    // reason was lost, from the event too).
    let mut reason = link.close_reason();
    match (&result, &reason) {
        (_, Some(reason)) => info!(%reason, "disconnected"),
        (Ok(()), None) => info!("disconnected"),
        (Err(e), None) => warn!(error = %e, "connection ended"),
    }
    if let (Err(e), None) = (&result, &reason) {
        let why = Reason::Protocol(e.to_string());
        link.close(&why);
        reason = Some(why.to_string());
    }
    if context.registry.unregister(peer, link.id()) {
        context.events.emit(Event::DeviceDisconnected {
            device: peer,
            error: reason.clone().unwrap_or_default(),
        });
    }
    reason
}
