//! The data folder: one `<table>.csv` per table (a header of column names, then one
//! line per row, nothing else, so a spreadsheet opens it as is), its column types in
//! `<table>.schema.json` beside it, and the journal segments of changes since the last
//! snapshot.
//!
//! A snapshot rotates the journal to a new segment, saves every table (temporary file,
//! fsync, rename, fsync the folder), and only then deletes the older segments. Journal
//! records are whole row states (inserts and updates carry the full row, deletes the
//! id), so replaying the remaining segments in order over the saved tables gives the
//! state at the last record, whichever moment each table was saved at.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::csv::{self, Field};
use super::journal::{segment_name, segment_number, sync_dir, Journal, Record};
use super::schema::Schema;
use super::table::Table;
use super::value::{ColumnType, Value};
use super::{read, TableStore};

/// The schema file beside each CSV.
#[derive(Serialize, Deserialize)]
struct SchemaFile {
    /// `name:type[?]`, in column order (without `id`).
    columns: Vec<String>,
    /// The id the next insert gets (ids of deleted rows are not reused).
    next_id: i64,
}

fn schema_path(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}.schema.json"))
}

fn csv_path(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}.csv"))
}

/// What loading found, for the log.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub tables: usize,
    pub rows: usize,
    pub records_replayed: usize,
    /// Set when a torn last journal record was dropped: the file and line.
    pub torn_tail: Option<String>,
    /// The number the next journal segment should get.
    pub next_segment: u64,
}

/// Loads every table and replays the journal into `store`. Refuses (with the file and
/// line) anything damaged, except a torn last record of the last journal segment,
/// which is cut off and reported.
pub fn load(dir: &Path, store: &TableStore) -> Result<LoadReport, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut report = LoadReport::default();
    let mut schemas = Vec::new();
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            // A snapshot interrupted before its rename: the previous file is intact.
            let _ = fs::remove_file(entry.path());
        } else if let Some(t) = name.strip_suffix(".schema.json") {
            schemas.push(t.to_string());
        } else if let Some(n) = segment_number(&name) {
            segments.push(n);
        }
    }
    schemas.sort();
    segments.sort_unstable();
    for t in &schemas {
        let table = load_table(dir, t)?;
        report.rows += table.len();
        report.tables += 1;
        store.put(table);
    }
    let last = segments.last().copied();
    for n in &segments {
        let path = dir.join(segment_name(*n));
        let replayed = replay(&path, store, Some(*n) == last)?;
        report.records_replayed += replayed.0;
        if replayed.1.is_some() {
            report.torn_tail = replayed.1;
        }
    }
    report.next_segment = last.map_or(1, |n| n + 1);
    Ok(report)
}

fn load_table(dir: &Path, name: &str) -> Result<Table, String> {
    let spath = schema_path(dir, name);
    let text = fs::read_to_string(&spath).map_err(|e| format!("{}: {e}", spath.display()))?;
    let sf: SchemaFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", spath.display()))?;
    let schema =
        Schema::parse_columns(&sf.columns).map_err(|e| format!("{}: {e}", spath.display()))?;
    let mut table = Table::new(name.to_string(), schema);
    table.set_next_id(sf.next_id);
    let cpath = csv_path(dir, name);
    let text = match fs::read_to_string(&cpath) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", cpath.display())),
    };
    let at = |msg: String| format!("{}: {msg}", cpath.display());
    // Excel's "CSV UTF-8" starts the file with a byte-order mark.
    let mut reader = csv::Reader::new(text.strip_prefix('\u{feff}').unwrap_or(&text));
    if let Some(header) = reader.next_record() {
        let (_, header) = header.map_err(at)?;
        let names: Vec<&str> = header.iter().map(|f| f.text.as_str()).collect();
        if names != table.schema.names() {
            return Err(at(format!(
                "line 1: the header {:?} does not match the columns {:?} in {}",
                names,
                table.schema.names(),
                spath.display()
            )));
        }
    }
    while let Some(rec) = reader.next_record() {
        let (line, fields) = rec.map_err(at)?;
        let row = csv_row(&table.schema, &fields).map_err(|e| at(format!("line {line}: {e}")))?;
        let Some(Value::Int(id)) = row.first() else {
            return Err(at(format!("line {line}: the id is missing")));
        };
        if table.get(*id).is_some() {
            return Err(at(format!("line {line}: id {id} appears twice")));
        }
        table
            .restore(row)
            .map_err(|e| at(format!("line {line}: {e:?}")))?;
    }
    Ok(table)
}

