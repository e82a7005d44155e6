//! The read-only connections: reads and listings run on the caller's thread, each on a
//! connection no other thread is using at that moment.

use std::sync::{Mutex, TryLockError};

use rusqlite::{Connection, OpenFlags};
use token_store_core::Result;

use crate::config::SqliteConfig;
use crate::error::{at, map_err};

/// The read-only connections, each used by one thread at a time.
pub(crate) struct Readers {
    slots: Box<[Mutex<Option<Connection>>]>,
    path: String,
}

/// How many read connections a store keeps at most: one per thread that can read at once
/// (runtime workers), within reason. Slots are opened on first use.
fn reader_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

impl Readers {
    /// The pool, with one connection opened now, so a database that cannot be read this way
    /// fails at open.
    pub(crate) fn open(config: &SqliteConfig) -> Result<Readers> {
        let mut first = Some(open_reader(config)?);
        let slots: Box<[_]> = (0..reader_slots())
            .map(|_| Mutex::new(first.take()))
            .collect();
        Ok(Readers {
            slots,
            path: config.path.display().to_string(),
        })
    }

    /// Runs `f` on a free read connection, opening it if it is the first use of its slot.
    /// `None` when every slot is in use by another thread: the caller goes elsewhere rather
    /// than block its thread behind someone else's read.
    pub(crate) fn try_with<T>(
        &self,
        config: &SqliteConfig,
        f: impl FnOnce(&Connection, &str) -> Result<T>,
    ) -> Option<Result<T>> {
        // The first free slot, not the next in turn: a lone caller always reads through the
        // same connection, whose page cache then holds the B-trees' inner pages (round robin
        // warmed every cache apart: a get among 10⁶ records took 14.6 µs instead of 12.9).
        // Concurrent callers still spread, each passing the slots in use.
        for slot in self.slots.iter() {
            let mut slot = match slot.try_lock() {
                Ok(guard) => guard,
                // A panic while reading leaves the connection usable: its statement was
                // reset when it unwound.
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let conn = match &mut *slot {
                Some(conn) => conn,
                empty => match open_reader(config) {
                    Ok(conn) => empty.insert(conn),
                    Err(e) => return Some(Err(e)),
                },
            };
            return Some(f(conn, &self.path));
        }
        None
    }
}

/// Opens a read-only connection to a database the writer has already checked and migrated.
/// WAL readers never wait for the writer, nor the writer for them.
fn open_reader(config: &SqliteConfig) -> Result<Connection> {
    let path = config.path.as_path();
    let shown = path.display().to_string();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| map_err(&shown, "cannot open a read connection to the database", e))?;
    // A reader can meet a lock too (a WAL being reset or recovered): the same busy timeout.
    conn.busy_timeout(config.busy_timeout)
        .map_err(at(&shown, "cannot set the busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(8);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(at(&shown, "cannot enable defensive mode"))?;
    Ok(conn)
}
