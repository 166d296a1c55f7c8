//! Every contract command in its JSON form, and text and JSON mixed on one connection.

mod common;
use common::{start, Client};
use serde_json::json;

#[test]
fn every_command_as_json() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    b.ok("NAME bob");

    assert_eq!(
        c.json(json!({"op":"ping","id":1})),
        json!({"ok":true,"id":1,"pong":""})
    );
    assert_eq!(
        c.json(json!({"op":"ping","data":"x"})),
        json!({"ok":true,"pong":"x"})
    );
    let help = c.json(json!({"op":"help"}));
    assert_eq!(help["ok"], true);
    assert!(help["count"].as_u64().unwrap() >= 14);
    assert!(help["commands"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "SEND"));
    assert_eq!(c.json(json!({"op":"help","command":"sub"}))["ok"], true);
    assert_eq!(
        c.json(json!({"op":"name","name":"alice","id":"n"})),
        json!({"ok":true,"id":"n","client":{"name":"alice"}})
    );
    let me = c.json(json!({"op":"whoami"}));
    assert_eq!(me["client"]["name"], "alice");
    assert!(me["client"]["id"].is_u64());
    assert!(me["client"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let clients = c.json(json!({"op":"clients"}));
    assert_eq!(clients["count"], 2);
    assert_eq!(clients["clients"][0]["name"], "alice");
    let hist = c.json(json!({"op":"history"}));
    assert_eq!(hist["history"][0]["disconnected"], serde_json::Value::Null);

    assert_eq!(
        c.json(json!({"op":"create","channel":"news"})),
        json!({"ok":true})
    );
    let dup = c.json(json!({"op":"create","channel":"news","id":9}));
    assert_eq!(dup["ok"], false);
    assert_eq!(dup["id"], 9);
    assert_eq!(dup["error"]["code"], "channel_exists");
    assert_eq!(b.ok("SUB news"), "+OK");
    assert_eq!(
        c.json(json!({"op":"sub","channel":"news"})),
        json!({"ok":true})
    );
    let chans = c.json(json!({"op":"channels"}));
    assert_eq!(chans["channels"], json!([{"name":"news","subscribers":2}]));

    let r = c.json(json!({"op":"pub","channel":"news","data":{"x":1}}));
    assert_eq!(r, json!({"ok":true,"receivers":2}));
    // A JSON client receives JSON pushes; a text client receives compact JSON text.
    assert_eq!(b.push(), r#"MSG news alice {"x":1}"#);
    let own: serde_json::Value = serde_json::from_str(&c.push()).unwrap();
    assert_eq!(
        own,
        json!({"event":"msg","channel":"news","from":"alice","data":{"x":1}})
    );

    assert_eq!(
        c.json(json!({"op":"send","to":"bob","data":"yo"})),
        json!({"ok":true})
    );
    assert_eq!(b.push(), "DM alice yo");
    let e = c.json(json!({"op":"send","to":"nobody","data":1}));
    assert_eq!(e["error"]["code"], "no_such_client");

    assert_eq!(
        c.json(json!({"op":"unsub","channel":"news"})),
        json!({"ok":true})
    );
    assert_eq!(
        c.json(json!({"op":"unsub","channel":"news"}))["error"]["code"],
        "not_subscribed"
    );
    assert_eq!(
        c.json(json!({"op":"drop","channel":"news"})),
        json!({"ok":true})
    );
    assert_eq!(b.push(), "DROPPED news");
    assert_eq!(
        c.json(json!({"op":"quit"})),
        json!({"ok":true,"message":"bye"})
    );
    assert_eq!(c.line_or_eof(), None);
}

#[test]
fn text_payload_reaches_json_receiver_as_string() {
    let server = start();
    let mut t = Client::connect(server.local_addr());
    let mut j = Client::connect(server.local_addr());
    t.ok("NAME tom");
    t.ok("CREATE room");
    assert_eq!(
        j.json(json!({"op":"sub","channel":"room"})),
        json!({"ok":true})
    );
    assert_eq!(t.ok("PUB room hello   world"), "+OK 1");
    let v: serde_json::Value = serde_json::from_str(&j.line()).unwrap();
    assert_eq!(
        v,
        json!({"event":"msg","channel":"room","from":"tom","data":"hello   world"})
    );
    // JSON data that is not a plain one-line string reaches text clients as compact JSON.
    t.ok("SUB room");
    j.json(json!({"op":"pub","channel":"room","data":"two\nlines"}));
    assert_eq!(t.push(), r#"MSG room client-2 "two\nlines""#);
}

#[test]
fn text_and_json_mixed_on_one_connection_keep_order() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    // Pipelined, alternating formats; some answered locally, some by the manager.
    c.send_raw(
        b"PING a\n{\"op\":\"create\",\"channel\":\"x\",\"id\":1}\nCREATE x\n{\"op\":\"ping\",\"id\":2}\nCHANNELS\nPING b\n",
    );
    assert_eq!(c.line(), "+PONG a");
    assert_eq!(c.line(), r#"{"ok":true,"id":1}"#);
    assert!(c.line().starts_with("-ERR channel_exists"));
    assert_eq!(c.line(), r#"{"ok":true,"id":2,"pong":""}"#);
    assert_eq!(c.line(), "* x 0");
    assert_eq!(c.line(), "+OK 1");
    assert_eq!(c.line(), "+PONG b");
}
