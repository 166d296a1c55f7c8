//! A chat server built on leviathan: models, three actions, two tasks and a gate.
//!
//! `cargo run --release --example chat -- 127.0.0.1 7000 [--data-dir DIR]
//! [--stats-secs N] [--key KEY]`, then `telnet 127.0.0.1 7000`:
//!
//! ```text
//! NAME ann
//! CALL join {"room":"lobby"}
//! CALL say {"room":"lobby","text":"hello"}
//! CALL recent {"room":"lobby"}
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use leviathan::commands::table_api::Select;
use leviathan::framework::{ActionError, Answer, Ctx, Model};
use leviathan::{App, Config};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// One message said in a room.
#[derive(Serialize, Deserialize)]
struct Message {
    #[serde(default)]
    id: i64,
    room: String,
    author: String,
    text: String,
    /// Seconds since the Unix epoch.
    time: i64,
}

impl Model for Message {
    const TABLE: &'static str = "messages";
    const COLUMNS: &'static [&'static str] = &["room:str", "author:str", "text:str", "time:int"];
}

/// When the server stopped, one row per clean shutdown.
#[derive(Serialize, Deserialize)]
struct Shutdown {
    time: i64,
}

impl Model for Shutdown {
    const TABLE: &'static str = "shutdowns";
    const COLUMNS: &'static [&'static str] = &["time:int"];
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

/// `CALL join {"room":"lobby"}`: subscribes the caller to `room.lobby` and tells it.
fn join(ctx: &mut Ctx, req: Room) -> Result<Answer, ActionError> {
    let channel = format!("room.{}", req.room);
    ctx.create_channel(&channel)?;
    ctx.subscribe(&channel)?;
    let members = ctx.publish(&channel, json!({"joined": ctx.name()}))?;
    Ok(Answer::new(json!({"room": req.room, "members": members})))
}

/// `CALL say {"room":"lobby","text":"hi"}`: keeps the message and tells the room.
fn say(ctx: &mut Ctx, req: Say) -> Result<Answer, ActionError> {
    if req.text.trim().is_empty() {
        return Err(ActionError::new("bad_args", "say something: text is empty"));
    }
    let channel = format!("room.{}", req.room);
    if !ctx.subscriptions().contains(&channel) {
        let hint = format!("join it first: CALL join {{\"room\":\"{}\"}}", req.room);
        return Err(ActionError::new("not_in_room", hint));
    }
    let author = ctx.name();
    let row = Message {
        id: 0,
        room: req.room,
        author: author.clone(),
        text: req.text.clone(),
        time: now(),
    };
    let id = ctx.tables().model::<Message>().insert(&row)?;
    ctx.publish(&channel, json!({"from": author, "text": req.text}))?;
    Ok(Answer::new(json!({"id": id})))
}

/// `CALL recent {"room":"lobby"}`: the room's last 20 messages, oldest first.
fn recent(ctx: &mut Ctx, req: Room) -> Result<Answer, ActionError> {
    let condition = format!(
        "room = {}",
        serde_json::to_string(&req.room).unwrap_or_default()
    );
    let last = Select::new()
        .filter(&condition)
        .order_by("id", true)
        .limit(20);
    let mut messages = ctx.tables().model::<Message>().select(&last)?;
    messages.reverse();
    Ok(Answer::new(messages))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// leviathan's chat example: rooms, messages kept in a table, live stats.
#[derive(Parser)]
struct Args {
    host: String,
    port: u16,
    /// Folder for the tables
    #[arg(long, default_value = "chat-data")]
    data_dir: PathBuf,
    /// Seconds between the stats published on channel `stats`
    #[arg(long, default_value_t = 10)]
    stats_secs: u64,
    /// Admit only clients whose headers carry "key": KEY (AUTH {"key":"KEY"}, or
    /// ws://HOST:PORT/?key=KEY)
    #[arg(long)]
    key: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        data_dir: Some(args.data_dir),
        ..Config::default()
    };
    let mut app = App::new()
        .config(config)
        .action("join", "join a room: {\"room\":\"lobby\"}", join)
        .action(
            "say",
            "say something in a room you joined: {\"room\":\"lobby\",\"text\":\"hi\"}",
            say,
        )
        .action(
            "recent",
            "a room's last 20 messages, oldest first: {\"room\":\"lobby\"}",
            recent,
        )
        .on_startup("define", |ctx: &mut Ctx| {
            ctx.tables().model::<Message>().define()?;
            ctx.tables().model::<Shutdown>().define()?;
            ctx.create_channel("stats")?;
            Ok(())
        })
        .every(
            "stats",
            Duration::from_secs(args.stats_secs.max(1)),
            |ctx: &mut Ctx| {
                let messages = ctx.tables().model::<Message>().select(&Select::new())?;
                let mut rooms: Vec<&str> = messages.iter().map(|m| m.room.as_str()).collect();
                rooms.sort_unstable();
                rooms.dedup();
                let stats = json!({"rooms": rooms.len(), "messages": messages.len()});
                ctx.publish("stats", stats).map(|_| ())
            },
        )
        .on_shutdown("record", |ctx: &mut Ctx| {
            ctx.tables()
                .model::<Shutdown>()
                .insert(&Shutdown { time: now() })
                .map(|_| ())
                .map_err(ActionError::from)
        });
    if let Some(key) = args.key {
        app = app.header_check("key", move |h| {
            h.get("key").and_then(|k| k.as_str()) == Some(&key)
        });
    }
    app.run(&args.host, args.port)
}
