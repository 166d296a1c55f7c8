//! Watches: which connections watch which table, and how a table's row changes reach
//! them (those whose filter the row matches, before or after the change, so a watcher
//! also learns when a row leaves its filter). `WATCH` itself is applied by the
//! application layer; the store reports changes through the sink the assembly gives it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::outbox::ConnId;
use super::Manager;
use crate::protocol::push::RowEvent;
use crate::protocol::Push;
use crate::store::{read, ChangeNote};

/// Whether a watcher with `filter` hears of a change: the row matches it before or
/// after (so it also learns when a row leaves its filter).
pub fn passes(
    filter: Option<&crate::store::expr::Predicate>,
    before: Option<&[crate::store::value::Value]>,
    after: Option<&[crate::store::value::Value]>,
) -> bool {
    filter
        .is_none_or(|p| before.is_some_and(|r| p.matches(r)) || after.is_some_and(|r| p.matches(r)))
}

impl Manager {
    /// Stops connection `id` watching `table`.
    pub fn unwatch(&mut self, id: ConnId, table: &str) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.watching.remove(table);
        }
        let Some(w) = self.watches.get_mut(table) else {
            return;
        };
        w.remove(&id);
        if w.is_empty() {
            self.watches.remove(table);
            if let Some(t) = self.store.get(table) {
                read(&t).watched.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Passes a table's changes to its watchers.
    pub(super) fn table_changed(&mut self, note: ChangeNote) {
        match note {
            ChangeNote::Rows { table, changes } => {
                let Some(watchers) = self.watches.get(&table) else {
                    return;
                };
                let mut deliveries = Vec::new();
                for ch in changes {
                    let event = Arc::new(RowEvent {
                        table: table.clone(),
                        change: ch.kind.as_str(),
                        row: Some(ch.item),
                        seq: Some(ch.seq),
                    });
                    for w in watchers.values() {
                        // A resumed watcher was given the changes up to `from` already.
                        if ch.seq <= w.from {
                            continue;
                        }
                        let hit =
                            passes(w.filter.as_ref(), ch.before.as_deref(), ch.after.as_deref());
                        if hit {
                            deliveries.push((w.outbox.clone(), Push::Row(event.clone())));
                        }
                    }
                }
                for (outbox, push) in deliveries {
                    self.push(&outbox, push);
                }
            }
            ChangeNote::Dropped { table } => {
                let Some(watchers) = self.watches.remove(&table) else {
                    return;
                };
                let event = Arc::new(RowEvent {
                    table: table.clone(),
                    change: "drop",
                    row: None,
                    seq: None,
                });
                for (id, w) in watchers {
                    self.push(&w.outbox, Push::Row(event.clone()));
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.watching.remove(&table);
                    }
                }
            }
        }
    }
}
