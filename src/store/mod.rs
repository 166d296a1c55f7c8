//! The table store: typed tables in memory, each behind its own `parking_lot` RwLock.
//!
//! Lock order: the store's map lock is taken only to find, add or remove a table and
//! is released before a table's lock is taken; no code holds two table locks. Neither
//! lock is ever held across I/O, a channel wait or a yield. In a coroutine, locks are
//! taken with [`read`]/[`write`], which yield to other coroutines while the lock is
//! busy instead of parking the worker thread.

pub mod changes;
pub mod csv;
pub mod expr;
pub mod files;
pub mod history;
pub mod journal;
pub mod lex;
pub mod load;
pub mod lock;
pub mod persist;
pub mod record;
pub mod schema;
pub mod table;
/// Table cells are the wire's typed values: rows go out in replies without conversion.
pub use crate::protocol::value;
pub use history::{ChannelOptions, Entry, History};

use std::sync::{Arc, OnceLock};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::collections::Map;
use journal::{Journal, Record};
use schema::Schema;
use table::Table;
use value::Value;

/// A shared handle to one table.
pub type TableRef = Arc<RwLock<Table>>;

/// How much the store may hold; writes past a limit are refused with `limit_reached`.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub max_tables: usize,
    pub max_table_rows: usize,
    /// The largest row, in estimated bytes in memory.
    pub max_row_bytes: usize,
    /// Estimated bytes of all rows of all tables.
    pub max_store_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_tables: 1000,
            max_table_rows: 10_000_000,
            max_row_bytes: 256 << 10,
            max_store_bytes: 2 << 30,
        }
    }
}

/// All tables, by name, and the journal their changes go to (when persistent).
#[derive(Default)]
pub struct TableStore {
    pub limits: StoreLimits,
    /// Estimated bytes of all rows, kept by the writers ([`TableStore::account`]).
    bytes: std::sync::atomic::AtomicUsize,
    tables: RwLock<Map<String, TableRef>>,
    journal: OnceLock<Arc<Journal>>,
    saver: OnceLock<crossbeam_channel::Sender<persist::DiskRequest>>,
    changes: OnceLock<ChangeSink>,
    /// The channels that exist, kept here so that they are saved with the tables and
    /// come back at start. The routing layer owns channels; this is their durable copy.
    channels: parking_lot::Mutex<std::collections::BTreeMap<String, StoredChannel>>,
    /// Whether the histories loaded at start were saved by a clean shutdown (they keep
    /// their epochs; after a crash each gets a new one).
    clean_histories: std::sync::atomic::AtomicBool,
    /// Numbers the changes of watched tables.
    pub change_seq: changes::ChangeSeq,
    /// Snapshots taken since start, and how long the last one took (milliseconds).
    pub snapshots: std::sync::atomic::AtomicU64,
    pub last_snapshot_millis: std::sync::atomic::AtomicU64,
    /// The cluster node these tables belong to, when the server is one of several:
    /// tables stay on their node, and a question about a missing one says so.
    node: OnceLock<String>,
}

/// A channel's durable copy: its options, and its history when it keeps one.
#[derive(Clone, Default)]
pub struct StoredChannel {
    pub options: ChannelOptions,
    pub history: Option<Arc<History>>,
}

impl StoredChannel {
    fn new(options: ChannelOptions) -> StoredChannel {
        StoredChannel {
            options,
            history: (options.history > 0).then(|| Arc::new(History::new(&options))),
        }
    }
}

/// Where changes to watched tables go (the channel manager).
pub type ChangeSink = Box<dyn Fn(ChangeNote) + Send + Sync>;

/// A change to a watched table, for the channel manager to pass on to its watchers.
pub enum ChangeNote {
    /// Rows changed; sent while the table's lock is held, so in order.
    Rows {
        table: String,
        changes: Vec<RowChange>,
    },
    /// The table was removed.
    Dropped { table: String },
}

/// One row's change.
pub struct RowChange {
    /// Its number (see `changes.rs`).
    pub seq: u64,
    pub kind: ChangeKind,
    /// The row before (update, delete).
    pub before: Option<Vec<Value>>,
    /// The row after (insert, update).
    pub after: Option<Vec<Value>>,
    /// The row as watchers see it (after, or before for a delete).
    pub item: crate::protocol::Item,
}

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// Why a table could not be defined.
#[derive(Debug, PartialEq)]
pub enum DefineError {
    Exists,
    /// The store holds its maximum of tables.
    TooMany(usize),
}

