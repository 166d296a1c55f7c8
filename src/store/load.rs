//! Loading a data folder at start: every table's CSV and schema file, then the journal
//! segments replayed over them in order. Anything damaged stops the start with the file
//! and line, and no file is changed, so a person can look at what was found.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use super::csv;
use super::journal::{segment_name, segment_number};
use super::persist::{
    csv_path, schema_path, unguard_cell, ChannelsFile, HistoryHead, HistoryLine, Saved, SchemaFile,
    CHANNELS_FILE, CLEAN_FILE, HISTORY_FILE,
};
use super::record::{self, Record};
use super::schema::Schema;
use super::table::Table;
use super::value::{ColumnType, Value};
use super::TableStore;

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
    /// The sequence number the next journal record should get.
    pub next_seq: u64,
    /// Rows in each table's CSV as read (tables with a CSV file only).
    pub on_disk: HashMap<String, usize>,
    /// What a person should know: CSV files changed outside the server.
    pub notes: Vec<String>,
    /// Whether the histories were saved by a clean shutdown (they keep their epochs).
    pub clean_histories: bool,
}

/// Puts back the channels' saved histories.
fn load_histories(dir: &Path, store: &TableStore) -> Result<(), String> {
    use crate::protocol::{Message, MessageKind, Payload};
    use std::sync::Arc;
    let path = dir.join(HISTORY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut current: Option<(HistoryHead, Vec<super::Entry>)> = None;
    let put = |c: Option<(HistoryHead, Vec<super::Entry>)>| {
        if let Some((head, entries)) = c {
            let epoch = crate::protocol::push::Epoch::parse(&head.epoch);
            store.restore_history(&head.channel, epoch, head.next, entries);
        }
    };
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), n + 1);
        if line.contains("\"channel\"") && !line.contains("\"offset\"") {
            let head: HistoryHead =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
            put(current.take());
            current = Some((head, Vec::new()));
            continue;
        }
        let l: HistoryLine = serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
        let Some((head, entries)) = current.as_mut() else {
            return Err(format!("{}: a message before any channel line", at()));
        };
        let data = match (l.text, l.json) {
            (Some(t), None) => Payload::Text(t),
            (None, Some(v)) => Payload::Json(v),
            _ => return Err(format!("{}: a message needs text or json", at())),
        };
        let channel: Arc<str> = head.channel.as_str().into();
        let msg = Message::new(MessageKind::Channel, channel, l.from.into(), data);
        entries.push(super::Entry {
            offset: l.offset,
            at: l.at,
            msg: Arc::new(msg),
        });
    }
    put(current.take());
    Ok(())
}

/// Loads every table and replays the journal into `store`. Refuses (with the file and
/// line) anything damaged, except a torn last line of a journal segment, which is
/// skipped and reported. Changes no file, so a refused start leaves everything as it
/// was for a person to look at.
pub fn load(dir: &Path, store: &TableStore) -> Result<LoadReport, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut report = LoadReport::default();
    let mut schemas = Vec::new();
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `*.tmp` files are saves cut short before their rename; the next save replaces them.
        if let Some(t) = name.strip_suffix(".schema.json") {
            schemas.push(t.to_string());
        } else if let Some(n) = segment_number(&name) {
            segments.push(n);
        }
    }
    schemas.sort();
    segments.sort_unstable();
    let cpath = dir.join(CHANNELS_FILE);
    match fs::read_to_string(&cpath) {
        Ok(text) => {
            let f: ChannelsFile =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cpath.display()))?;
            for c in f.channels {
                let options = f.options.get(&c).copied().unwrap_or_default();
                store.restore_channel(c, Some(options));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", cpath.display())),
    }
    report.clean_histories = dir.join(CLEAN_FILE).exists();
    store.set_clean_histories(report.clean_histories);
    if let Err(e) = load_histories(dir, store) {
        // Histories are not worth refusing a start for: the channels start new ones
        // (a new epoch tells resuming clients that they lost messages).
        report
            .notes
            .push(format!("{e}; channel histories start empty"));
    }
    let oldest_segment = segments.first().copied();
    for t in &schemas {
        let loaded = load_table(dir, t, oldest_segment)?;
        report.rows += loaded.table.len();
        report.tables += 1;
        if let Some(rows) = loaded.csv_rows {
            report.on_disk.insert(t.clone(), rows);
        }
        report.notes.extend(loaded.note);
        store.put(loaded.table);
    }
    let mut numbering = Numbering::default();
    for n in &segments {
        let path = dir.join(segment_name(*n));
        let replayed = replay(&path, store, &mut numbering)?;
        report.records_replayed += replayed.0;
        if replayed.1.is_some() {
            report.torn_tail = replayed.1;
        }
    }
    report.next_segment = segments.last().map_or(1, |n| n + 1);
    report.next_seq = numbering.expected.unwrap_or(1);
    Ok(report)
}

