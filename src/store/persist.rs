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

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::csv::{self, Field};
use super::history::ChannelOptions;
use super::journal::{segment_number, sync_dir, Journal};
use super::table::Table;
use super::value::Value;
use super::{read, TableStore};
use crate::protocol::Payload;

/// The channels that exist, saved with each snapshot (changes since are journaled).
pub(super) const CHANNELS_FILE: &str = "channels.json";

/// What `channels.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct ChannelsFile {
    pub channels: Vec<String>,
    /// The options of channels created with any.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, ChannelOptions>,
}

/// Channels' histories, saved with each snapshot: per channel a line
/// `{"channel":…,"epoch":…,"next":…}`, then one line per kept message.
pub(super) const HISTORY_FILE: &str = "history.jsonl";
/// Written after the final snapshot of a clean shutdown, removed at start: the saved
/// histories keep their epochs only when it is there.
pub(super) const CLEAN_FILE: &str = "history.clean";

/// A history file's channel line.
#[derive(Serialize, Deserialize)]
pub(super) struct HistoryHead {
    pub channel: String,
    pub epoch: String,
    pub next: u64,
}

/// A history file's message line: `text` or `json`, as it was published.
#[derive(Serialize, Deserialize)]
pub(super) struct HistoryLine {
    pub offset: u64,
    pub at: u64,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
}

/// Every channel's history as the history file holds it.
fn history_jsonl(channels: &[(String, super::StoredChannel)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, c) in channels {
        let Some(h) = &c.history else { continue };
        // Copied under the lock (reference counts only), written after.
        let (entries, next) = h.lock().saved();
        let head = HistoryHead {
            channel: name.clone(),
            epoch: h.epoch.to_string(),
            next,
        };
        let _ = serde_json::to_writer(&mut out, &head);
        out.push(b'\n');
        for e in entries {
            let (text, json) = match &e.msg.data {
                Payload::Text(t) => (Some(t.clone()), None),
                Payload::Json(v) => (None, Some(v.clone())),
            };
            let line = HistoryLine {
                offset: e.offset,
                at: e.at,
                from: e.msg.from.to_string(),
                text,
                json,
            };
            let _ = serde_json::to_writer(&mut out, &line);
            out.push(b'\n');
        }
    }
    out
}

pub(super) fn channels_json(f: &ChannelsFile) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(f).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The schema file beside each CSV.
#[derive(Serialize, Deserialize)]
pub(super) struct SchemaFile {
    /// `name:type[?]`, in column order (without `id`).
    pub(super) columns: Vec<String>,
    /// The id the next insert gets (ids of deleted rows are not reused).
    pub(super) next_id: i64,
    /// What the last save wrote (absent in files from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) saved: Option<Saved>,
    /// Whether text cells in the CSV carry the formula guard ([`guard_cell`]); false
    /// for files written before it, whose cells are read as they are.
    #[serde(default)]
    pub(super) formula_guard: bool,
}

/// Characters that make a spreadsheet take a cell as a formula (OWASP's list), and the
/// quote that guards them.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A text cell as written to the CSV: one starting like a formula (`=cmd|' /C calc'!A0`)
/// gets a leading `'`, so a spreadsheet shows it as text instead of running it. A cell
/// that already starts with `'` gets one more, so that [`unguard_cell`] gives back
/// exactly what was stored.
pub(super) fn guard_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(FORMULA_START) || s.starts_with('\'') {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// The stored text of a guarded cell.
pub(super) fn unguard_cell(s: &str) -> &str {
    s.strip_prefix('\'').unwrap_or(s)
}

/// What a save wrote, so that a CSV deleted, emptied or replaced behind the server's back
/// is told from one a crash left in the middle of a save.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct Saved {
    /// Rows written to the CSV.
    pub(super) rows: usize,
    /// Rows in the CSV that this save replaced; `None` when there was no CSV.
    pub(super) replaces: Option<usize>,
    /// The first journal segment the save does not cover: while older segments
    /// exist, the save did not finish (they are deleted only after it).
    pub(super) segment: u64,
}

pub(super) fn schema_path(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}.schema.json"))
}

pub(super) fn csv_path(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}.csv"))
}