impl TableStore {
    pub fn new(limits: StoreLimits) -> TableStore {
        TableStore {
            limits,
            ..TableStore::default()
        }
    }

    /// These tables belong to cluster node `node` (each node holds its own).
    pub fn set_node(&self, node: &str) {
        let _ = self.node.set(node.to_string());
    }

    /// The cluster node these tables belong to, if the server is in a cluster.
    pub fn node(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// Estimated bytes of all rows of all tables.
    pub fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that a table's rows went from `before` to `after` bytes.
    pub(crate) fn account(&self, before: usize, after: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        if after >= before {
            self.bytes.fetch_add(after - before, Relaxed);
        } else {
            self.bytes.fetch_sub(before - after, Relaxed);
        }
    }

    /// How many tables there are.
    pub fn len(&self) -> usize {
        read(&self.tables).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// From now on, every change is recorded in `journal`.
    pub(crate) fn attach_journal(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }

    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.get()
    }

    /// From now on, changes to watched tables are handed to `sink`.
    pub(crate) fn attach_change_sink(&self, sink: ChangeSink) {
        let _ = self.changes.set(sink);
    }

    /// Hands a change to the sink (the channel manager), if there is one.
    pub(crate) fn notify(&self, note: ChangeNote) {
        if let Some(sink) = self.changes.get() {
            sink(note);
        }
    }

    /// From now on, `SAVE` asks `saver` (the snapshot thread) for a snapshot.
    pub(crate) fn attach_saver(&self, saver: crossbeam_channel::Sender<persist::DiskRequest>) {
        let _ = self.saver.set(saver);
    }

    /// Asks for a snapshot; the answer arrives on the returned may channel, so a
    /// coroutine can wait for it without blocking its worker. `None` when the store is
    /// not persistent or is stopping.
    pub(crate) fn request_save(
        &self,
    ) -> Option<may::sync::mpsc::Receiver<Result<persist::SnapshotReport, String>>> {
        let saver = self.saver.get()?;
        let (tx, rx) = may::sync::mpsc::channel();
        saver.send(persist::DiskRequest::Save(tx)).ok()?;
        Some(rx)
    }

    /// Asks the snapshot thread to remove an undefined table's files (if persistent).
    pub(crate) fn request_file_removal(&self, table: &str) {
        if let Some(saver) = self.saver.get() {
            let _ = saver.send(persist::DiskRequest::RemoveFiles(table.to_string()));
        }
    }

    /// Records a change; returns its journal sequence number when persistent. Call it
    /// while holding the lock under which the change was made, so that the journal
    /// holds each table's changes in the order they were made.
    /// The record is built only when there is a journal to take it.
    pub(crate) fn log(&self, record: impl FnOnce() -> Record) -> Option<u64> {
        self.journal.get().map(|j| j.append(&record()))
    }

    /// Records that channel `name` was created with `options`; returns its history
    /// (a new one, when it keeps one) and the journal sequence number the
    /// acknowledgement must wait for, when persistent. The caller (the one thread that
    /// owns channels) calls it in the order the changes happen.
    pub fn channel_created(
        &self,
        name: &str,
        options: ChannelOptions,
    ) -> (Option<Arc<History>>, Option<u64>) {
        let stored = StoredChannel::new(options);
        let history = stored.history.clone();
        self.channels.lock().insert(name.to_string(), stored);
        let c = name.to_string();
        let o = (options != ChannelOptions::default()).then_some(options);
        (history, self.log(|| Record::CreateChannel { c, o }))
    }

    /// Records that channel `name` was dropped (its history goes with it); returns the
    /// journal sequence number the acknowledgement must wait for.
    pub fn channel_dropped(&self, name: &str) -> Option<u64> {
        self.channels.lock().remove(name);
        let c = name.to_string();
        self.log(|| Record::DropChannel { c })
    }

    /// The channels saved or journaled, sorted by name (to restore them at start).
    pub fn channels(&self) -> Vec<(String, StoredChannel)> {
        let channels = self.channels.lock();
        channels
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }

    /// Adds (`Some`) or removes a channel without recording it (loading). A channel
    /// created again gets a new history.
    pub(crate) fn restore_channel(&self, name: String, options: Option<ChannelOptions>) {
        let mut channels = self.channels.lock();
        match options {
            // A creation the snapshot already holds keeps the history saved with it.
            Some(o) if channels.get(&name).is_some_and(|c| c.options == o) => {}
            Some(o) => {
                channels.insert(name, StoredChannel::new(o));
            }
            None => {
                channels.remove(&name);
            }
        }
    }

    /// Puts back a channel's saved history (loading), with a new epoch unless the
    /// histories were saved by a clean shutdown.
    pub(crate) fn restore_history(
        &self,
        name: &str,
        epoch: Option<crate::protocol::push::Epoch>,
        next: u64,
        entries: Vec<Entry>,
    ) {
        let mut channels = self.channels.lock();
        let Some(c) = channels.get_mut(name) else {
            return;
        };
        if c.options.history == 0 {
            return;
        }
        let clean = self
            .clean_histories
            .load(std::sync::atomic::Ordering::Relaxed);
        let epoch = match epoch {
            Some(e) if clean => e,
            _ => crate::protocol::push::Epoch::random(),
        };
        c.history = Some(Arc::new(History::restore(&c.options, epoch, next, entries)));
    }

    /// Whether the histories being loaded were saved by a clean shutdown.
    pub(crate) fn set_clean_histories(&self, clean: bool) {
        self.clean_histories
            .store(clean, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds an empty table. Returns the journal sequence number of the definition.
    pub(crate) fn define(&self, name: &str, schema: Schema) -> Result<Option<u64>, DefineError> {
        let mut tables = write(&self.tables);
        if tables.contains_key(name) {
            return Err(DefineError::Exists);
        }
        if tables.len() >= self.limits.max_tables {
            return Err(DefineError::TooMany(self.limits.max_tables));
        }
        let seq = self.log(|| Record::Define {
            t: name.to_string(),
            columns: schema.specs(),
        });
        let t = Arc::new(RwLock::new(Table::new(name.to_string(), schema)));
        tables.insert(name.to_string(), t);
        Ok(seq)
    }

    /// Adds a table built elsewhere (loading from disk), replacing any of that name.
    pub(crate) fn put(&self, table: Table) -> TableRef {
        let name = table.name.clone();
        self.account(0, table.bytes());
        let t = Arc::new(RwLock::new(table));
        if let Some(old) = write(&self.tables).insert(name, t.clone()) {
            self.account(read(&old).bytes(), 0);
        }
        t
    }

    /// Removes a table: `None` if there was none, else the journal sequence number.
    pub(crate) fn undefine(&self, name: &str) -> Option<Option<u64>> {
        let mut tables = write(&self.tables);
        let gone = tables.remove(name)?;
        self.account(read(&gone).bytes(), 0);
        let seq = self.log(|| Record::Undefine {
            t: name.to_string(),
        });
        drop(tables);
        self.request_file_removal(name);
        Some(seq)
    }

    /// Removes a table without recording it (replaying the journal).
    pub(crate) fn remove_quietly(&self, name: &str) {
        if let Some(gone) = write(&self.tables).remove(name) {
            self.account(read(&gone).bytes(), 0);
        }
    }

    pub fn get(&self, name: &str) -> Option<TableRef> {
        read(&self.tables).get(name).cloned()
    }

    /// Every table, sorted by name.
    pub fn all(&self) -> Vec<TableRef> {
        let tables = read(&self.tables);
        let mut v: Vec<(String, TableRef)> =
            tables.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        drop(tables);
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, t)| t).collect()
    }
}

/// Takes a read lock. In a coroutine it yields while a writer holds the lock, so the
/// worker thread keeps running other connections.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    if may::coroutine::is_coroutine() {
        loop {
            if let Some(g) = lock.try_read() {
                return g;
            }
            may::coroutine::yield_now();
        }
    }
    lock.read()
}

/// Takes a write lock; yields in a coroutine while the lock is busy.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    if may::coroutine::is_coroutine() {
        loop {
            if let Some(g) = lock.try_write() {
                return g;
            }
            may::coroutine::yield_now();
        }
    }
    lock.write()
}
