//! Files (DESIGN section 12): blobs in the data folder's `files/`, uploaded and
//! downloaded over the HTTP port, each operation allowed by a grant (`GRANT`, or an
//! action's `Ctx::grant`).
//!
//! Every path is opened through a capability on the files folder (`cap_std::fs::Dir`),
//! which cannot reach outside it whatever the path says (`..`, an absolute path, a
//! symlink); on top of that a path must pass [`check_path`] and a symlink anywhere on it
//! is refused. A write goes to a temporary file in the target's folder, is synced, and
//! is renamed over the target (and the folder synced): a reader sees the old file or
//! the new one, never part of one. Who owns each file, for the per-user quota, is kept
//! in `files.owners` beside the folder (a JSON line per change, compacted at start);
//! sizes are the files' own, read at start.
//!
//! Every call here does disk I/O: the HTTP side runs them through
//! `coop::blocking`, never on a coroutine's worker.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap_std::fs::{Dir, File, OpenOptions};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The longest path, in bytes, and the longest name in it.
pub const MAX_PATH: usize = 1024;
pub const MAX_NAME: usize = 255;
/// How long a grant lasts unless it says, and the longest it may.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Folders deep a path may go.
const MAX_DEPTH: usize = 32;
/// A temporary upload's name: `.upload-<hex>.part`, in the target's folder. Names
/// starting with a dot cannot be asked for, so no client reaches one.
const TEMP_PREFIX: &str = ".upload-";
const TEMP_SUFFIX: &str = ".part";

/// An operation a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    Put,
    Get,
    Delete,
}

impl FileOp {
    /// `put`, `get` or `delete`, in any case.
    pub fn parse(s: &str) -> Option<FileOp> {
        match s.to_ascii_lowercase().as_str() {
            "put" => Some(FileOp::Put),
            "get" => Some(FileOp::Get),
            "delete" => Some(FileOp::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::Put => "put",
            FileOp::Get => "get",
            FileOp::Delete => "delete",
        }
    }
}

/// What went wrong: the wire's error code, the HTTP status it is answered with, and
/// what to tell the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

impl FileError {
    fn new(code: &'static str, status: u16, message: impl Into<String>) -> FileError {
        FileError {
            code,
            status,
            message: message.into(),
        }
    }

    pub fn bad_path(message: impl Into<String>) -> FileError {
        FileError::new("bad_path", 400, message)
    }

    pub fn not_found(path: &str) -> FileError {
        FileError::new("not_found", 404, format!("no file '{}'", clip(path)))
    }

    pub fn unauthorized(message: impl Into<String>) -> FileError {
        FileError::new("unauthorized", 401, message)
    }

    pub fn forbidden(message: impl Into<String>) -> FileError {
        FileError::new("forbidden", 403, message)
    }

    /// A disk error: a full disk says so (507), anything else is the server's (500).
    /// The message names no folder of the server's.
    pub fn io(doing: &str, e: &io::Error) -> FileError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                FileError::new("disk_full", 507, format!("{doing}: the disk is full"))
            }
            _ => {
                log::warn!("files: {doing}: {e}");
                FileError::new("io_error", 500, format!("{doing} failed: {}", e.kind()))
            }
        }
    }
}

/// At most 64 characters of a client's text, for a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// How large files may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// The largest file, in bytes (`--max-file-size`); 0 for no limit.
    pub max_file_size: u64,
    /// Bytes one user's files may take together (`--file-quota`); 0 for no limit.
    pub quota: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_file_size: 1 << 30,
            quota: 10 << 30,
        }
    }
}

