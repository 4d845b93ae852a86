//! A peer's index batch, checked against this device's own version counters before and as
//! it is stored (`model::own_counters`): entries claiming a counter this device never issued
//! are refused, and local entries the batch shows to be forgotten history of a rebuilt index
//! get a version that outdates what the peer holds.

use peerfold_protocol::version::CounterExhausted;
use peerfold_protocol::wire;
use peerfold_protocol::{DeviceId, ShortId};
use prost::Message as _;
use rusqlite::{Transaction, params};

use super::clock::FolderClock;
use super::codec::entry_from_row;
use super::tally::Tally;
use super::write::store_remote;
use super::{FolderIdx, LOCAL_DEVICE, ReceivedBatch, Store, StoreError, StuckChange};
use crate::model::entry::FileEntry;
use crate::model::own_counters::{self, CounterCeiling};

impl Store {
    /// Records a batch of `device`'s index for the folder in one transaction, as this device
    /// (`me`) checks it: what [`Store::apply_remote_index`] does, less the refused entries,
    /// plus new versions for the local entries the batch outdates by history this device
    /// forgot.
    pub fn receive_remote_index(
        &mut self,
        folder: FolderIdx,
        device: DeviceId,
        index_id: u64,
        entries: &[FileEntry],
        me: ShortId,
    ) -> Result<ReceivedBatch, StoreError> {
        let now = self.wait_for_floor(folder)?;
        self.receive_remote_index_at(folder, device, index_id, entries, me, now)
    }

    /// [`Store::receive_remote_index`] with the clock at `now` (Unix seconds).
    pub(crate) fn receive_remote_index_at(
        &mut self,
        folder: FolderIdx,
        device: DeviceId,
        index_id: u64,
        entries: &[FileEntry],
        me: ShortId,
        now: u64,
    ) -> Result<ReceivedBatch, StoreError> {
        let tx = self.reads.conn.transaction()?;
        let mut clock = FolderClock::read(&tx, folder)?;
        let ceiling = CounterCeiling::new(clock.issued(), now);
        let mut received = ReceivedBatch::default();
        let mut taken = Vec::with_capacity(entries.len());
        for entry in entries {
            match ceiling.check(entry, me) {
                Ok(()) => taken.push(entry),
                Err(why) => received.refused.push((entry.name.clone(), why)),
            }
        }
        // Refused entries count as seen: the peer need not send them again.
        let max_sequence = entries.iter().map(|e| e.sequence).max().unwrap_or(0);
        let mut tally = Tally::new(folder);
        store_remote(
            &tx,
            &mut tally,
            (folder, device, index_id),
            taken.iter().copied(),
            max_sequence,
        )?;
        // What the peer said of a refused name before no longer stands.
        let mut forget = tx.prepare_cached(
            "DELETE FROM files WHERE folder_idx = ?1 AND name = ?2
             AND device_idx = (SELECT idx FROM devices WHERE device_id = ?3)",
        )?;
        for (name, _) in &received.refused {
            tally.before(&tx, name)?;
            forget.execute(params![folder.0, name, device.as_bytes().as_slice()])?;
            tally.after(&tx, name)?;
        }
        drop(forget);
        let time = clock.counter_time(now);
        for remote in taken {
            outdate_forgotten(
                &tx,
                &mut tally,
                (folder, me),
                remote,
                time,
                &mut clock,
                &mut received,
            )?;
        }
        tally.commit(&tx)?;
        clock.write(&tx, folder)?;
        tx.commit()?;
        Ok(received)
    }
}

/// Gives the local entry for `remote`'s name a version past `remote`'s counter of this
/// device, when `remote` shows it is history a rebuilt index forgot.
fn outdate_forgotten(
    tx: &Transaction<'_>,
    tally: &mut Tally,
    (folder, me): (FolderIdx, ShortId),
    remote: &FileEntry,
    time: u64,
    clock: &mut FolderClock,
    received: &mut ReceivedBatch,
) -> Result<(), StoreError> {
    // Most entries peers send carry no counter of this device: no lookup for them.
    if remote.version.counter(me) == 0 {
        return Ok(());
    }
    let Some((id, local)) = local_entry(tx, folder, &remote.name)? else {
        return Ok(());
    };
    let Some(claimed) = own_counters::forgotten_counter(&local, remote, me) else {
        return Ok(());
    };
    // Past the claim: no counter is left past `u64::MAX`.
    let version = match claimed.checked_add(1) {
        Some(past) => local.version.clone().incremented(me, time.max(past)),
        None => Err(CounterExhausted { device: me }),
    };
    let version = match version {
        Ok(version) => version,
        Err(source) => {
            received.stuck.push(StuckChange {
                name: local.name,
                source,
            });
            return Ok(());
        }
    };
    clock.note_issued(version.counter(me));
    let sequence = clock.next_sequence();
    tally.before(tx, &local.name)?;
    tx.prepare_cached("UPDATE files SET version = ?1, sequence = ?2 WHERE id = ?3")?
        .execute(params![
            wire::Vector::from(&version).encode_to_vec(),
            sequence,
            id
        ])?;
    tally.after(tx, &local.name)?;
    received.outdated.push(local.name);
    Ok(())
}

/// This device's entry for `name` with its row id.
fn local_entry(
    tx: &Transaction<'_>,
    folder: FolderIdx,
    name: &str,
) -> Result<Option<(i64, FileEntry)>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT name, kind, size, permissions, modified_s, modified_ns, deleted, invalid,
                sequence, version, modified_by, symlink_target, blocks, id
         FROM files WHERE folder_idx = ?1 AND device_idx = ?2 AND name = ?3",
    )?;
    let mut rows = stmt.query(params![folder.0, LOCAL_DEVICE, name])?;
    match rows.next()? {
        Some(row) => Ok(Some((row.get(13)?, entry_from_row(row)?))),
        None => Ok(None),
    }
}
