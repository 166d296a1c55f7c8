//! A table's columns. Column 0 is always `id int`, assigned by the server.

use super::value::ColumnType;

/// Longest table or column name.
pub const MAX_NAME: usize = 64;
/// Most columns a table may define.
pub const MAX_COLUMNS: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

impl Column {
    /// `name:type` with a `?` when nullable, as `DEFINE` takes it.
    pub fn spec(&self) -> String {
        format!(
            "{}:{}{}",
            self.name,
            self.ty.as_str(),
            if self.nullable { "?" } else { "" }
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    pub columns: Vec<Column>,
    /// The column names, shared by the row replies built from this table.
    pub names: std::sync::Arc<[String]>,
}

/// Table and column names: a letter or `_`, then letters, digits, `_` (and `-` in table
/// names, which become file names).
pub fn check_name(what: &str, name: &str, allow_dash: bool) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dash && c == '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad {what} name '{}': a letter or _, then letters, digits, _{} (at most {MAX_NAME})",
            crate::protocol::args::clip(name),
            if allow_dash { " or -" } else { "" }
        ))
    }
}

impl Schema {
    /// Builds a schema from `name:type[?]` specs; `id` is added first.
    pub fn parse_columns<S: AsRef<str>>(specs: &[S]) -> Result<Schema, String> {
        if specs.is_empty() {
            return Err("a table needs at least one column, e.g. name:str".into());
        }
        if specs.len() > MAX_COLUMNS {
            return Err(format!("at most {MAX_COLUMNS} columns"));
        }
        let mut columns = vec![Column {
            name: "id".into(),
            ty: ColumnType::Int,
            nullable: false,
        }];
        for spec in specs {
            let spec = spec.as_ref();
            let Some((name, ty)) = spec.split_once(':') else {
                return Err(format!(
                    "column '{}' needs a type: name:int, name:float, name:str or name:bool (add ? for nullable)",
                    crate::protocol::args::clip(spec)
                ));
            };
            check_name("column", name, false)?;
            if name.eq_ignore_ascii_case("id") {
                return Err("'id' is assigned by the server; do not define it".into());
            }
            if columns.iter().any(|c| c.name == name) {
                return Err(format!("column '{name}' is defined twice"));
            }
            let (ty, nullable) = match ty.strip_suffix('?') {
                Some(t) => (t, true),
                None => (ty, false),
            };
            let ty = ColumnType::parse(ty).ok_or_else(|| {
                format!(
                    "column '{name}' has unknown type '{}': use int, float, str or bool",
                    crate::protocol::args::clip(ty)
                )
            })?;
            columns.push(Column {
                name: name.to_string(),
                ty,
                nullable,
            });
        }
        let names = columns.iter().map(|c| c.name.clone()).collect();
        Ok(Schema { columns, names })
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The columns as `DEFINE` takes them (without `id`).
    pub fn specs(&self) -> Vec<String> {
        self.columns[1..].iter().map(Column::spec).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let s = Schema::parse_columns(&["name:str", "email:str?", "age:INT"]).unwrap();
        assert_eq!(s.names(), vec!["id", "name", "email", "age"]);
        assert!(s.columns[2].nullable);
        assert_eq!(s.specs(), vec!["name:str", "email:str?", "age:int"]);
        for bad in [
            &["name"][..],
            &["name:text"],
            &["id:int"],
            &["a:int", "a:str"],
            &["9lives:int"],
            &["a-b:int"],
        ] {
            assert!(Schema::parse_columns(bad).is_err(), "{bad:?}");
        }
        assert!(Schema::parse_columns::<&str>(&[]).is_err());
    }
}
