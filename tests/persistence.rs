//! Tables saved to CSV and the journal, with the real binary: restarts, kill -9, and
//! damaged files.

mod common;
use std::fs;
use std::time::{Duration, Instant};

use common::{Client, ServerProcess};

fn data(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

#[test]
fn snapshot_and_restart_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE users name:str age:int? note:str? score:float? ok:bool?");
    c.ok(r#"INSERT users name=alice age=30 note="" score=1.5 ok=true"#);
    c.ok(r#"INSERT users name="bob, \"jr\"" note="two
    words""#
        .replace('\n', " ")
        .as_str());
    c.ok("INSERT users name=carl");
    c.ok("DELETE users 3");
    c.ok("UPDATE users 1 age=31");
    c.ok("DEFINE gone x:int");
    c.ok("INSERT gone x=1");
    c.ok("SAVE");
    assert!(data(&dir).join("gone.csv").exists());
    c.ok("UNDEFINE gone");
    // Its files go without waiting for a snapshot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while data(&dir).join("gone.schema.json").exists() {
        assert!(Instant::now() < deadline, "UNDEFINE left the files");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (before, _) = c.request("SELECT users");
    let (status, logs) = s.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "{logs:?}");

    // The CSV is plain: a header, then one line per row.
    let csv = fs::read_to_string(data(&dir).join("users.csv")).unwrap();
    assert_eq!(
        csv,
        "id,name,age,note,score,ok\n1,alice,31,\"\",1.5,true\n2,\"bob, \"\"jr\"\"\",,two     words,,\n"
    );
    assert!(
        !data(&dir).join("gone.csv").exists(),
        "an undefined table's files are removed"
    );

    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    let (after, _) = c.request("SELECT users");
    assert_eq!(after, before);
    assert_eq!(
        c.ok("INSERT users name=dora"),
        "+OK 4",
        "ids continue past deleted ones"
    );
    assert!(c.ok("COUNT gone").starts_with("-ERR no_such_table"));
    assert!(c.ok("SAVE").starts_with("+OK saved 1 tables, 3 rows"));
}

/// Pipelined inserts from a few connections, `kill -9` mid-stream, restart: every
/// acknowledged row is there.
fn acknowledged_writes_survive_kill_9(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &["--fsync", fsync]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE events n:int payload:str");
    // Pipelined inserts from a few connections; every +OK id is recorded.
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut acked = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                'outer: for batch in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline
                    {
                        break;
                    }
                    let mut lines = String::new();
                    for i in 0..20 {
                        lines.push_str(&format!(
                            "INSERT events n={} payload=w{w}-{batch}-{i}\n",
                            batch * 20 + i
                        ));
                    }
                    c.send_raw(lines.as_bytes());
                    for _ in 0..20 {
                        match c.line_or_eof() {
                            Some(l) if l.starts_with("+OK ") => {
                                acked.push(l[4..].parse::<u64>().unwrap())
                            }
                            _ => break 'outer,
                        }
                    }
                }
                acked
            })
        })
        .collect();
    // Let writes flow, then kill the server mid-stream without warning.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, _) = s.signal_and_wait(libc::SIGKILL);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 20,
        "the test wrote something ({} acks)",
        acked.len()
    );
    eprintln!(
        "--fsync {fsync}: {} acknowledged inserts before kill -9",
        acked.len()
    );

    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    let (rows, _) = c.request("SELECT events");
    let present: std::collections::HashSet<u64> = rows
        .iter()
        .filter_map(|r| r.strip_prefix("* id=")?.split(' ').next()?.parse().ok())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[test]
fn acknowledged_writes_survive_kill_9_under_fsync_always() {
    acknowledged_writes_survive_kill_9("always");
}

#[test]
fn acknowledged_writes_survive_kill_9_under_fsync_everysec() {
    acknowledged_writes_survive_kill_9("everysec");
}