/// Checks a path a client names, relative to the files folder: names joined by `/`,
/// none empty, `.`, `..` or starting with a dot, no `\`, NUL or control character, at
/// most [`MAX_NAME`] bytes a name, [`MAX_PATH`] in all, [`MAX_DEPTH`] deep. With
/// `folder`, a path ending in `/` (everything under a folder) is allowed too.
pub fn check_path(path: &str, folder: bool) -> Result<(), FileError> {
    let bad = |why: &str| {
        Err(FileError::bad_path(format!(
            "'{}' is not a file path: {why}",
            clip(path)
        )))
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH {
        return bad("longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return bad("paths are relative to the files folder (no leading /)");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return bad("no \\, NUL or control characters");
    }
    let names = match path.strip_suffix('/') {
        Some(p) if folder => p,
        Some(_) => return bad("it names a folder, not a file"),
        None => path,
    };
    let mut depth = 0;
    for name in names.split('/') {
        depth += 1;
        match name {
            "" => return bad("an empty name (//)"),
            "." | ".." => return bad("no . or .. in a path"),
            n if n.starts_with('.') => return bad("names starting with a dot are the server's"),
            n if n.len() > MAX_NAME => return bad("a name longer than 255 bytes"),
            _ => {}
        }
    }
    if depth > MAX_DEPTH {
        return bad("more than 32 folders deep");
    }
    Ok(())
}

/// What a grant allows: one operation on one file, or on everything under a folder
/// (a path ending in `/`), until it expires.
#[derive(Clone, Debug)]
struct Grant {
    op: FileOp,
    path: String,
    owner: String,
    until: Instant,
}

impl Grant {
    fn covers(&self, op: FileOp, path: &str) -> bool {
        self.op == op
            && (self.path == path || (self.path.ends_with('/') && path.starts_with(&self.path)))
    }
}

/// One stored file: its size and its owner ("" when unknown or anonymous).
#[derive(Clone, Debug)]
struct Stored {
    size: u64,
    owner: String,
}

#[derive(Default)]
struct State {
    /// By the SHA-256 of the token (the token itself is never kept).
    grants: HashMap<String, Grant>,
    /// Grants there were after the last sweep of expired ones.
    swept: usize,
    files: HashMap<String, Stored>,
    /// Bytes each owner's files take, and bytes of their uploads under way.
    usage: HashMap<String, u64>,
    reserved: HashMap<String, u64>,
    bytes: u64,
    /// `files.owners`, appended to.
    log: Option<std::fs::File>,
}

/// The files folder and its grants.
pub struct Files {
    root: Dir,
    owners_path: PathBuf,
    limits: FileLimits,
    state: Mutex<State>,
    /// Uploads and downloads done, for `/metrics`.
    pub uploads: AtomicU64,
    pub downloads: AtomicU64,
}

/// The owners log's line.
#[derive(serde::Serialize, serde::Deserialize)]
struct OwnerLine {
    path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    owner: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

impl Files {
    /// Opens (creating it) `files/` in `data_dir`: reads what is there (dropping
    /// uploads a crash left unfinished) and who owns it. Returns a note for the start
    /// log.
    pub fn open(data_dir: &Path, limits: FileLimits) -> Result<(Files, String), String> {
        let folder = data_dir.join("files");
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        let root = Dir::open_ambient_dir(&folder, cap_std::ambient_authority())
            .map_err(|e| format!("cannot open {}: {e}", folder.display()))?;
        let mut found = Vec::new();
        let mut dropped = 0;
        scan(&root, "", 0, &mut found, &mut dropped)
            .map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
        let owners_path = data_dir.join("files.owners");
        let (owners, bad_lines) = read_owners(&owners_path)?;
        let mut state = State::default();
        for (path, size) in found {
            let owner = owners.get(&path).cloned().unwrap_or_default();
            *state.usage.entry(owner.clone()).or_default() += size;
            state.bytes += size;
            state.files.insert(path, Stored { size, owner });
        }
        state.log = Some(compact_owners(&owners_path, &state.files)?);
        let mut note = format!(
            "files: {} files, {} bytes in {}",
            state.files.len(),
            state.bytes,
            folder.display()
        );
        if dropped > 0 {
            note.push_str(&format!("; {dropped} unfinished uploads removed"));
        }
        if bad_lines > 0 {
            note.push_str(&format!(
                "; {bad_lines} unreadable lines of files.owners skipped"
            ));
        }
        Ok((
            Files {
                root,
                owners_path,
                limits,
                state: Mutex::new(state),
                uploads: AtomicU64::new(0),
                downloads: AtomicU64::new(0),
            },
            note,
        ))
    }

    pub fn limits(&self) -> FileLimits {
        self.limits
    }

    /// Files and their bytes, all told.
    pub fn totals(&self) -> (usize, u64) {
        let s = self.state.lock();
        (s.files.len(), s.bytes)
    }

    /// Bytes `owner`'s files take.
    pub fn usage(&self, owner: &str) -> u64 {
        self.state.lock().usage.get(owner).copied().unwrap_or(0)
    }

    /// A new grant of `op` on `path` (a file, or a folder ending in `/`) for `ttl`;
    /// what is uploaded with it counts against `owner`'s quota. Returns the token,
    /// which is kept only as its hash.
    pub fn grant(
        &self,
        op: FileOp,
        path: &str,
        ttl: Duration,
        owner: &str,
    ) -> Result<String, FileError> {
        check_path(path, true)?;
        let mut bytes = [0u8; 24];
        getrandom::getrandom(&mut bytes).map_err(|e| {
            FileError::new(
                "unavailable",
                503,
                format!("no randomness for a token: {e}"),
            )
        })?;
        let token = hex(&bytes);
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.grants.len() > 2 * s.swept + 64 {
            s.grants.retain(|_, g| g.until > now);
            s.swept = s.grants.len();
        }
        s.grants.insert(
            token_hash(&token),
            Grant {
                op,
                path: path.to_string(),
                owner: owner.to_string(),
                until: now + ttl.min(MAX_TTL),
            },
        );
        Ok(token)
    }

    /// Whether `token` allows `op` on `path`; the owner its uploads count against.
    pub fn authorize(&self, token: &str, op: FileOp, path: &str) -> Result<String, FileError> {
        let s = self.state.lock();
        let grant = s
            .grants
            .get(&token_hash(token))
            .filter(|g| g.until > Instant::now())
            .ok_or_else(|| FileError::unauthorized("the grant is unknown or expired"))?;
        if !grant.covers(op, path) {
            return Err(FileError::forbidden(format!(
                "the grant is for {} {}, not {} {}",
                grant.op.as_str(),
                clip(&grant.path),
                op.as_str(),
                clip(path)
            )));
        }
        Ok(grant.owner.clone())
    }

    /// Starts an upload of `len` bytes to `path` for `owner`: checks the size and the
    /// quota (counting uploads under way, so concurrent ones cannot overrun it), makes
    /// the folders, and opens a temporary file beside the target.
    pub fn begin_upload(
        self: &Arc<Self>,
        path: &str,
        owner: &str,
        len: u64,
    ) -> Result<Upload, FileError> {
        check_path(path, false)?;
        let max = self.limits.max_file_size;
        if max > 0 && len > max {
            return Err(FileError::new(
                "too_large",
                413,
                format!("a file is at most {max} bytes (--max-file-size), this one {len}"),
            ));
        }
        {
            let mut s = self.state.lock();
            let replacing = s
                .files
                .get(path)
                .filter(|f| f.owner == owner)
                .map_or(0, |f| f.size);
            let used = s.usage.get(owner).copied().unwrap_or(0)
                + s.reserved.get(owner).copied().unwrap_or(0);
            let quota = self.limits.quota;
            if quota > 0 && (used + len).saturating_sub(replacing) > quota {
                return Err(FileError::new(
                    "quota_exceeded",
                    413,
                    format!(
                        "{} may store {quota} bytes (--file-quota), uses {used} and asks for {len} more",
                        owner_name(owner)
                    ),
                ));
            }
            *s.reserved.entry(owner.to_string()).or_default() += len;
        }
        // From here the upload's drop gives the reservation back, whatever fails.
        let mut upload = Upload {
            files: self.clone(),
            path: path.to_string(),
            owner: owner.to_string(),
            len,
            written: 0,
            dir: None,
            file: None,
            temp: String::new(),
        };
        let (parent, name) = split(path);
        let dir = self.folder(parent, true)?;
        match dir.symlink_metadata(name) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(FileError::bad_path(format!(
                    "'{}' is a symbolic link",
                    clip(path)
                )))
            }
            Ok(m) if m.is_dir() => {
                return Err(FileError::bad_path(format!("'{}' is a folder", clip(path))))
            }
            _ => {}
        }
        let mut bytes = [0u8; 8];
        let _ = getrandom::getrandom(&mut bytes);
        let temp = format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", hex(&bytes));
        let file = dir
            .open_with(&temp, OpenOptions::new().write(true).create_new(true))
            .map_err(|e| FileError::io("creating the file", &e))?;
        upload.temp = temp;
        upload.file = Some(file);
        upload.dir = Some(dir);
        Ok(upload)
    }

    /// Opens `path` to read it whole; its size.
    pub fn open_read(&self, path: &str) -> Result<(File, u64), FileError> {
        check_path(path, false)?;
        let (parent, name) = split(path);
        let dir = self.folder(parent, false)?;
        let meta = dir
            .symlink_metadata(name)
            .map_err(|_| FileError::not_found(path))?;
        if !meta.is_file() {
            return Err(FileError::not_found(path));
        }
        let file = dir
            .open_with(name, OpenOptions::new().read(true))
            .map_err(|_| FileError::not_found(path))?;
        let size = file
            .metadata()
            .map_err(|e| FileError::io("reading the file", &e))?
            .len();
        self.downloads.fetch_add(1, Ordering::Relaxed);
        Ok((file, size))
    }

    /// Deletes `path`.
    pub fn delete(&self, path: &str) -> Result<(), FileError> {
        check_path(path, false)?;
        let (parent, name) = split(path);
        let dir = self.folder(parent, false)?;
        match dir.symlink_metadata(name) {
            Ok(m) if m.is_file() => {}
            _ => return Err(FileError::not_found(path)),
        }
        dir.remove_file(name)
            .map_err(|e| FileError::io("deleting the file", &e))?;
        let mut s = self.state.lock();
        if let Some(old) = s.files.remove(path) {
            s.bytes -= old.size;
            if let Some(u) = s.usage.get_mut(&old.owner) {
                *u = u.saturating_sub(old.size);
            }
        }
        log_owner(
            &mut s,
            &OwnerLine {
                path: path.to_string(),
                owner: String::new(),
                deleted: true,
            },
        );
        Ok(())
    }

    /// The folder `parent` (the files folder itself for ""), refusing a symlink or a
    /// file anywhere on the way; with `create`, missing folders are made.
    fn folder(&self, parent: &str, create: bool) -> Result<Dir, FileError> {
        if parent.is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| FileError::io("opening the files folder", &e));
        }
        let mut at = String::new();
        for name in parent.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(name);
            match self.root.symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FileError::bad_path(format!(
                        "'{}' is a symbolic link",
                        clip(&at)
                    )))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(FileError::bad_path(format!(
                        "'{}' is a file, not a folder",
                        clip(&at)
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match self.root.create_dir(&at) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(FileError::io("creating a folder", &e)),
                    }
                }
                Err(_) => return Err(FileError::not_found(parent)),
            }
        }
        self.root.open_dir(parent).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                FileError::not_found(parent)
            } else {
                // cap-std refuses anything that would leave the folder.
                FileError::bad_path(format!("'{}' cannot be opened: {}", clip(parent), e.kind()))
            }
        })
    }

    /// The owners log's path (for the docs and tests).
    pub fn owners_path(&self) -> &Path {
        &self.owners_path
    }
}

