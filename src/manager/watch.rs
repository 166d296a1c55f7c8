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
                    });
                    for w in watchers.values() {
                        let hit = w.filter.as_ref().is_none_or(|p| {
                            ch.before.as_deref().is_some_and(|r| p.matches(r))
                                || ch.after.as_deref().is_some_and(|r| p.matches(r))
                        });
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
