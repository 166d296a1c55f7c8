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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreLimits, TableStore};
    use serde::Deserialize;
    use std::sync::Arc;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Item {
        #[serde(default)]
        id: i64,
        name: String,
        price: f64,
        note: Option<String>,
    }

    impl Model for Item {
        const TABLE: &'static str = "items";
        const COLUMNS: &'static [&'static str] = &["name:str", "price:float", "note:str?"];
    }

    fn items() -> ModelTable<Item> {
        let tables = Tables::new(Arc::new(TableStore::new(StoreLimits::default())));
        let items = tables.model::<Item>();
        assert!(items.define().unwrap());
        assert!(!items.define().unwrap(), "defined once");
        items
    }

    fn item(name: &str, price: f64) -> Item {
        Item {
            id: 0,
            name: name.into(),
            price,
            note: None,
        }
    }

    #[test]
    fn rows_go_in_and_come_back_as_the_model() {
        let items = items();
        let a = items.insert(&item("pen", 1.5)).unwrap();
        let b = items.insert(&item("ink", 7.0)).unwrap();
        assert_eq!(
            items.get(a).unwrap(),
            Item {
                id: a,
                ..item("pen", 1.5)
            }
        );
        let dear = items
            .select(&Select::new().filter("price > 2").order_by("price", true))
            .unwrap();
        assert_eq!(
            dear,
            [Item {
                id: b,
                ..item("ink", 7.0)
            }]
        );
        let noted = Item {
            note: Some("blue".into()),
            ..item("ink", 8.0)
        };
        assert!(items.update(b, &noted).unwrap());
        assert_eq!(items.get(b).unwrap().note.as_deref(), Some("blue"));
        assert_eq!(items.count(None).unwrap(), 2);
        assert!(items.delete(a).unwrap());
        assert_eq!(items.get(a).unwrap_err().code, "no_such_row");
    }

    #[test]
    fn what_does_not_fit_is_an_error() {
        let items = items();
        // serde_json writes NaN as null, which the column refuses.
        let e = items.insert(&item("pen", f64::NAN)).unwrap_err();
        assert_eq!(e.code, "null_not_allowed", "{e}");
        #[derive(Serialize, Deserialize, Debug)]
        struct Wrong {
            name: i64,
        }
        impl Model for Wrong {
            const TABLE: &'static str = "items";
            const COLUMNS: &'static [&'static str] = &["name:int"];
        }
        let id = items.insert(&item("pen", 1.0)).unwrap();
        let e = items.tables.model::<Wrong>().get(id).unwrap_err();
        assert_eq!(e.code, "bad_value");
    }
}
