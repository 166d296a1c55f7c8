//! An embedding program's table writes go through the same checks, journal and watches
//! as a wire client's.

mod common;
use common::Client;
use serde_json::json;

#[test]
fn embedded_writes_are_typed_journaled_and_watched() {
    let dir = tempfile::tempdir().unwrap();
    let config = leviathan::Config {
        data_dir: Some(dir.path().to_path_buf()),
        fsync: leviathan::store::journal::FsyncPolicy::Always,
        ..leviathan::Config::default()
    };
    let mut server = common::start_with(config.clone());
    let tables = server.tables();
    tables.define("users", &["name:str", "age:int?"]).unwrap();

    let mut watcher = Client::connect(server.local_addr());
    watcher.ok("WATCH users");

    let e = tables
        .insert("users", json!({"name": "eve", "age": "old"}))
        .unwrap_err();
    assert_eq!(e.code, "bad_value", "{e:?}");
    let e = tables.insert("users", json!({"age": 3})).unwrap_err();
    assert_eq!(e.code, "null_not_allowed", "{e:?}");
    let e = tables.insert("nope", json!({"x": 1})).unwrap_err();
    assert_eq!(e.code, "no_such_table");

    let id = tables
        .insert("users", json!({"name": "ann", "age": 30}))
        .unwrap();
    assert_eq!(id, 1);
    assert_eq!(watcher.push(), "ROW users insert id=1 name=ann age=30");
    assert_eq!(tables.update("users", id, json!({"age": 31})).unwrap(), 1);
    assert_eq!(watcher.push(), "ROW users update id=1 name=ann age=31");
    assert_eq!(
        tables.get("users", id).unwrap(),
        json!({"id": 1, "name": "ann", "age": 31})
    );
    assert_eq!(tables.count("users", Some("age > 30")).unwrap(), 1);
    assert!(tables
        .select("users", Some("name = bob"))
        .unwrap()
        .is_empty());
    assert_eq!(tables.select("users", None).unwrap().len(), 1);

    // In the journal before the call returned (fsync always), so it survives a crash.
    let journal: String = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        journal.contains(r#""op":"update","t":"users","row":[1,"ann",31]"#),
        "{journal}"
    );

    server.shutdown();
    drop(server);
    let server = common::start_with(config);
    assert_eq!(
        server.tables().get("users", 1).unwrap(),
        json!({"id": 1, "name": "ann", "age": 31})
    );
}
