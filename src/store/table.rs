//! One table's rows, in id order.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use super::expr::Predicate;
use super::schema::Schema;
use super::value::Value;

/// Why a write was refused; nothing was changed.
#[derive(Debug, PartialEq)]
pub enum TableError {
    /// A non-nullable column would be null (the column's name).
    NullNotAllowed(String),
}

/// A table: schema and rows. Each row holds its id as column 0.
pub struct Table {
    pub name: String,
    pub schema: Schema,
    rows: BTreeMap<i64, Vec<Value>>,
    next_id: i64,
    /// Memory the rows take, estimated ([`row_bytes`]).
    bytes: usize,
    /// Set by the channel manager while someone watches this table, so writers report
    /// their changes only when someone listens.
    pub watched: AtomicBool,
    /// Its recent changes, once it was watched (for watchers that resume).
    pub log: super::changes::ChangeLog,
}

impl Table {
    pub fn new(name: String, schema: Schema) -> Self {
        Table {
            name,
            schema,
            rows: BTreeMap::new(),
            next_id: 1,
            bytes: 0,
            watched: AtomicBool::new(false),
            log: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Memory the rows take, estimated.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The id the next insert will get.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Every row, in id order.
    pub fn rows(&self) -> impl Iterator<Item = &Vec<Value>> {
        self.rows.values()
    }

    /// Checks that `row` (id first) fits the schema's nullability.
    fn check_nulls(&self, row: &[Value]) -> Result<(), TableError> {
        for (col, v) in self.schema.columns.iter().zip(row) {
            if v.is_null() && !col.nullable {
                return Err(TableError::NullNotAllowed(col.name.clone()));
            }
        }
        Ok(())
    }

    /// Inserts a row from `(column index, value)` pairs (typed by the caller); columns
    /// not given are null. Returns the new id.
    pub fn insert(&mut self, values: Vec<(usize, Value)>) -> Result<i64, TableError> {
        let id = self.next_id;
        let mut row = vec![Value::Null; self.schema.columns.len()];
        row[0] = Value::Int(id);
        for (i, v) in values {
            if i > 0 && i < row.len() {
                row[i] = v;
            }
        }
        self.check_nulls(&row)?;
        self.bytes += row_bytes(&row);
        self.rows.insert(id, row);
        self.next_id += 1;
        Ok(id)
    }

    /// Puts back a row with a known id (loading, replaying the journal).
    pub fn restore(&mut self, row: Vec<Value>) -> Result<(), TableError> {
        self.check_nulls(&row)?;
        if let Some(Value::Int(id)) = row.first() {
            let id = *id;
            self.bytes += row_bytes(&row);
            if let Some(old) = self.rows.insert(id, row) {
                self.bytes -= row_bytes(&old);
            }
            self.next_id = self.next_id.max(id + 1);
        }
        Ok(())
    }

    /// Raises the next id (ids of deleted rows are never reused).
    pub fn set_next_id(&mut self, next: i64) {
        self.next_id = self.next_id.max(next);
    }

    pub fn get(&self, id: i64) -> Option<&Vec<Value>> {
        self.rows.get(&id)
    }

    /// Visits up to `max` rows with ids from `from` on, in id order, calling `f` on each
    /// that matches `filter`. Returns the id to go on from, or `None` when the table has
    /// no more rows. Long scans are made of such chunks, with the lock released between
    /// them, so that no scan holds a lock, or its worker, for long.
    pub fn scan_from(
        &self,
        from: i64,
        max: usize,
        filter: Option<&Predicate>,
        mut f: impl FnMut(&Vec<Value>),
    ) -> Option<i64> {
        for (visited, (id, row)) in self.rows.range(from..).enumerate() {
            if visited == max {
                return Some(*id);
            }
            if filter.is_none_or(|p| p.matches(row)) {
                f(row);
            }
        }
        None
    }

    /// Ids of the rows an update or delete targets.
    pub fn ids(&self, filter: Option<&Predicate>) -> Vec<i64> {
        self.rows
            .iter()
            .filter(|(_, r)| filter.is_none_or(|p| p.matches(r)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies `sets` to each row in `ids`; all or nothing. Returns each updated row as
    /// it was before and after.
    #[allow(clippy::type_complexity)]
    pub fn update(
        &mut self,
        ids: &[i64],
        sets: &[(usize, Value)],
    ) -> Result<Vec<(Vec<Value>, Vec<Value>)>, TableError> {
        // Check every row first so a refusal leaves the table untouched.
        for (i, v) in sets {
            if v.is_null() && !self.schema.columns[*i].nullable {
                return Err(TableError::NullNotAllowed(
                    self.schema.columns[*i].name.clone(),
                ));
            }
        }
        let mut updated = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.rows.get_mut(id) {
                let before = row.clone();
                for (i, v) in sets {
                    if *i > 0 {
                        row[*i] = v.clone();
                    }
                }
                self.bytes = self.bytes + row_bytes(row) - row_bytes(&before);
                updated.push((before, row.clone()));
            }
        }
        Ok(updated)
    }

    /// Removes the rows in `ids`; returns the removed rows.
    pub fn delete(&mut self, ids: &[i64]) -> Vec<Vec<Value>> {
        let removed: Vec<Vec<Value>> = ids.iter().filter_map(|id| self.rows.remove(id)).collect();
        self.bytes -= removed.iter().map(|r| row_bytes(r)).sum::<usize>();
        removed
    }

    /// What `sets` would make of row `id`'s size, if it exists.
    pub fn bytes_after(&self, id: i64, sets: &[(usize, Value)]) -> Option<usize> {
        let row = self.rows.get(&id)?;
        let mut n = row_bytes(row);
        for (i, v) in sets {
            if let Some(old) = row.get(*i) {
                n = n + v.heap_bytes() - old.heap_bytes();
            }
        }
        Some(n)
    }
}

/// Memory one row takes, estimated: its values, their text, and the map's overhead.
pub fn row_bytes(row: &[Value]) -> usize {
    48 + row.iter().map(Value::heap_bytes).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let s = Schema::parse_columns(&["name:str", "age:int?"]).unwrap();
        Table::new("t".into(), s)
    }

    #[test]
    fn insert_get_update_delete() {
        let mut t = table();
        assert_eq!(t.insert(vec![(1, Value::Str("a".into()))]), Ok(1));
        assert_eq!(
            t.insert(vec![(2, Value::Int(3))]),
            Err(TableError::NullNotAllowed("name".into()))
        );
        assert_eq!(
            t.insert(vec![(1, Value::Str("b".into())), (2, Value::Int(7))]),
            Ok(2)
        );
        assert_eq!(t.get(2).unwrap()[2], Value::Int(7));
        assert_eq!(
            t.update(&[1], &[(1, Value::Null)]),
            Err(TableError::NullNotAllowed("name".into()))
        );
        assert_eq!(
            t.get(1).unwrap()[1],
            Value::Str("a".into()),
            "refused update left the row"
        );
        let changed = t.update(&[1, 2], &[(2, Value::Int(9))]).unwrap();
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[1].0[2], Value::Int(7));
        assert_eq!(changed[1].1[2], Value::Int(9));
        assert_eq!(t.delete(&[1, 99]).len(), 1);
        assert_eq!(
            t.insert(vec![(1, Value::Str("c".into()))]),
            Ok(3),
            "ids are not reused"
        );
    }
}
