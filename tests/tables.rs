//! Table commands over real sockets, in text and JSON.

mod common;
use common::{start, Client};
use serde_json::json;

fn users(c: &mut Client) {
    assert_eq!(c.ok("DEFINE users name:str age:int? email:str?"), "+OK");
    assert_eq!(c.ok("INSERT users name=alice age=30"), "+OK 1");
    assert_eq!(
        c.ok(r#"INSERT users name="bob smith" age=25 email=bob@example.org"#),
        "+OK 2"
    );
    assert_eq!(
        c.ok(r#"INSERT users {"name":"carol","age":41,"email":null}"#),
        "+OK 3"
    );
    assert_eq!(c.ok("INSERT users name=dave"), "+OK 4");
}

#[test]
fn define_insert_get_select_in_text() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    users(&mut c);
    let (r, _) = c.request("GET users 2");
    assert_eq!(
        r,
        vec![
            r#"* id=2 name="bob smith" age=25 email=bob@example.org"#,
            "+OK"
        ]
    );
    let (r, _) = c.request("SELECT users");
    assert_eq!(r.len(), 5);
    assert_eq!(r[3], "* id=4 name=dave age=null email=null");
    assert_eq!(r[4], "+OK 4");
    let (r, _) = c.request("SELECT users WHERE age >= 30 ORDER BY age DESC");
    assert_eq!(
        r,
        vec![
            "* id=3 name=carol age=41 email=null",
            "* id=1 name=alice age=30 email=null",
            "+OK 2"
        ]
    );
    let (r, _) = c.request("select users order by name desc limit 2 offset 1");
    assert_eq!(
        r,
        vec![
            "* id=3 name=carol age=41 email=null",
            r#"* id=2 name="bob smith" age=25 email=bob@example.org"#,
            "+OK 2"
        ]
    );
    let (r, _) = c.request(r#"SELECT users WHERE name = "bob smith""#);
    assert_eq!(r.len(), 2);
    assert_eq!(c.ok("COUNT users"), "+OK 4");
    assert_eq!(c.ok("COUNT users WHERE age < 40"), "+OK 2");
    let (r, _) = c.request("TABLES");
    assert_eq!(r, vec!["* users rows=4 columns=4", "+OK 1"]);
    let (r, _) = c.request("SCHEMA users");
    assert_eq!(
        r,
        vec![
            "* id int",
            "* name str",
            "* age int?",
            "* email str?",
            "+OK 4"
        ]
    );
}

#[test]
fn where_precedence_and_nulls() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    users(&mut c);
    // AND binds tighter: bob, or (alice and over 50) -> bob only.
    let (r, _) = c.request(r#"SELECT users WHERE name = "bob smith" OR name = alice AND age > 50"#);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[0].starts_with("* id=2 "));
    let (r, _) =
        c.request(r#"SELECT users WHERE (name = "bob smith" OR name = alice) AND age > 26"#);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[0].starts_with("* id=1 "));
    assert_eq!(c.ok("COUNT users WHERE email IS NULL"), "+OK 3");
    assert_eq!(c.ok("COUNT users WHERE email IS NOT NULL"), "+OK 1");
    assert_eq!(c.ok("COUNT users WHERE age IS NULL"), "+OK 1");
    // A null matches no comparison, not even !=.
    assert_eq!(c.ok("COUNT users WHERE age != 30"), "+OK 2");
    assert_eq!(c.ok("COUNT users WHERE age = null"), "+OK 1");
    // Bare words are strings; quoted "null" is the word.
    c.ok(r#"INSERT users name="null" age=1"#);
    assert_eq!(c.ok(r#"COUNT users WHERE name = "null""#), "+OK 1");
    assert_eq!(c.ok("COUNT users WHERE name IS NULL"), "+OK 0");
}

#[test]
fn update_and_delete() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    users(&mut c);
    assert_eq!(c.ok("UPDATE users 1 age=31 email=\"a@x.org\""), "+OK 1");
    assert_eq!(c.ok("UPDATE users 99 age=1"), "+OK 0");
    let (r, _) = c.request("GET users 1");
    assert_eq!(r[0], "* id=1 name=alice age=31 email=a@x.org");
    assert_eq!(
        c.ok("UPDATE users SET email=none WHERE email IS NULL"),
        "+OK 2"
    );
    assert_eq!(c.ok("COUNT users WHERE email = none"), "+OK 2");
    // Without WHERE, UPDATE refuses as DELETE does; every row is asked for plainly.
    for bare in ["UPDATE users SET age=0", "DELETE users"] {
        let e = c.ok(bare);
        assert!(
            e.starts_with("-ERR bad_args give a row id or WHERE <expr>")
                && e.contains("WHERE id > 0"),
            "{bare}: {e}"
        );
    }
    assert_eq!(c.ok("UPDATE users SET age=0 WHERE id > 0"), "+OK 4");
    assert_eq!(c.ok("DELETE users 2"), "+OK 1");
    assert_eq!(c.ok("DELETE users 2"), "+OK 0");
    assert_eq!(
        c.ok("DELETE users WHERE name = dave OR name = carol"),
        "+OK 2"
    );
    assert_eq!(c.ok("COUNT users"), "+OK 1");
    // Ids are never reused.
    assert_eq!(c.ok("INSERT users name=erin"), "+OK 5");
    assert_eq!(c.ok("UNDEFINE users"), "+OK");
    assert!(c.ok("COUNT users").starts_with("-ERR no_such_table"));
}

#[test]
fn errors_name_what_is_wrong_and_change_nothing() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    users(&mut c);
    let cases = [
        ("DEFINE users x:int", "-ERR table_exists "),
        ("DEFINE t", "-ERR bad_args "),
        ("DEFINE t a:text", "-ERR bad_args "),
        ("DEFINE t id:int", "-ERR bad_args "),
        ("DEFINE bad.name a:int", "-ERR bad_args "),
        ("INSERT nope a=1", "-ERR no_such_table "),
        ("INSERT users", "-ERR bad_args "),
        ("INSERT users nick=x", "-ERR no_such_column "),
        ("INSERT users name=x age=abc", "-ERR bad_value "),
        ("INSERT users name=x age=\"5\"", "-ERR bad_value "),
        ("INSERT users age=5", "-ERR null_not_allowed "),
        ("INSERT users name=x id=7", "-ERR bad_args "),
        ("INSERT users name=x name=y", "-ERR bad_args "),
        ("INSERT users {\"name\":1}", "-ERR bad_value "),
        ("INSERT users {nope", "-ERR bad_args "),
        ("INSERT users name=\"open", "-ERR bad_args "),
        ("GET users 99", "-ERR no_such_row "),
        ("GET users x", "-ERR bad_args "),
        ("SELECT users WHERE nope = 1", "-ERR no_such_column "),
        ("SELECT users WHERE age = abc", "-ERR bad_where "),
        ("SELECT users WHERE age >", "-ERR bad_args "),
        ("SELECT users WHERE (age = 1", "-ERR bad_args "),
        ("SELECT users ORDER BY nope", "-ERR no_such_column "),
        ("SELECT users LIMIT many", "-ERR bad_args "),
        ("UPDATE users 1 name=null", "-ERR null_not_allowed "),
        (
            "UPDATE users SET name=null WHERE age > 0",
            "-ERR null_not_allowed ",
        ),
        ("UPDATE users 1", "-ERR bad_args "),
        ("DELETE users", "-ERR bad_args "),
        ("DELETE users 1 2", "-ERR bad_args "),
        ("SCHEMA nope", "-ERR no_such_table "),
        ("UNDEFINE nope", "-ERR no_such_table "),
    ];
    for (cmd, want) in cases {
        let r = c.ok(cmd);
        assert!(r.starts_with(want), "{cmd}: {r}");
    }
    let r = c.ok("INSERT users name=x age=abc");
    assert!(
        r.contains("'age'") && r.contains("'abc'"),
        "message names column and value: {r}"
    );
    let r = c.ok("SELECT users WHERE age = abc");
    assert!(r.contains("'age'") && r.contains("abc"), "{r}");
    // Nothing above changed the table.
    assert_eq!(c.ok("COUNT users"), "+OK 4");
    assert_eq!(c.ok("COUNT users WHERE name IS NOT NULL"), "+OK 4");
}

#[test]
fn every_table_command_as_json() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let ok = json!({"ok": true});
    assert_eq!(
        c.json(
            json!({"op":"define","table":"t","columns":["name:str","n:int?","x:float?","b:bool?"]})
        ),
        ok
    );
    assert_eq!(
        c.json(
            json!({"op":"insert","table":"t","row":{"name":"a b","n":1,"x":2.5,"b":true},"id":"r1"})
        ),
        json!({"ok":true,"id":"r1","row_id":1})
    );
    assert_eq!(
        c.json(json!({"op":"insert","table":"t","row":{"name":"z"}}))["row_id"],
        2
    );
    let row = c.json(json!({"op":"get","table":"t","row_id":1}));
    assert_eq!(
        row,
        json!({"ok":true,"row":{"id":1,"name":"a b","n":1,"x":2.5,"b":true}})
    );
    // Columns keep their defined order in JSON rows too.
    let keys: Vec<&String> = row["row"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "name", "n", "x", "b"]);
    let sel = c.json(json!({"op":"select","table":"t","where":"n IS NULL OR x > 1","order_by":"name","desc":true,"limit":5}));
    assert_eq!(sel["count"], 2);
    assert_eq!(sel["rows"][0]["name"], "z");
    assert_eq!(
        c.json(json!({"op":"update","table":"t","row_id":2,"set":{"n":7}})),
        json!({"ok":true,"count":1})
    );
    assert_eq!(
        c.json(json!({"op":"update","table":"t","where":"n = 7","set":{"b":false}}))["count"],
        1
    );
    assert_eq!(
        c.json(json!({"op":"count","table":"t","where":"b = false"})),
        json!({"ok":true,"count":1})
    );
    let tables = c.json(json!({"op":"tables"}));
    assert_eq!(tables["tables"], json!([{"name":"t","rows":2,"columns":5}]));
    let schema = c.json(json!({"op":"schema","table":"t"}));
    assert_eq!(
        schema["columns"][2],
        json!({"name":"n","type":"int","nullable":true})
    );
    assert_eq!(
        c.json(json!({"op":"delete","table":"t","where":"name = z"}))["count"],
        1
    );
    assert_eq!(
        c.json(json!({"op":"delete","table":"t","row_id":1}))["count"],
        1
    );
    assert_eq!(c.json(json!({"op":"undefine","table":"t"})), ok);

    let err = |c: &mut Client, req: serde_json::Value| {
        c.json(req)["error"]["code"].as_str().unwrap().to_string()
    };
    assert_eq!(
        err(&mut c, json!({"op":"get","table":"t","row_id":1})),
        "no_such_table"
    );
    c.json(json!({"op":"define","table":"t","columns":["n:int"]}));
    assert_eq!(
        err(&mut c, json!({"op":"insert","table":"t","row":{"n":1.5}})),
        "bad_value"
    );
    assert_eq!(
        err(&mut c, json!({"op":"insert","table":"t","row":{}})),
        "null_not_allowed"
    );
    assert_eq!(
        err(&mut c, json!({"op":"insert","table":"t","row":[1]})),
        "bad_args"
    );
    assert_eq!(
        err(&mut c, json!({"op":"select","table":"t","where":"n >"})),
        "bad_args"
    );
    assert_eq!(
        err(&mut c, json!({"op":"select","table":"t","limit":-1})),
        "bad_args"
    );
    assert_eq!(err(&mut c, json!({"op":"delete","table":"t"})), "bad_args");
    assert_eq!(
        err(
            &mut c,
            json!({"op":"update","table":"t","row_id":1,"where":"n=1","set":{"n":1}})
        ),
        "bad_args"
    );
    assert_eq!(
        err(&mut c, json!({"op":"get","table":"t","row_id":"1"})),
        "bad_args"
    );
    assert_eq!(
        err(&mut c, json!({"op":"define","table":"u","columns":"n:int"})),
        "bad_args"
    );
}

#[test]
fn writes_are_shared_between_connections() {
    let server = start();
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    a.ok("DEFINE notes text:str");
    assert_eq!(b.ok("INSERT notes text=\"from b\""), "+OK 1");
    let (r, _) = a.request("SELECT notes");
    assert_eq!(r, vec![r#"* id=1 text="from b""#, "+OK 1"]);
    // Ids stay unique under concurrent inserts from many connections.
    let addr = server.local_addr();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..100)
                    .map(|i| c.ok(&format!("INSERT notes text=n{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|r| r.strip_prefix("+OK ").unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 800);
    assert_eq!(a.ok("COUNT notes"), "+OK 801");
}