/// An upload under way: a temporary file beside its target. [`Upload::commit`] puts
/// it in place; dropped before that, it is removed and its reserved bytes given back.
pub struct Upload {
    files: Arc<Files>,
    path: String,
    owner: String,
    len: u64,
    written: u64,
    dir: Option<Dir>,
    file: Option<File>,
    temp: String,
}

impl Upload {
    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.len - self.written
    }

    pub fn write(&mut self, buf: &[u8]) -> Result<(), FileError> {
        if buf.len() as u64 > self.remaining() {
            return Err(FileError::bad_path("more bytes than Content-Length"));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| FileError::new("io_error", 500, "the upload is closed"))?;
        file.write_all(buf)
            .map_err(|e| FileError::io("writing the file", &e))?;
        self.written += buf.len() as u64;
        Ok(())
    }

    /// Syncs the file, renames it over its target and syncs the folder. Whether the
    /// file is new (else it replaced one).
    pub fn commit(mut self) -> Result<bool, FileError> {
        if self.written != self.len {
            return Err(FileError::new(
                "bad_args",
                400,
                format!("{} of {} bytes arrived", self.written, self.len),
            ));
        }
        let (Some(file), Some(dir)) = (self.file.take(), self.dir.as_ref()) else {
            return Err(FileError::new("io_error", 500, "the upload is closed"));
        };
        file.sync_all()
            .map_err(|e| FileError::io("syncing the file", &e))?;
        drop(file);
        let (_, name) = split(&self.path);
        dir.rename(&self.temp, dir, name)
            .map_err(|e| FileError::io("putting the file in place", &e))?;
        self.temp.clear();
        if let Ok(d) = dir.try_clone() {
            // The rename is only durable once the folder is synced.
            let _ = d.into_std_file().sync_all();
        }
        let files = self.files.clone();
        let mut s = files.state.lock();
        if let Some(r) = s.reserved.get_mut(&self.owner) {
            *r = r.saturating_sub(self.len);
        }
        self.len = 0;
        *s.usage.entry(self.owner.clone()).or_default() += self.written;
        s.bytes += self.written;
        let old = s.files.insert(
            self.path.clone(),
            Stored {
                size: self.written,
                owner: self.owner.clone(),
            },
        );
        if let Some(old) = &old {
            s.bytes -= old.size;
            if let Some(u) = s.usage.get_mut(&old.owner) {
                *u = u.saturating_sub(old.size);
            }
        }
        if old.as_ref().map(|o| o.owner.as_str()) != Some(self.owner.as_str()) {
            log_owner(
                &mut s,
                &OwnerLine {
                    path: self.path.clone(),
                    owner: self.owner.clone(),
                    deleted: false,
                },
            );
        }
        files.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(old.is_none())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.file.take();
        if let (Some(dir), false) = (&self.dir, self.temp.is_empty()) {
            let _ = dir.remove_file(&self.temp);
        }
        if self.len > 0 {
            let mut s = self.files.state.lock();
            if let Some(r) = s.reserved.get_mut(&self.owner) {
                *r = r.saturating_sub(self.len);
            }
        }
    }
}