#[test]
fn a_damaged_csv_stops_the_server_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(&dir);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("t.schema.json"),
        r#"{"columns":["name:str","n:int"],"next_id":5}"#,
    )
    .unwrap();
    fs::write(d.join("t.csv"), "id,name,n\n1,a,1\n2,b,two\n3,c,3\n").unwrap();
    let err = match ServerProcess::start(dir.path(), &[]) {
        Err(log) => log,
        Ok(_) => panic!("started on a damaged CSV"),
    };
    assert!(
        err.contains("t.csv") && err.contains("line 3") && err.contains("'n'"),
        "{err}"
    );
    // The file is left as it was, for a person to fix.
    assert_eq!(
        fs::read_to_string(d.join("t.csv")).unwrap(),
        "id,name,n\n1,a,1\n2,b,two\n3,c,3\n"
    );

    // A spreadsheet's CSV (CRLF, quoted numbers) loads once fixed.
    fs::write(d.join("t.csv"), "id,name,n\r\n1,a,\"1\"\r\n2,b,2\r\n").unwrap();
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    assert_eq!(c.ok("COUNT t"), "+OK 2");
    assert_eq!(
        c.ok("INSERT t name=z n=9"),
        "+OK 5",
        "next_id from the schema file"
    );
}

#[test]
fn a_torn_last_journal_record_is_dropped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    // `always`, so every acknowledged record is in the journal when the server is killed.
    let s = ServerProcess::start(dir.path(), &["--fsync", "always"]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE t v:int");
    c.ok("INSERT t v=1");
    c.ok("INSERT t v=2");
    drop(s); // kill -9: the journal holds the changes, no snapshot was taken since.
    std::thread::sleep(Duration::from_millis(300));
    let journal = fs::read_dir(data(&dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .max()
        .unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&journal).unwrap();
    std::io::Write::write_all(&mut f, br#"{"op":"insert","t":"t","row":[3,"#).unwrap();
    drop(f);
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let torn = s.startup_log.iter().find(|l| l.contains("torn"));
    let torn = torn.unwrap_or_else(|| panic!("no word of the torn record: {:?}", s.startup_log));
    assert!(
        torn.contains("line 5"),
        "after the header and three records: {torn}"
    );
    let mut c = Client::connect(s.addr);
    assert_eq!(c.ok("COUNT t"), "+OK 2");
    let (status, _) = s.signal_and_wait(libc::SIGINT);
    assert!(status.success());
}

#[test]
fn a_bad_record_inside_the_journal_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(&dir);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("journal-000001.log"),
        "{\"op\":\"define\",\"t\":\"t\",\"columns\":[\"v:int\"]}\nGARBAGE\n{\"op\":\"insert\",\"t\":\"t\",\"row\":[1,1]}\n",
    )
    .unwrap();
    let err = match ServerProcess::start(dir.path(), &[]) {
        Err(log) => log,
        Ok(_) => panic!("started on a damaged journal"),
    };
    assert!(err.contains("journal-000001.log line 2"), "{err}");
}

#[test]
fn save_needs_a_data_folder() {
    let server = common::start();
    let mut c = Client::connect(server.local_addr());
    assert!(c.ok("SAVE").starts_with("-ERR unavailable "));
}

#[test]
fn a_second_server_on_the_same_folder_is_refused_and_the_first_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), &["--fsync", "always"]).unwrap();
    let mut c = Client::connect(first.addr);
    c.ok("DEFINE t v:int");
    for v in 1..=5 {
        assert_eq!(c.ok(&format!("INSERT t v={v}")), format!("+OK {v}"));
    }
    let err = match ServerProcess::start(dir.path(), &[]) {
        Err(log) => log,
        Ok(_) => panic!("a second server started on a folder in use"),
    };
    let pid = first.child.id().to_string();
    assert!(
        err.contains("data") && err.contains("in use") && err.contains(&pid),
        "the refusal names the folder and the holder's pid: {err}"
    );
    // The refused server deleted nothing: after kill -9 every row comes back.
    assert_eq!(c.ok("INSERT t v=6"), "+OK 6");
    drop(first);
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    assert_eq!(c.ok("COUNT t"), "+OK 6");
}

