//! The framework over real sockets: actions (`CALL`, `ACTIONS`), tasks (`TASKS`), the
//! header gate (`AUTH`, WebSocket headers) and typed models, on a test app.

mod common;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Client;
use leviathan::commands::table_api::Select;
use leviathan::framework::{ActionError, Answer, Ctx, Model};
use leviathan::{App, Config, ServerHandle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Echo {
    text: String,
}

fn echo(_ctx: &mut Ctx, req: Echo) -> Result<Answer, ActionError> {
    if req.text.is_empty() {
        return Err(ActionError::new("empty_text", "say something"));
    }
    Ok(Answer::new(req.text))
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

/// Subscribes the caller to `room.<room>` and tells the room.
fn join(ctx: &mut Ctx, req: Room) -> Result<Answer, ActionError> {
    let channel = format!("room.{}", req.room);
    ctx.create_channel(&channel)?;
    ctx.subscribe(&channel)?;
    let name = ctx.name();
    Ok(Answer::new(json!({"joined": name})).broadcast(channel))
}

fn test_app() -> App {
    App::new()
        .config(Config::default())
        .action("echo", "answers with the text it is given", echo)
        .action("join", "join a room", join)
        .action(
            "boom",
            "panics",
            |_ctx: &mut Ctx, _: Value| -> Result<Answer, ActionError> { panic!("boom on purpose") },
        )
        .action(
            "nap",
            "sleeps 200 ms, then answers",
            |ctx: &mut Ctx, _: Value| {
                ctx.sleep(Duration::from_millis(200));
                Ok(Answer::new("rested"))
            },
        )
        .action(
            "who",
            "the caller as the action sees it",
            |ctx: &mut Ctx, _: Value| {
                Ok(Answer::new(
                    json!({"id": ctx.id(), "name": ctx.name(), "transport": ctx.transport(), "user": ctx.user(), "role": ctx.role()}),
                ))
            },
        )
}

fn start(app: App) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    app.start(listener).expect("the app starts")
}

#[test]
fn actions_answer_in_text_and_json_with_their_errors() {
    let server = start(test_app());
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.ok(r#"CALL echo {"text":"hi there"}"#), "+OK hi there");
    assert_eq!(
        c.ok(r#"CALL echo {"text":""}"#),
        "-ERR empty_text say something"
    );
    let e = c.ok("CALL echo not json");
    assert!(e.starts_with("-ERR bad_args "), "{e}");
    let e = c.ok("CALL nope");
    assert!(e.starts_with("-ERR no_such_action "), "{e}");
    let r = c.json(json!({"op":"call","action":"echo","data":{"text":"yo"},"id":3}));
    assert_eq!(r, json!({"ok":true,"id":3,"result":"yo"}));
    let r = c.json(json!({"op":"call","action":"echo","data":{},"id":4}));
    assert_eq!(r["error"]["code"], "bad_args");
    let (items, _) = c.request("ACTIONS");
    assert_eq!(items.len(), 6, "{items:?}");
    assert_eq!(items[5], "+OK 5");
    assert!(items.contains(&"* echo answers with the text it is given".to_string()));
    let who = c.ok("CALL who");
    let who: Value = serde_json::from_str(who.strip_prefix("+OK ").unwrap()).unwrap();
    assert_eq!(who["name"], c.name.as_str());
    assert_eq!(who["transport"], "tcp");
    assert_eq!(
        (&who["user"], &who["role"]),
        (&Value::Null, &json!("guest"))
    );
}

#[test]
fn a_panicking_action_answers_action_failed_and_the_server_goes_on() {
    let server = start(test_app());
    let mut c = Client::connect(server.local_addr());
    let e = c.ok("CALL boom");
    assert!(e.starts_with("-ERR action_failed "), "{e}");
    assert!(e.contains("boom"), "{e}");
    assert_eq!(c.ok("PING"), "+PONG");
    assert_eq!(c.ok(r#"CALL echo {"text":"still here"}"#), "+OK still here");
}

#[test]
fn an_action_broadcasts_and_subscribes_its_caller() {
    let server = start(test_app());
    let mut ann = Client::connect(server.local_addr());
    let mut bob = Client::connect(server.local_addr());
    ann.ok("NAME ann");
    bob.ok("NAME bob");
    let r = ann.ok(r#"CALL join {"room":"lobby"}"#);
    assert_eq!(r, r#"+OK {"joined":"ann"}"#);
    // The caller was subscribed before the broadcast, and so got it too.
    assert_eq!(ann.push(), r#"MSG room.lobby ann {"joined":"ann"}"#);
    bob.ok(r#"CALL join {"room":"lobby"}"#);
    assert_eq!(ann.push(), r#"MSG room.lobby bob {"joined":"bob"}"#);
    assert_eq!(bob.push(), r#"MSG room.lobby bob {"joined":"bob"}"#);
}

#[test]
fn replies_keep_request_order_around_a_waiting_action() {
    let server = start(test_app());
    let mut c = Client::connect(server.local_addr());
    c.send_raw(b"CREATE news\nCALL nap\nSUB news\nPING after\n");
    assert_eq!(c.line(), "+OK");
    assert_eq!(c.line(), "+OK rested");
    assert_eq!(c.line(), "+OK");
    assert_eq!(c.line(), "+PONG after");
}

#[test]
fn an_action_waiting_on_a_timer_holds_up_nobody_else() {
    let server = start(test_app());
    let addr = server.local_addr();
    let mut sleepers: Vec<Client> = (0..20).map(|_| Client::connect(addr)).collect();
    let mut canary = Client::connect(addr);
    for s in sleepers.iter_mut() {
        s.send("CALL nap");
    }
    // While twenty actions sleep 200 ms each, the canary on the same worker is
    // answered at once (a sleep that blocked the worker would hold it about 4 s).
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(canary.ok("PING"), "+PONG");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "ten PINGs took {:?}",
        started.elapsed()
    );
    for s in sleepers.iter_mut() {
        assert_eq!(s.line(), "+OK rested");
    }
}

#[test]
fn a_failing_startup_task_stops_the_start_with_a_message() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = App::new()
        .on_startup("seed", |_ctx: &mut Ctx| {
            Err(ActionError::new("no_seed", "the seed file is missing"))
        })
        .start(listener)
        .err()
        .expect("the start fails");
    let msg = err.to_string();
    assert!(
        msg.contains("startup task 'seed' failed") && msg.contains("seed file is missing"),
        "{msg}"
    );
}

#[test]
fn interval_tasks_never_overlap_and_count_what_they_skip() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let server = start(
        App::new()
            .every("slow", Duration::from_millis(50), move |ctx: &mut Ctx| {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                ctx.sleep(Duration::from_millis(180));
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
            .every("failing", Duration::from_millis(50), |_ctx: &mut Ctx| {
                Err(ActionError::new("nope", "fails every time"))
            })
            .every_recomputed("backoff", Duration::from_millis(20), |ctx: &mut Ctx| {
                ctx.publish("ticks", "tick").ok();
                Ok(Duration::from_millis(100))
            }),
    );
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(most.load(Ordering::SeqCst), 1, "two runs overlapped");
    let mut c = Client::connect(server.local_addr());
    let (items, _) = c.request("TASKS");
    assert_eq!(items.last().unwrap(), "+OK 3");
    let field = |line: &str, key: &str| -> u64 {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let slow = items.iter().find(|l| l.starts_with("* slow ")).unwrap();
    assert!(slow.starts_with("* slow every=50ms "), "{slow}");
    assert!(field(slow, "runs") >= 2, "{slow}");
    assert!(field(slow, "skipped") >= 2, "{slow}");
    assert!(
        slow.contains(" last=20") && slow.contains(" next=20"),
        "{slow}"
    );
    let failing = items.iter().find(|l| l.starts_with("* failing ")).unwrap();
    assert_eq!(
        field(failing, "runs"),
        field(failing, "failures"),
        "{failing}"
    );
    assert!(field(failing, "failures") >= 5, "{failing}");
    let backoff = items.iter().find(|l| l.starts_with("* backoff ")).unwrap();
    assert!(backoff.contains("every=20ms,recomputed"), "{backoff}");
    let runs = field(backoff, "runs");
    assert!(
        (3..=12).contains(&runs),
        "a 100 ms wait after each run: {backoff}"
    );
}

#[test]
fn shutdown_tasks_run_while_clients_are_still_connected() {
    let mut server = start(App::new().on_shutdown("goodbye", |ctx: &mut Ctx| {
        ctx.create_channel("alerts.bye")?;
        ctx.publish("alerts.bye", "closing").map(|_| ())
    }));
    let mut c = Client::connect(server.local_addr());
    c.ok("SUB alerts.>");
    server.shutdown();
    assert_eq!(c.push(), "MSG alerts.bye server closing");
    assert_eq!(c.push(), "BYE shutdown");
}

fn gated() -> App {
    test_app().header_check("key", |h| h.get("key") == Some(&json!("sesame")))
}

#[test]
fn the_gate_admits_only_clients_whose_headers_pass() {
    let server = start(gated());
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.ok("PING"), "+PONG");
    let e = c.ok("CREATE news");
    assert!(e.starts_with("-ERR unauthorized "), "{e}");
    assert!(c
        .ok(r#"CALL echo {"text":"x"}"#)
        .starts_with("-ERR unauthorized "));
    let e = c.ok(r#"AUTH {"key":"wrong"}"#);
    assert!(
        e.starts_with("-ERR unauthorized ") && e.contains("key"),
        "{e}"
    );
    assert_eq!(c.ok(r#"AUTH {"key":"sesame"}"#), "+OK");
    assert_eq!(c.ok("CREATE news"), "+OK");
    assert_eq!(c.ok(r#"CALL echo {"text":"in"}"#), "+OK in");

    let mut j = Client::connect(server.local_addr());
    let r = j.json(json!({"op":"sub","channel":"news","id":1}));
    assert_eq!(r["error"]["code"], "unauthorized");
    let r = j.json(json!({"op":"auth","headers":{"key":"sesame"},"id":2}));
    assert_eq!(r, json!({"ok":true,"id":2}));
    assert_eq!(j.json(json!({"op":"sub","channel":"news"}))["ok"], true);
}

#[test]
fn a_websocket_client_passes_the_gate_with_its_url_or_headers() {
    let server = start(gated());
    let addr = server.local_addr();
    let call = |url: String| {
        let (mut ws, _) = tungstenite::connect(url).expect("handshake");
        ws.read().expect("greeting");
        ws.send(tungstenite::Message::text("CREATE x.y")).unwrap();
        ws.read().unwrap().into_text().unwrap().to_string()
    };
    assert!(call(format!("ws://{addr}/")).starts_with("-ERR unauthorized"));
    let r = call(format!("ws://{addr}/?key=sesame"));
    assert!(r == "+OK" || r.starts_with("-ERR channel_exists"), "{r}");
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/"))
            .unwrap();
    req.headers_mut().insert("key", "sesame".parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).expect("handshake");
    ws.read().expect("greeting");
    ws.send(tungstenite::Message::text("PING")).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "+PONG");
    ws.send(tungstenite::Message::text("CALL who")).unwrap();
    let who = ws.read().unwrap().into_text().unwrap().to_string();
    assert!(who.contains(r#""transport":"ws""#), "{who}");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Note {
    #[serde(default)]
    id: i64,
    author: String,
    stars: i64,
    text: Option<String>,
}

impl Model for Note {
    const TABLE: &'static str = "notes";
    const COLUMNS: &'static [&'static str] = &["author:str", "stars:int", "text:str?"];
}

#[test]
fn models_are_typed_tables_on_the_same_store_as_the_wire() {
    let server = start(App::new().model::<Note>());
    let notes = server.tables().model::<Note>();
    assert!(!notes.define().unwrap(), "the app defined it at start");
    let note = |author: &str, stars| Note {
        id: 0,
        author: author.into(),
        stars,
        text: None,
    };
    let a = notes.insert(&note("ann", 3)).unwrap();
    let b = notes.insert(&note("bob", 5)).unwrap();
    notes.insert(&note("ann", 1)).unwrap();
    assert_eq!(
        notes.get(a).unwrap(),
        Note {
            id: a,
            ..note("ann", 3)
        }
    );
    let top = notes
        .select(
            &Select::new()
                .filter("stars > 1")
                .order_by("stars", true)
                .limit(5),
        )
        .unwrap();
    assert_eq!(top.iter().map(|n| n.id).collect::<Vec<_>>(), [b, a]);
    assert!(notes
        .update(
            a,
            &Note {
                text: Some("hi".into()),
                ..note("ann", 4)
            }
        )
        .unwrap());
    assert_eq!(notes.count(Some("author = ann")).unwrap(), 2);
    assert!(notes.delete(b).unwrap());
    assert!(!notes.delete(b).unwrap());
    // The wire sees the same rows.
    let mut c = Client::connect(server.local_addr());
    let (row, _) = c.request(&format!("GET notes {a}"));
    assert_eq!(
        row,
        [format!("* id={a} author=ann stars=4 text=hi"), "+OK".into()]
    );
    // A row that does not fit the model is an error, never a panic.
    c.ok("DEFINE other name:str");
    c.ok("INSERT other name=x");
    #[derive(Serialize, Deserialize, Debug)]
    struct Other {
        name: i64,
    }
    impl Model for Other {
        const TABLE: &'static str = "other";
        const COLUMNS: &'static [&'static str] = &["name:int"];
    }
    let e = server.tables().model::<Other>().get(1).unwrap_err();
    assert_eq!(e.code, "bad_value");
    let e = server
        .tables()
        .model::<Other>()
        .insert(&Other { name: 1 })
        .unwrap_err();
    assert_eq!(e.code, "bad_value");
}

#[test]
fn actions_ask_services_and_chosen_clients_without_blocking() {
    #[derive(Deserialize)]
    struct Probe {
        client: String,
    }
    let app = App::new()
        .action(
            "ask",
            "asks the weather service",
            |ctx: &mut Ctx, city: Value| {
                let answer = ctx.request("weather", city, Duration::from_secs(2))?;
                Ok(Answer::new(answer))
            },
        )
        .action(
            "probe",
            "asks one client's status",
            |ctx: &mut Ctx, p: Probe| {
                let answer =
                    ctx.request_client(&p.client, "status", "how are you", Duration::from_secs(2))?;
                Ok(Answer::new(answer))
            },
        );
    let server = start(app);
    let addr = server.local_addr();
    let mut provider = Client::connect(addr);
    provider.ok("SERVE weather");
    let mut ann = Client::connect(addr);
    ann.ok("NAME ann");
    ann.send(r#"CALL ask "Oslo""#);
    let p = provider.push();
    assert!(
        p.starts_with("REQ ") && p.ends_with(" weather ann Oslo"),
        "{p}"
    );
    let id = p.split(' ').nth(1).unwrap();
    provider.ok(&format!("REPLY {id} sunny"));
    assert_eq!(ann.line(), "+OK sunny");
    // A reverse request: the server asks one chosen client.
    let mut bob = Client::connect(addr);
    bob.ok("NAME bob");
    bob.ok("SERVE status");
    provider.ok("SERVE status");
    ann.send(r#"CALL probe {"client":"bob"}"#);
    let p = bob.push();
    assert!(p.ends_with(" status ann how are you"), "{p}");
    let id = p.split(' ').nth(1).unwrap();
    bob.ok(&format!("FAIL {id} busy not now"));
    assert_eq!(ann.line(), "-ERR busy not now");
    let e = ann.ok(r#"CALL probe {"client":"nobody"}"#);
    assert!(e.starts_with("-ERR no_responders "), "{e}");
}
