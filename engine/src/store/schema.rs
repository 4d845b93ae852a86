//! The database schema, as numbered migrations applied in order.
//!
//! `PRAGMA user_version` holds how many migrations a database has had; `application_id` marks
//! the file as peerfold's so a foreign SQLite file is never mistaken for an index.

/// Marks a SQLite file as a peerfold index ("pfld").
pub(super) const APPLICATION_ID: i32 = 0x7066_6c64;

/// Migration `i` takes a database from version `i` to `i + 1`. Never edit a released one:
/// append a new migration instead.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: folders, files (local and remote), the local block index, remote index state.
    "
    CREATE TABLE folders (
        idx       INTEGER PRIMARY KEY,
        id        TEXT NOT NULL UNIQUE,
        -- Identifies this incarnation of our index for the folder; peers that saw another
        -- value take the full index again.
        index_id  INTEGER NOT NULL,
        -- The last local sequence number handed out in this folder.
        sequence  INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE devices (
        idx        INTEGER PRIMARY KEY CHECK (idx > 0),
        device_id  BLOB NOT NULL UNIQUE
    );

    -- One row per (folder, device, name). device_idx 0 is this device.
    CREATE TABLE files (
        id              INTEGER PRIMARY KEY,
        folder_idx      INTEGER NOT NULL REFERENCES folders (idx) ON DELETE CASCADE,
        device_idx      INTEGER NOT NULL,
        name            TEXT NOT NULL,
        sequence        INTEGER NOT NULL,
        kind            INTEGER NOT NULL,
        size            INTEGER NOT NULL,
        permissions     INTEGER NOT NULL,
        modified_s      INTEGER NOT NULL,
        modified_ns     INTEGER NOT NULL,
        deleted         INTEGER NOT NULL,
        invalid         INTEGER NOT NULL,
        -- protobuf-encoded Vector
        version         BLOB NOT NULL,
        modified_by     INTEGER NOT NULL,
        symlink_target  TEXT NOT NULL,
        -- packed block list: per block, size (u32 little-endian) then the 32-byte BLAKE3 hash;
        -- offsets are the running sum of sizes
        blocks          BLOB NOT NULL,
        -- local entries only: the inode seen at the last scan, for change detection
        inode           INTEGER NOT NULL DEFAULT 0,
        UNIQUE (folder_idx, device_idx, name)
    );
    CREATE INDEX files_by_sequence ON files (folder_idx, device_idx, sequence);

    -- Which local files hold a block, by the first 8 bytes of its hash. Readers confirm the
    -- full hash from the file's block list (and again when reading the data). Rows are added
    -- and removed by exact key from the old and new block lists, so no index on file_id.
    CREATE TABLE local_blocks (
        hash_prefix  INTEGER NOT NULL,
        file_id      INTEGER NOT NULL,
        PRIMARY KEY (hash_prefix, file_id)
    ) WITHOUT ROWID;

    -- What we hold of each remote device's index per folder.
    CREATE TABLE remote_indexes (
        folder_idx    INTEGER NOT NULL REFERENCES folders (idx) ON DELETE CASCADE,
        device_idx    INTEGER NOT NULL REFERENCES devices (idx) ON DELETE CASCADE,
        index_id      INTEGER NOT NULL,
        max_sequence  INTEGER NOT NULL,
        PRIMARY KEY (folder_idx, device_idx)
    );
    ",
    // 2: walk every device's entry for a name together (global version, need).
    "
    CREATE INDEX files_by_name ON files (folder_idx, name);
    ",
    // 3: devices that knocked without being configured.
    "
    CREATE TABLE pending_devices (
        device_id  BLOB PRIMARY KEY,
        name       TEXT NOT NULL,
        address    TEXT NOT NULL,
        last_seen  INTEGER NOT NULL
    );
    ",
    // 4: folders a configured device offered that are not shared with it here.
    "
    CREATE TABLE pending_folders (
        folder_id  TEXT NOT NULL,
        device_id  BLOB NOT NULL,
        label      TEXT NOT NULL,
        last_seen  INTEGER NOT NULL,
        PRIMARY KEY (folder_id, device_id)
    );
    ",
    // 5: this device's version counters (see `clock`). An index made before this counted
    // changes from 1, far below the clock that now bounds what peers may claim, so 0 is a
    // safe start for both columns.
    "
    ALTER TABLE folders ADD COLUMN issued INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE folders ADD COLUMN counter_floor INTEGER NOT NULL DEFAULT 0;
    ",
    // 6: the folder counters (see `tally`), changed with the entries they count. A folder
    // from before has `tallied` 0: its counters are rebuilt by a walk when the store opens.
    "
    CREATE TABLE tallies (
        folder_idx   INTEGER NOT NULL REFERENCES folders (idx) ON DELETE CASCADE,
        -- 0: this device (and the global counts)
        device_idx   INTEGER NOT NULL,
        -- 0: the global counts; 1: the device's local counts; 2: its need minus the need
        -- of a device that announced nothing
        scope        INTEGER NOT NULL,
        files        INTEGER NOT NULL,
        directories  INTEGER NOT NULL,
        symlinks     INTEGER NOT NULL,
        deleted      INTEGER NOT NULL,
        bytes        INTEGER NOT NULL,
        PRIMARY KEY (folder_idx, device_idx, scope)
    ) WITHOUT ROWID;
    ALTER TABLE folders ADD COLUMN tallied INTEGER NOT NULL DEFAULT 0;
    ",
];