fn csv_row(schema: &Schema, fields: &[csv::ReadField]) -> Result<Vec<Value>, String> {
    if fields.len() != schema.columns.len() {
        return Err(format!(
            "{} fields where the header has {}",
            fields.len(),
            schema.columns.len()
        ));
    }
    schema
        .columns
        .iter()
        .zip(fields)
        .map(|(col, f)| {
            if f.text.is_empty() && !f.quoted {
                // An empty cell is null; a spreadsheet also writes empty strings so,
                // which a non-nullable text column takes as "".
                return match (col.nullable, col.ty) {
                    (true, _) => Ok(Value::Null),
                    (false, ColumnType::Str) => Ok(Value::Str(String::new())),
                    (false, _) => Err(format!(
                        "column '{}' is empty but may not be null",
                        col.name
                    )),
                };
            }
            // Any other cell is a value, never null (the string "null" stays itself);
            // numbers and booleans may come quoted from a spreadsheet.
            Value::from_cell(col.ty, &f.text).map_err(|want| {
                let hint = if f.text.eq_ignore_ascii_case("null") {
                    " (a null is an empty cell)"
                } else {
                    ""
                };
                format!(
                    "column '{}': '{}' is not {} {want}{hint}",
                    col.name,
                    f.text,
                    col.ty.article()
                )
            })
        })
        .collect()
}

/// Replays one segment. Returns the records applied, and where a torn tail was cut.
fn replay(path: &Path, store: &TableStore, last: bool) -> Result<(usize, Option<String>), String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut applied = 0;
    let mut offset = 0;
    let mut line_no = 0;
    let records: Vec<(usize, usize, &[u8])> = {
        let mut v = Vec::new();
        while offset < bytes.len() {
            line_no += 1;
            let end = memchr::memchr(b'\n', &bytes[offset..]).map(|i| offset + i);
            let (line, next) = match end {
                Some(e) => (&bytes[offset..e], e + 1),
                None => (&bytes[offset..], bytes.len()),
            };
            v.push((line_no, offset, line));
            offset = next;
        }
        v
    };
    let complete = bytes.last().is_none_or(|b| *b == b'\n');
    for (i, (line_no, start, line)) in records.iter().enumerate() {
        let is_last = i + 1 == records.len();
        let parsed = if is_last && !complete {
            Err("no newline at its end".to_string())
        } else {
            serde_json::from_slice::<Record>(line).map_err(|e| e.to_string())
        };
        let rec = match parsed {
            Ok(r) => r,
            Err(e) if is_last && last => {
                // A write cut short by a crash: everything before it is intact.
                cut(path, *start as u64)?;
                let at = format!("{} line {line_no} ({e})", path.display());
                return Ok((applied, Some(at)));
            }
            Err(e) => {
                return Err(format!(
                    "{} line {line_no}: bad journal record: {e}",
                    path.display()
                ))
            }
        };
        let undefined_later = |t: &str| {
            records[i + 1..].iter().any(|(_, _, l)| {
                matches!(serde_json::from_slice::<Record>(l), Ok(Record::Undefine { t: u }) if u == t)
            })
        };
        apply_record(store, rec, &undefined_later)
            .map_err(|e| format!("{} line {line_no}: {e}", path.display()))?;
        applied += 1;
    }
    Ok((applied, None))
}

fn cut(path: &Path, len: u64) -> Result<(), String> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(len)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: cannot cut the torn record: {e}", path.display()))
}