/// A table read from its files.
struct Loaded {
    table: Table,
    /// Rows in its CSV; `None` when there is no CSV file.
    csv_rows: Option<usize>,
    note: Option<String>,
}

fn load_table(dir: &Path, name: &str, oldest_segment: Option<u64>) -> Result<Loaded, String> {
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
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", cpath.display())),
    };
    let at = |msg: String| format!("{}: {msg}", cpath.display());
    // Excel's "CSV UTF-8" starts the file with a byte-order mark.
    let body = text.as_deref().unwrap_or_default();
    let mut reader = csv::Reader::new(body.strip_prefix('\u{feff}').unwrap_or(body));
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
        let row = csv_row(&table.schema, &fields, sf.formula_guard)
            .map_err(|e| at(format!("line {line}: {e}")))?;
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
    let csv_rows = text.is_some().then(|| table.len());
    let note = match sf.saved {
        Some(saved) => check_saved(&cpath, &spath, saved, csv_rows, oldest_segment)?,
        None => None,
    };
    Ok(Loaded {
        table,
        csv_rows,
        note,
    })
}

/// Compares a CSV with what the last save wrote. A save cut short by a crash leaves the
/// CSV it was replacing, with the journal segments that cover the difference; anything
/// else that leaves a table with no rows where rows were saved is refused. Other
/// differences (rows edited in a spreadsheet) are noted, not refused.
fn check_saved(
    cpath: &Path,
    spath: &Path,
    saved: Saved,
    csv_rows: Option<usize>,
    oldest_segment: Option<u64>,
) -> Result<Option<String>, String> {
    let rows = csv_rows.unwrap_or(0);
    if rows == saved.rows {
        return Ok(None);
    }
    let save_cut_short =
        oldest_segment.is_some_and(|n| n < saved.segment) && csv_rows == saved.replaces;
    if save_cut_short {
        return Ok(None);
    }
    if rows == 0 {
        let what = match csv_rows {
            None => "is missing",
            Some(_) => "has no rows",
        };
        return Err(format!(
            "{} {what}, but {} records {} rows at the last save: the file was deleted, emptied or replaced. \
             Put the saved file back; or, if the table is meant to be empty, set \"rows\" to 0 under \"saved\" in {}. Nothing was changed",
            cpath.display(),
            spath.display(),
            saved.rows,
            spath.display()
        ));
    }
    Ok(Some(format!(
        "{} has {rows} rows where the last save wrote {} (changed outside the server?); loaded as it is",
        cpath.display(),
        saved.rows
    )))
}

