//! Embedding leviathan: start a server inside your program on a port of its choosing,
//! talk to it over a socket, and shut it down.
//!
//! `cargo run --example embedded`

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut server = leviathan::Server::start(listener, leviathan::Config::default())?;
    println!("server listening on {}", server.local_addr());

    let stream = TcpStream::connect(server.local_addr())?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    // Speaking first gets the greeting at once, before the first reply.
    writer
        .write_all(b"NAME demo\nCREATE greetings\nSUB greetings\nPUB greetings hello, world\n")?;
    let mut line = String::new();
    for _ in 0..6 {
        line.clear();
        reader.read_line(&mut line)?;
        print!("< {line}");
    }
    // The same tables the wire clients use: typed, journaled, seen by WATCH.
    let tables = server.tables();
    tables.define("users", &["name:str", "age:int?"])?;
    let id = tables.insert("users", serde_json::json!({"name": "ann", "age": 30}))?;
    println!("row {id}: {}", tables.get("users", id)?);
    if let Err(e) = tables.insert("users", serde_json::json!({"age": "old"})) {
        println!("refused: {e}");
    }
    server.shutdown();
    println!("server stopped");
    Ok(())
}