/// Applies one journal record to the store. `undefined_later` says whether a later
/// record removes a table.
fn apply_record(
    store: &TableStore,
    rec: Record,
    undefined_later: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    let (t, row_op) = match rec {
        Record::Define { t, columns } => {
            let schema = Schema::parse_columns(&columns)?;
            store.put(Table::new(t, schema));
            return Ok(());
        }
        Record::Undefine { t } => {
            store.remove_quietly(&t);
            return Ok(());
        }
        Record::Insert { t, row } | Record::Update { t, row } => (t, Ok(row)),
        Record::Delete { t, id } => (t, Err(id)),
    };
    let Some(table) = store.get(&t) else {
        // Changes to a table that a later record removes are moot.
        if undefined_later(&t) {
            return Ok(());
        }
        return Err(format!("a change to table '{t}', which does not exist"));
    };
    let mut table = super::write(&table);
    match row_op {
        Ok(row) => {
            if row.len() != table.schema.columns.len() {
                return Err(format!(
                    "a row of {} values for table '{t}' of {} columns",
                    row.len(),
                    table.schema.columns.len()
                ));
            }
            let typed = table
                .schema
                .columns
                .iter()
                .zip(&row)
                .map(|(c, v)| {
                    Value::from_json(c.ty, v).map_err(|want| {
                        format!(
                            "column '{}' needs {} {want}, got {v}",
                            c.name,
                            c.ty.article()
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            table.restore(typed).map_err(|e| format!("{e:?}"))?;
        }
        Err(id) => {
            table.delete(&[id]);
        }
    }
    Ok(())
}

/// Saves every table and removes what is no longer needed. `journal` is rotated first,
/// and its older segments are deleted once all tables are safely saved.
pub fn snapshot(
    dir: &Path,
    store: &TableStore,
    journal: Option<&Journal>,
) -> io::Result<SnapshotReport> {
    let started = Instant::now();
    let segment = journal.map(Journal::rotate).transpose()?;
    let mut report = SnapshotReport::default();
    let mut names = Vec::new();
    for t in store.all() {
        let (name, csv, schema, rows) = {
            let t = read(&t);
            (t.name.clone(), table_csv(&t), schema_json(&t), t.len())
        };
        write_atomically(&csv_path(dir, &name), &csv)?;
        write_atomically(&schema_path(dir, &name), &schema)?;
        report.tables += 1;
        report.rows += rows;
        report.bytes += csv.len();
        names.push(name);
    }
    // Files of tables that were undefined.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(t) = file.strip_suffix(".schema.json") {
            if !names.iter().any(|n| n == t) {
                fs::remove_file(entry.path())?;
                let _ = fs::remove_file(csv_path(dir, t));
            }
        }
    }
    sync_dir(dir)?;
    if let Some(current) = segment {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(n) = segment_number(&entry.file_name().to_string_lossy()) {
                if n < current {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        sync_dir(dir)?;
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Where a `SAVE` gets its answer.
pub type SaveReply = may::sync::mpsc::Sender<Result<SnapshotReport, String>>;

/// Work for the snapshot thread.
pub enum DiskRequest {
    /// `SAVE`: take a snapshot and answer.
    Save(SaveReply),
    /// `UNDEFINE`: remove the table's files, once the journal holds the removal.
    RemoveFiles(String),
}

/// What a snapshot wrote.
#[derive(Debug, Default, Clone)]
pub struct SnapshotReport {
    pub tables: usize,
    pub rows: usize,
    pub bytes: usize,
    pub millis: u64,
}

fn table_csv(t: &Table) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * 32 + 64);
    csv::write_record(
        &mut out,
        t.schema.columns.iter().map(|c| Field::Text(&c.name)),
    );
    let mut cells: Vec<String> = Vec::with_capacity(t.schema.columns.len());
    for row in t.rows() {
        cells.clear();
        cells.extend(row.iter().map(Value::to_csv));
        csv::write_record(
            &mut out,
            row.iter().zip(&cells).map(|(v, s)| {
                if v.is_null() {
                    Field::Null
                } else {
                    Field::Text(s)
                }
            }),
        );
    }
    out
}

fn schema_json(t: &Table) -> Vec<u8> {
    let sf = SchemaFile {
        columns: t.schema.specs(),
        next_id: t.next_id(),
    };
    let mut v = serde_json::to_vec_pretty(&sf).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Writes `data` to `path` through a temporary file, synced and renamed, so `path` is
/// always either the old or the new content.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Everything persistence needs at run time.
pub struct Persistence {
    pub dir: PathBuf,
    pub journal: Arc<Journal>,
    snapshot_lock: parking_lot::Mutex<()>,
}

impl Persistence {
    pub fn new(dir: PathBuf, journal: Arc<Journal>) -> Self {
        Persistence {
            dir,
            journal,
            snapshot_lock: parking_lot::Mutex::new(()),
        }
    }

    /// Takes a snapshot now (one at a time). Call it from an OS thread: it does file I/O.
    pub fn snapshot(&self, store: &TableStore) -> io::Result<SnapshotReport> {
        let _one = self.snapshot_lock.lock();
        snapshot(&self.dir, store, Some(&self.journal))
    }

    /// Removes an undefined table's files. The journal is synced first, so that its
    /// record of the removal is on disk before the files are gone (else a restart would
    /// find changes to a table with no files). Nothing is removed if a table of that
    /// name exists again: its next snapshot overwrites the files.
    pub fn remove_files(&self, store: &TableStore, table: &str) -> io::Result<()> {
        let _one = self.snapshot_lock.lock();
        if store.get(table).is_some() {
            return Ok(());
        }
        self.journal.sync()?;
        for path in [schema_path(&self.dir, table), csv_path(&self.dir, table)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so a failure can be replayed.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "null",
                "NULL",
                "Null",
                "",
                "\"",
                "\"\"",
                "\n",
                "\r\n",
                "\r",
                "\0",
                "\u{feff}",
                " ",
                "  lead",
                "trail ",
                ",",
                "=",
                "'",
                "\t",
                "é",
                "本",
                "œ",
                "true",
                "1",
                "-0",
                "1.5",
                "1e9",
                "=cmd|' /C calc'!A0",
                "+1",
                "@x",
                "a,b",
                "\\",
            ];
            let mut s = String::new();
            for _ in 0..self.below(5) {
                if self.below(3) == 0 {
                    s.push(char::from_u32(self.below(0x3000) as u32).unwrap_or('x'));
                } else {
                    s.push_str(PIECES[self.below(PIECES.len())]);
                }
            }
            s
        }

        fn value(&mut self, ty: ColumnType, nullable: bool) -> Value {
            if nullable && self.below(4) == 0 {
                return Value::Null;
            }
            match ty {
                ColumnType::Str => Value::Str(self.string()),
                ColumnType::Int => Value::Int(match self.below(4) {
                    0 => i64::MIN,
                    1 => i64::MAX,
                    _ => self.next() as i64,
                }),
                ColumnType::Float => {
                    let f = f64::from_bits(self.next());
                    Value::Float(if f.is_finite() { f } else { 0.5 })
                }
                ColumnType::Bool => Value::Bool(self.below(2) == 0),
            }
        }
    }

    #[test]
    fn every_value_written_to_csv_reads_back_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let schema =
            Schema::parse_columns(&["s:str", "n:str?", "i:int?", "f:float?", "b:bool?", "z:int"])
                .unwrap();
        let mut table = Table::new("t".into(), schema);
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let values = table.schema.columns[1..]
                .iter()
                .enumerate()
                .map(|(i, c)| (i + 1, g.value(c.ty, c.nullable)))
                .collect();
            table.insert(values).unwrap();
        }
        fs::write(csv_path(dir.path(), "t"), table_csv(&table)).unwrap();
        fs::write(schema_path(dir.path(), "t"), schema_json(&table)).unwrap();
        let back = load_table(dir.path(), "t").unwrap();
        assert_eq!(back.len(), table.len());
        for (a, b) in table.rows().zip(back.rows()) {
            assert_eq!(a, b);
        }
        assert_eq!(back.next_id(), table.next_id());
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_null_is_only_an_empty_cell() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            schema_path(dir.path(), "t"),
            r#"{"columns":["s:str","n:int?"],"next_id":3}"#,
        )
        .unwrap();
        fs::write(
            csv_path(dir.path(), "t"),
            "\u{feff}id,s,n\r\n1,null,\r\n2,NULL,7\r\n",
        )
        .unwrap();
        let t = load_table(dir.path(), "t").unwrap();
        let rows: Vec<_> = t.rows().cloned().collect();
        assert_eq!(rows[0][1], Value::Str("null".into()));
        assert_eq!(rows[0][2], Value::Null);
        assert_eq!(rows[1][1], Value::Str("NULL".into()));
        fs::write(csv_path(dir.path(), "t"), "id,s,n\n1,a,null\n").unwrap();
        let Err(e) = load_table(dir.path(), "t") else {
            panic!("'null' in an int column loaded");
        };
        assert!(e.contains("line 2") && e.contains("empty cell"), "{e}");
    }
}
