//! Models: a `serde` struct registered as a typed table, read and written from Rust on
//! the same store, journal, watches and CSV files as the wire's table commands.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

use crate::commands::table_api::{Select, TableError, Tables};

/// A row type stored in a table of its own.
///
/// Its fields are the table's columns, listed in [`Model::COLUMNS`] the way `DEFINE`
/// takes them. A field named `id` (say `#[serde(default)] pub id: i64`) receives the
/// row's id when rows are read, and is left out when rows are written: the server
/// assigns ids.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Message {
///     #[serde(default)]
///     id: i64,
///     room: String,
///     text: String,
/// }
///
/// impl leviathan::framework::Model for Message {
///     const TABLE: &'static str = "messages";
///     const COLUMNS: &'static [&'static str] = &["room:str", "text:str"];
/// }
/// ```
pub trait Model: Serialize + DeserializeOwned {
    /// The table's name.
    const TABLE: &'static str;
    /// The columns besides `id`, as `name:type` with `?` for nullable
    /// (`"note:str?"`); types are `int`, `float`, `str` and `bool`.
    const COLUMNS: &'static [&'static str];
}

/// Typed access to a model's table ([`Tables::model`]).
pub struct ModelTable<T: Model> {
    tables: Tables,
    row: PhantomData<fn() -> T>,
}

impl Tables {
    /// The model's table, typed.
    pub fn model<T: Model>(&self) -> ModelTable<T> {
        ModelTable {
            tables: self.clone(),
            row: PhantomData,
        }
    }
}

impl<T: Model> ModelTable<T> {
    /// Defines the table when it does not exist yet; `Ok(true)` when this call did.
    pub fn define(&self) -> Result<bool, TableError> {
        match self.tables.define(T::TABLE, T::COLUMNS) {
            Ok(()) => Ok(true),
            Err(e) if e.code == "table_exists" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Inserts a row; returns its id. Returns once durable, as a wire `INSERT`'s `+OK`.
    pub fn insert(&self, row: &T) -> Result<i64, TableError> {
        self.tables.insert(T::TABLE, columns_of(row)?)
    }

    /// The row with this id.
    pub fn get(&self, id: i64) -> Result<T, TableError> {
        from_row(self.tables.get(T::TABLE, id)?)
    }

    /// The rows `select` picks, in its order.
    pub fn select(&self, select: &Select) -> Result<Vec<T>, TableError> {
        self.tables
            .select_by(T::TABLE, select)?
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// Sets every column of row `id` from `row`; `Ok(false)` when there is no such row.
    pub fn update(&self, id: i64, row: &T) -> Result<bool, TableError> {
        Ok(self.tables.update(T::TABLE, id, columns_of(row)?)? > 0)
    }

    /// Removes row `id`; `Ok(false)` when there is no such row.
    pub fn delete(&self, id: i64) -> Result<bool, TableError> {
        Ok(self.tables.delete(T::TABLE, id)? > 0)
    }

    /// How many rows match a condition (all without one).
    pub fn count(&self, filter: Option<&str>) -> Result<u64, TableError> {
        self.tables.count(T::TABLE, filter)
    }
}

/// The row's columns as a JSON object, without `id`.
fn columns_of<T: Model>(row: &T) -> Result<Json, TableError> {
    match serde_json::to_value(row) {
        Ok(Json::Object(mut obj)) => {
            obj.remove("id");
            Ok(Json::Object(obj))
        }
        Ok(other) => Err(TableError::new(
            "bad_value",
            format!(
                "a {} row must serialize to an object of columns, not {other}",
                T::TABLE
            ),
        )),
        Err(e) => Err(TableError::new(
            "bad_value",
            format!("a {} row cannot be serialized: {e}", T::TABLE),
        )),
    }
}

fn from_row<T: Model>(row: Json) -> Result<T, TableError> {
    serde_json::from_value(row).map_err(|e| {
        TableError::new(
            "bad_value",
            format!("a row of {} does not fit the model: {e}", T::TABLE),
        )
    })
}