/// Strings that once read back as something else (`null` became NULL and bricked the
/// next start), through a snapshot and through the journal, with the real binary.
#[test]
fn stored_strings_read_back_as_themselves_after_save_and_after_kill_9() {
    let tricky = [
        "null",
        "NULL",
        "",
        " ",
        "  lead",
        "trail ",
        "\"",
        "\"\"",
        "a,b",
        "two\nlines",
        "cr\r\nlf",
        "nul\0byte",
        "\u{feff}bom",
        "é本œ",
        "=cmd|' /C calc'!A0",
        "true",
        "42",
        "1.5",
        "\\",
        "\t",
    ];
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &["--fsync", "always"]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE t s:str n:str?");
    let insert_all = |c: &mut Client| {
        for v in tricky {
            let r = c.json(serde_json::json!({"op":"insert","table":"t","row":{"s":v,"n":v}}));
            assert_eq!(r["ok"], true, "{r}");
        }
    };
    insert_all(&mut c);
    assert!(c.ok("SAVE").starts_with("+OK saved"));
    insert_all(&mut c); // these are only in the journal
    drop(s); // kill -9

    let s = ServerProcess::start(dir.path(), &[]).expect("starts again");
    let mut c = Client::connect(s.addr);
    for (i, v) in tricky.iter().chain(tricky.iter()).enumerate() {
        let r = c.json(serde_json::json!({"op":"get","table":"t","row_id": i + 1}));
        assert_eq!(r["row"]["s"], *v, "row {}: {r}", i + 1);
        assert_eq!(r["row"]["n"], *v, "row {}: {r}", i + 1);
    }
    // And once more through the shutdown snapshot.
    let (status, _) = s.signal_and_wait(libc::SIGINT);
    assert!(status.success());
    let s = ServerProcess::start(dir.path(), &[]).expect("starts from its own CSV");
    let mut c = Client::connect(s.addr);
    let r = c.json(serde_json::json!({"op":"get","table":"t","row_id": 1}));
    assert_eq!(r["row"]["s"], "null", "{r}");
    assert_eq!(c.ok("COUNT t"), format!("+OK {}", 2 * tricky.len()));
}

/// Every file in a folder and its bytes (not the folders in it: `files/`).
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK" && e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn put_back(dir: &std::path::Path, saved: &std::collections::BTreeMap<String, Vec<u8>>) {
    for (name, _) in files(dir) {
        fs::remove_file(dir.join(name)).unwrap();
    }
    for (name, bytes) in saved {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Starts a server that must refuse `dir`, and checks that it changed no file there.
fn refused(dir: &tempfile::TempDir) -> String {
    let before = files(&data(dir));
    let err = match ServerProcess::start(dir.path(), &[]) {
        Err(log) => log,
        Ok(_) => panic!("started on damaged files"),
    };
    assert_eq!(files(&data(dir)), before, "a refused start changes no file");
    err
}

#[test]
fn damaged_files_stop_the_start_and_are_left_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &["--fsync", "always"]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE t v:int");
    for v in 0..50 {
        c.ok(&format!("INSERT t v={v}"));
    }
    assert!(c.ok("SAVE").starts_with("+OK saved 1 tables, 50 rows"));
    for v in 50..60 {
        c.ok(&format!("INSERT t v={v}"));
    }
    drop(s); // kill -9: ten rows only in the journal
    let d = data(&dir);
    let good = files(&d);

    // A line missing from the middle of the journal.
    let (segment, text) = good
        .iter()
        .filter(|(n, _)| n.ends_with(".log"))
        .map(|(n, b)| (n.clone(), String::from_utf8(b.clone()).unwrap()))
        .find(|(_, t)| t.lines().count() > 5)
        .expect("a segment with the ten inserts");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(4);
    fs::write(d.join(&segment), lines.join("\n") + "\n").unwrap();
    let err = refused(&dir);
    assert!(
        err.contains(&format!("{segment} line 5")) && err.contains("missing"),
        "{err}"
    );

    // A changed byte inside a record.
    put_back(&d, &good);
    fs::write(d.join(&segment), text.replacen("[53,", "[53 ,", 1)).unwrap();
    let err = refused(&dir);
    assert!(err.contains(&segment) && err.contains("checksum"), "{err}");

    // The CSV deleted, emptied, or cut to its header while the schema file records rows.
    for (how, content) in [
        ("deleted", None),
        ("empty", Some("")),
        ("header only", Some("id,v\n")),
    ] {
        put_back(&d, &good);
        match content {
            None => fs::remove_file(d.join("t.csv")).unwrap(),
            Some(c) => fs::write(d.join("t.csv"), c).unwrap(),
        }
        let err = refused(&dir);
        assert!(
            err.contains("t.csv") && err.contains("50 rows"),
            "{how}: {err}"
        );
    }

    put_back(&d, &good);
    let s = ServerProcess::start(dir.path(), &[]).expect("the good files start");
    let mut c = Client::connect(s.addr);
    assert_eq!(c.ok("COUNT t"), "+OK 60");
}