/// Saves every table and removes what is no longer needed. `journal` is rotated first,
/// and its older segments are deleted once all tables are safely saved. `on_disk` holds
/// the rows in each table's CSV file, and is kept up to date.
fn snapshot(
    dir: &Path,
    store: &TableStore,
    journal: Option<&Journal>,
    on_disk: &mut HashMap<String, usize>,
) -> io::Result<SnapshotReport> {
    let started = Instant::now();
    let segment = journal.map(Journal::rotate).transpose()?;
    let mut report = SnapshotReport::default();
    let mut names = Vec::new();
    for t in store.all() {
        let (name, csv, mut schema) = {
            let t = read(&t);
            let schema = SchemaFile {
                columns: t.schema.specs(),
                next_id: t.next_id(),
                saved: Some(Saved {
                    rows: t.len(),
                    replaces: None,
                    segment: segment.unwrap_or(0),
                }),
                formula_guard: true,
            };
            (t.name.clone(), table_csv(&t), schema)
        };
        let rows = schema.saved.map_or(0, |s| s.rows);
        if let Some(saved) = schema.saved.as_mut() {
            saved.replaces = on_disk.get(&name).copied();
        }
        // The schema file first: a crash between the two renames then leaves a CSV that
        // the schema file names as the one being replaced.
        write_atomically(&schema_path(dir, &name), &schema_json(&schema))?;
        write_atomically(&csv_path(dir, &name), &csv)?;
        on_disk.insert(name.clone(), rows);
        report.tables += 1;
        report.rows += rows;
        report.bytes += csv.len();
        names.push(name);
    }
    // Channels as of now: at least every change in the older segments, which go next.
    let stored = store.channels();
    let channels = ChannelsFile {
        channels: stored.iter().map(|(n, _)| n.clone()).collect(),
        options: stored
            .iter()
            .filter(|(_, c)| c.options != ChannelOptions::default())
            .map(|(n, c)| (n.clone(), c.options))
            .collect(),
    };
    write_atomically(&dir.join(CHANNELS_FILE), &channels_json(&channels))?;
    write_atomically(&dir.join(HISTORY_FILE), &history_jsonl(&stored))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(t) = file.strip_suffix(".schema.json") {
            // Files of tables that were undefined.
            if !names.iter().any(|n| n == t) {
                fs::remove_file(entry.path())?;
                let _ = fs::remove_file(csv_path(dir, t));
                on_disk.remove(t);
            }
        } else if file.ends_with(".tmp") {
            // Left by a save that failed or was cut short; this one is done with its own.
            let _ = fs::remove_file(entry.path());
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

pub(super) fn table_csv(t: &Table) -> Vec<u8> {
    let names = t.schema.columns.iter().map(|c| c.name.as_str());
    rows_csv(names, t.rows().map(|r| &r[..]), t.len())
}

/// Rows as a CSV file: a header of column names, then one line per row, text cells
/// that look like spreadsheet formulas guarded ([`guard_cell`]); `n` rows expected.
pub fn rows_csv<'a>(
    columns: impl Iterator<Item = &'a str>,
    rows: impl Iterator<Item = &'a [Value]>,
    n: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 32 + 64);
    csv::write_record(&mut out, columns.map(Field::Text));
    let mut cells: Vec<String> = Vec::new();
    for row in rows {
        cells.clear();
        cells.extend(row.iter().map(|v| match v {
            Value::Str(s) => guard_cell(s).into_owned(),
            v => v.to_csv(),
        }));
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

pub(super) fn schema_json(sf: &SchemaFile) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(sf).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Writes `data` to `path` through a temporary file, synced and renamed, so `path` is
/// always either the old or the new content.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with_mode(path, data, 0o644)
}

/// As [`write_atomically`], readable and writable by the server's user only (account
/// and session files).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with_mode(path, data, 0o600)
}

fn write_with_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let opened = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp);
    let written = opened.and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // A full disk: give back what the partial file took.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)
}

/// Everything persistence needs at run time.
pub struct Persistence {
    pub dir: PathBuf,
    pub journal: Arc<Journal>,
    /// Rows in each table's CSV file; held while saving, so saves go one at a time.
    on_disk: parking_lot::Mutex<HashMap<String, usize>>,
}

impl Persistence {
    /// `on_disk` is what loading found ([`super::load::LoadReport::on_disk`]).
    pub fn new(dir: PathBuf, journal: Arc<Journal>, on_disk: HashMap<String, usize>) -> Self {
        Persistence {
            dir,
            journal,
            on_disk: parking_lot::Mutex::new(on_disk),
        }
    }

    /// Takes a snapshot now (one at a time). Call it from an OS thread: it does file I/O.
    pub fn snapshot(&self, store: &TableStore) -> io::Result<SnapshotReport> {
        let mut on_disk = self.on_disk.lock();
        let report = snapshot(&self.dir, store, Some(&self.journal), &mut on_disk)?;
        use std::sync::atomic::Ordering::Relaxed;
        store.snapshots.fetch_add(1, Relaxed);
        store.last_snapshot_millis.store(report.millis, Relaxed);
        Ok(report)
    }

    /// Notes that the last snapshot was taken at a clean shutdown, so the histories it
    /// saved are whole and keep their epochs at the next start.
    pub fn mark_clean(&self) -> io::Result<()> {
        write_atomically(&self.dir.join(CLEAN_FILE), b"saved at a clean shutdown\n")?;
        sync_dir(&self.dir)
    }

    /// Removes the clean-shutdown mark once its histories are loaded: from now on a
    /// crash must give them new epochs.
    pub fn clear_clean_mark(&self) -> io::Result<()> {
        match fs::remove_file(self.dir.join(CLEAN_FILE)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes an undefined table's files. The journal is synced first, so that its
    /// record of the removal is on disk before the files are gone (else a restart would
    /// find changes to a table with no files). Nothing is removed if a table of that
    /// name exists again: its next snapshot overwrites the files.
    pub fn remove_files(&self, store: &TableStore, table: &str) -> io::Result<()> {
        let mut on_disk = self.on_disk.lock();
        on_disk.remove(table);
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