/// `guarded`: text cells carry the formula guard, taken off here.
fn csv_row(
    schema: &Schema,
    fields: &[csv::ReadField],
    guarded: bool,
) -> Result<Vec<Value>, String> {
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
            let text = if guarded && col.ty == ColumnType::Str {
                unguard_cell(&f.text)
            } else {
                &f.text
            };
            Value::from_cell(col.ty, text).map_err(|want| {
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

/// Where the numbering stands while segments are replayed in order.
#[derive(Default)]
struct Numbering {
    /// The sequence number the next record must have; `None` before the first
    /// numbered segment, or after a segment written before records were numbered.
    expected: Option<u64>,
}

/// Replays one segment. Returns the records applied, and where a torn last line was cut.
///
/// Every line but the last must be whole and intact, and records must follow each other
/// 1, 2, … from the segment header's `first` on, continuing the segment before; the
/// last line of a segment may be torn (a write cut short by a crash or a full disk),
/// and is cut off. A segment may begin with records the one before already holds (the
/// journal went on in a new segment after a failed write): those are skipped.
fn replay(
    path: &Path,
    store: &TableStore,
    numbering: &mut Numbering,
) -> Result<(usize, Option<String>), String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines: Vec<(usize, &[u8], bool)> = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[offset..]).map(|i| offset + i);
        let (line, next, whole) = match end {
            Some(e) => (&bytes[offset..e], e + 1, true),
            None => (&bytes[offset..], bytes.len(), false),
        };
        lines.push((lines.len() + 1, line, whole));
        offset = next;
    }
    let at = |line_no: usize| format!("{} line {line_no}", path.display());
    let mut decoded = Vec::with_capacity(lines.len());
    let mut torn = None;
    for (i, (line_no, line, whole)) in lines.iter().enumerate() {
        let parsed = if *whole {
            record::decode(line)
        } else {
            Err("no newline at its end".to_string())
        };
        match parsed {
            Ok(l) => decoded.push((*line_no, l)),
            Err(e) if i + 1 == lines.len() => {
                torn = Some(format!("{} ({e})", at(*line_no)));
            }
            Err(e) => return Err(format!("{}: bad journal record: {e}", at(*line_no))),
        }
    }
    let numbered = match decoded.first() {
        None => return Ok((0, torn)),
        Some((_, l)) => l.checked,
    };
    let mut records = Vec::with_capacity(decoded.len());
    if numbered {
        let mut lines = decoded.into_iter();
        let Some((
            n,
            record::Line {
                record: Record::Segment { first },
                ..
            },
        )) = lines.next()
        else {
            return Err(format!(
                "{}: a journal segment must start with its header",
                at(1)
            ));
        };
        if let Some(e) = numbering.expected {
            if first > e {
                return Err(format!(
                    "{}: records {e} to {} are missing (the segment before ends at {}); the journal is damaged",
                    at(n),
                    first - 1,
                    e - 1
                ));
            }
        }
        let skip_below = numbering.expected.unwrap_or(first);
        let mut next = first;
        for (n, l) in lines {
            let seq = match (l.checked, l.seq, &l.record) {
                (true, Some(seq), r) if !matches!(r, Record::Segment { .. }) => seq,
                _ => return Err(format!("{}: not a numbered, checksummed change", at(n))),
            };
            if seq != next {
                return Err(format!(
                    "{}: record {seq} where record {next} should be{}; the journal is damaged",
                    at(n),
                    if seq > next {
                        " (records are missing)"
                    } else {
                        ""
                    }
                ));
            }
            next += 1;
            if seq >= skip_below {
                records.push((n, l.record));
            }
        }
        numbering.expected = Some(next.max(skip_below));
    } else {
        // Written before records were numbered: replayed as it is.
        for (n, l) in decoded {
            if l.checked || matches!(l.record, Record::Segment { .. }) {
                return Err(format!(
                    "{}: a numbered line in an unnumbered segment",
                    at(n)
                ));
            }
            records.push((n, l.record));
        }
        numbering.expected = None;
    }
    let mut applied = 0;
    for i in 0..records.len() {
        let undefined_later = |t: &str| {
            records[i + 1..]
                .iter()
                .any(|(_, r)| matches!(r, Record::Undefine { t: u } if u == t))
        };
        let (n, rec) = &records[i];
        apply_record(store, rec.clone(), &undefined_later)
            .map_err(|e| format!("{}: {e}", at(*n)))?;
        applied += 1;
    }
    Ok((applied, torn))
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
        Record::Segment { .. } => return Ok(()),
        Record::CreateChannel { c, o } => {
            store.restore_channel(c, Some(o.unwrap_or_default()));
            return Ok(());
        }
        Record::DropChannel { c } => {
            store.restore_channel(c, None);
            return Ok(());
        }
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
            let before = table.bytes();
            table.restore(typed).map_err(|e| format!("{e:?}"))?;
            store.account(before, table.bytes());
        }
        Err(id) => {
            let before = table.bytes();
            table.delete(&[id]);
            store.account(before, table.bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::persist::{schema_json, table_csv};

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
                "+",
                "-",
                "@",
                "=cmd|' /C calc'!A0",
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
        let schema = SchemaFile {
            columns: table.schema.specs(),
            next_id: table.next_id(),
            saved: None,
            formula_guard: true,
        };
        fs::write(csv_path(dir.path(), "t"), table_csv(&table)).unwrap();
        fs::write(schema_path(dir.path(), "t"), schema_json(&schema)).unwrap();
        let back = load_table(dir.path(), "t", None).unwrap().table;
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
        let t = load_table(dir.path(), "t", None).unwrap().table;
        let rows: Vec<_> = t.rows().cloned().collect();
        assert_eq!(rows[0][1], Value::Str("null".into()));
        assert_eq!(rows[0][2], Value::Null);
        assert_eq!(rows[1][1], Value::Str("NULL".into()));
        fs::write(csv_path(dir.path(), "t"), "id,s,n\n1,a,null\n").unwrap();
        let Err(e) = load_table(dir.path(), "t", None) else {
            panic!("'null' in an int column loaded");
        };
        assert!(e.contains("line 2") && e.contains("empty cell"), "{e}");
    }

    #[test]
    fn formulas_are_guarded_in_the_csv_and_read_back_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Schema::parse_columns(&["s:str".to_string(), "n:int".to_string()]).unwrap();
        let mut table = Table::new("t".into(), schema);
        let cells = [
            "=cmd|' /C calc'!A0",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "'quoted",
            "plain",
        ];
        for s in cells {
            table
                .insert(vec![(1, Value::Str(s.into())), (2, Value::Int(-5))])
                .unwrap();
        }
        let csv = String::from_utf8(table_csv(&table)).unwrap();
        assert_eq!(
            csv,
            "id,s,n\n1,'=cmd|' /C calc'!A0,-5\n2,'+1,-5\n3,'-2+3,-5\n4,'@SUM(A1),-5\n5,''quoted,-5\n6,plain,-5\n"
        );
        let sf = SchemaFile {
            columns: table.schema.specs(),
            next_id: table.next_id(),
            saved: None,
            formula_guard: true,
        };
        fs::write(csv_path(dir.path(), "t"), &csv).unwrap();
        fs::write(schema_path(dir.path(), "t"), schema_json(&sf)).unwrap();
        let back = load_table(dir.path(), "t", None).unwrap().table;
        let read: Vec<Value> = back.rows().map(|r| r[1].clone()).collect();
        let want: Vec<Value> = cells.iter().map(|s| Value::Str(s.to_string())).collect();
        assert_eq!(read, want);
        // A file from before the guard is read as it is.
        let old = r#"{"columns":["s:str","n:int"],"next_id":2}"#;
        fs::write(schema_path(dir.path(), "t"), old).unwrap();
        fs::write(csv_path(dir.path(), "t"), "id,s,n\n1,'kept,1\n").unwrap();
        let back = load_table(dir.path(), "t", None).unwrap().table;
        assert_eq!(back.rows().next().unwrap()[1], Value::Str("'kept".into()));
    }
}