/// A save cut short between writing a table's schema file and its CSV leaves the CSV it
/// was replacing, with the journal that covers the rest: that start must succeed.
#[test]
fn a_save_cut_short_between_its_two_files_is_not_mistaken_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &["--fsync", "always"]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE t v:int");
    assert!(c.ok("SAVE").starts_with("+OK saved 1 tables, 0 rows"));
    for v in 0..20 {
        c.ok(&format!("INSERT t v={v}"));
    }
    drop(s);
    // What the next save would have renamed first: a schema file recording 20 rows,
    // replacing a CSV of none, covering every segment there is.
    let d = data(&dir);
    let newest = fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("journal-")?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();
    fs::write(
        d.join("t.schema.json"),
        format!(
            r#"{{"columns":["v:int"],"next_id":21,"saved":{{"rows":20,"replaces":0,"segment":{}}}}}"#,
            newest + 1
        ),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(d.join("t.csv")).unwrap(), "id,v\n");
    let s = ServerProcess::start(dir.path(), &[]).expect("starts");
    let mut c = Client::connect(s.addr);
    assert_eq!(c.ok("COUNT t"), "+OK 20");
}

#[test]
fn channels_come_back_after_kill_9_and_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &["--fsync", "always"]).unwrap();
    let mut c = Client::connect(s.addr);
    for ch in ["news", "prices.eur", "gone"] {
        assert_eq!(c.ok(&format!("CREATE {ch}")), "+OK");
    }
    assert_eq!(c.ok("DROP gone"), "+OK");
    // Acknowledged, so journaled: kill -9 before any snapshot loses none of it.
    let (_, _) = s.signal_and_wait(libc::SIGKILL);

    let channels = |c: &mut Client| -> Vec<String> {
        let (items, _) = c.request("CHANNELS");
        items
            .iter()
            .filter_map(|l| l.strip_prefix("* "))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    assert_eq!(channels(&mut c), ["news", "prices.eur"]);
    assert_eq!(c.ok("PUB news still here"), "+OK 0");
    assert!(c.ok("PUB gone x").starts_with("-ERR no_such_channel"));
    assert_eq!(c.ok("CREATE later"), "+OK");
    let (status, logs) = s.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "{logs:?}");
    // The clean stop saved them beside the tables.
    let saved = fs::read_to_string(data(&dir).join("channels.json")).unwrap();
    assert!(saved.contains("\"later\""), "{saved}");

    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    assert_eq!(channels(&mut c), ["later", "news", "prices.eur"]);
    assert!(c.ok("CREATE news").starts_with("-ERR channel_exists"));
}

#[test]
fn formulas_are_written_guarded_and_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("DEFINE notes s:str");
    c.ok(r#"INSERT notes s="=cmd|' /C calc'!A0""#);
    c.ok(r#"INSERT notes s="'already quoted""#);
    c.ok("INSERT notes s=-2+3");
    assert!(c.ok("SAVE").starts_with("+OK saved"));
    let csv = fs::read_to_string(data(&dir).join("notes.csv")).unwrap();
    assert_eq!(
        csv,
        "id,s\n1,'=cmd|' /C calc'!A0\n2,''already quoted\n3,'-2+3\n"
    );
    let (before, _) = c.request("SELECT notes");
    let (status, logs) = s.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "{logs:?}");
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    let (after, _) = c.request("SELECT notes");
    assert_eq!(after, before);
    assert_eq!(after[0], r#"* id=1 s="=cmd|' /C calc'!A0""#);
}
