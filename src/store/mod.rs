//! The table store: typed tables in memory, each behind its own `parking_lot` RwLock.
//!
//! Lock order: the store's map lock is taken only to find, add or remove a table and
//! is released before a table's lock is taken; no code holds two table locks. Neither
//! lock is ever held across I/O, a channel wait or a yield. In a coroutine, locks are
//! taken with [`read`]/[`write`], which yield to other coroutines while the lock is
//! busy instead of parking the worker thread.

pub mod expr;
pub mod lex;
pub mod schema;
pub mod table;
pub mod value;

use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::manager::Map;
use schema::Schema;
use table::Table;

/// A shared handle to one table.
pub type TableRef = Arc<RwLock<Table>>;

/// All tables, by name.
#[derive(Default)]
pub struct TableStore {
    tables: RwLock<Map<String, TableRef>>,
}

/// Why a table could not be defined.
#[derive(Debug, PartialEq)]
pub enum DefineError {
    Exists,
}

impl TableStore {
    /// Adds an empty table.
    pub fn define(&self, name: &str, schema: Schema) -> Result<TableRef, DefineError> {
        let mut tables = write(&self.tables);
        if tables.contains_key(name) {
            return Err(DefineError::Exists);
        }
        let t = Arc::new(RwLock::new(Table::new(name.to_string(), schema)));
        tables.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Adds a table built elsewhere (loading from disk), replacing any of that name.
    pub fn put(&self, table: Table) -> TableRef {
        let name = table.name.clone();
        let t = Arc::new(RwLock::new(table));
        write(&self.tables).insert(name, t.clone());
        t
    }

    /// Removes a table; false if there was none.
    pub fn undefine(&self, name: &str) -> bool {
        write(&self.tables).remove(name).is_some()
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