fn owner_name(owner: &str) -> String {
    if owner.is_empty() {
        "an anonymous owner".into()
    } else {
        format!("user '{}'", clip(owner))
    }
}

/// `a/b/c.txt` → (`a/b`, `c.txt`).
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every regular file under `dir` (at `prefix`), with its size; removes unfinished
/// uploads; skips symlinks and other dot-names.
fn scan(
    dir: &Dir,
    prefix: &str,
    depth: usize,
    found: &mut Vec<(String, u64)>,
    dropped: &mut usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in dir.entries()? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let kind = entry.file_type()?;
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) && kind.is_file() {
            if dir.remove_file(&name).is_ok() {
                *dropped += 1;
            }
            continue;
        }
        if name.starts_with('.') || kind.is_symlink() {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if kind.is_dir() {
            scan(&dir.open_dir(&name)?, &path, depth + 1, found, dropped)?;
        } else if kind.is_file() {
            found.push((path, entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// Who owns what, from `files.owners` (missing: nobody is known); and how many lines
/// could not be read.
fn read_owners(path: &Path) -> Result<(HashMap<String, String>, usize), String> {
    let mut owners = HashMap::new();
    let mut bad = 0;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((owners, 0)),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    for line in io::BufReader::new(file).lines() {
        let Ok(line) = line else {
            bad += 1;
            break;
        };
        match serde_json::from_str::<OwnerLine>(&line) {
            Ok(l) if l.deleted => {
                owners.remove(&l.path);
            }
            Ok(l) => {
                owners.insert(l.path, l.owner);
            }
            Err(_) => bad += 1,
        }
    }
    Ok((owners, bad))
}

/// Rewrites `files.owners` with one line per owned file (atomically) and opens it for
/// appending.
fn compact_owners(path: &Path, files: &HashMap<String, Stored>) -> Result<std::fs::File, String> {
    let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
    let temp = path.with_extension("owners.tmp");
    {
        let mut out = io::BufWriter::new(std::fs::File::create(&temp).map_err(fail)?);
        for (p, f) in files.iter().filter(|(_, f)| !f.owner.is_empty()) {
            let line = OwnerLine {
                path: p.clone(),
                owner: f.owner.clone(),
                deleted: false,
            };
            let json = serde_json::to_string(&line).map_err(|e| fail(io::Error::other(e)))?;
            writeln!(out, "{json}").map_err(fail)?;
        }
        out.into_inner()
            .map_err(|e| fail(e.into_error()))?
            .sync_all()
            .map_err(fail)?;
    }
    std::fs::rename(&temp, path).map_err(fail)?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(fail)
}

/// Appends a line to `files.owners`. A failure costs only the owner of that file
/// after a restart (its bytes then count for nobody): logged, not refused.
fn log_owner(s: &mut State, line: &OwnerLine) {
    let Some(log) = s.log.as_mut() else { return };
    let Ok(mut json) = serde_json::to_string(line) else {
        return;
    };
    json.push('\n');
    if let Err(e) = log
        .write_all(json.as_bytes())
        .and_then(|()| log.sync_data())
    {
        log::warn!("files: writing files.owners failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_folder_or_hide_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a\\..\\b",
            "a\0b",
            ".hidden",
            "a/.upload-1.part",
            "a/",
        ] {
            assert!(check_path(bad, false).is_err(), "{bad:?}");
        }
        for good in [
            "a.txt",
            "photos/2026/cat.png",
            "ünï cödé/ß.txt",
            "a b/c-d_e~f",
        ] {
            assert!(check_path(good, false).is_ok(), "{good:?}");
        }
        assert!(check_path("photos/", true).is_ok());
        assert!(check_path("a/".repeat(40).trim_end_matches('/'), false).is_err());
        assert!(check_path(&"x".repeat(256), false).is_err());
    }

    #[test]
    fn a_grant_covers_its_operation_and_its_path_or_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = Files::open(dir.path(), FileLimits::default()).unwrap();
        let t = files.grant(FileOp::Put, "up/", DEFAULT_TTL, "ann").unwrap();
        assert_eq!(
            files.authorize(&t, FileOp::Put, "up/a/b.txt").unwrap(),
            "ann"
        );
        assert_eq!(
            files
                .authorize(&t, FileOp::Get, "up/a.txt")
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            files.authorize(&t, FileOp::Put, "upx").unwrap_err().status,
            403
        );
        assert_eq!(
            files
                .authorize("nope", FileOp::Put, "up/a")
                .unwrap_err()
                .status,
            401
        );
        let short = files.grant(FileOp::Get, "a", Duration::ZERO, "").unwrap();
        assert_eq!(
            files
                .authorize(&short, FileOp::Get, "a")
                .unwrap_err()
                .status,
            401
        );
    }
}
