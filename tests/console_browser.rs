//! The web console in a real browser: Debian's Chromium, headless, driven over the
//! DevTools protocol. The page connects by WebSocket to the main port; a message
//! published by a TCP client appears in it, and a row inserted appears in its table
//! view. A screenshot is saved as `target/console.png`.
//!
//! Without Chromium the test says how to install it and skips; under `CI=true` it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;
use serde_json::{json, Value};

fn chromium() -> Option<String> {
    if let Ok(p) = std::env::var("LEVIATHAN_CHROMIUM") {
        return Some(p);
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_string)
}

/// A headless Chromium, killed when dropped.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(program: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            assert!(
                Instant::now() < deadline,
                "chromium never said where DevTools listen"
            );
            let line = lines.next().expect("chromium's log").unwrap();
            if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                let hostport = rest.split('/').next().unwrap();
                break hostport.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// Opens `url` in a new tab and returns a DevTools session on it.
    fn open(&self, url: &str) -> Page {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let r = common::http(addr, "PUT", &format!("/json/new?{url}"), &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        let ws_url = r.json()["webSocketDebuggerUrl"]
            .as_str()
            .expect("a DevTools URL")
            .to_string();
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (ws, _) = tungstenite::client::client(ws_url.as_str(), stream).expect("DevTools");
        Page { ws, next: 1 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Page {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
}

impl Page {
    /// Sends a DevTools command and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        for _ in 0..10_000 {
            let m = self.ws.read().expect("a DevTools message");
            if let tungstenite::Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
        panic!("no answer to {method}");
    }

    /// Evaluates `expr` in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Waits (bounded) until `expr` is true in the page.
    fn wait_for(&mut self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(expr) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "never true in the page: {expr}\npage text: {}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Standard base64, as DevTools sends a screenshot.
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (val(*c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_console_shows_live_messages_and_rows() {
    let Some(program) = chromium() else {
        let how = "Chromium is missing: apt-get install -y chromium (or set LEVIATHAN_CHROMIUM)";
        assert!(std::env::var("CI").is_err(), "{how}");
        eprintln!("skipped: {how}");
        return;
    };
    let config = leviathan::Config {
        auth: leviathan::auth::AuthSettings {
            mode: leviathan::auth::AuthMode::Off,
            ..leviathan::Config::default().auth
        },
        ..leviathan::Config::default()
    };
    let server = common::start_with(config);
    let http = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    c.ok("NAME ann");
    c.ok("CREATE news");
    c.ok("DEFINE users name:str age:int");
    c.ok("INSERT users name=ann age=30");
    c.ok("INSERT users name=bob age=41");
    c.ok("SERVE echo");
    let browser = Browser::start(&program);
    // A blank tab first: the DevTools URL that opens one would take `&…` as its own.
    let mut page = browser.open("about:blank");
    let url = format!("http://{http}/?sub=news&table=users");
    page.call("Page.navigate", json!({ "url": url }));
    page.wait_for("document.body.dataset.ready === 'yes'");
    page.wait_for("document.getElementById('rows').innerText.includes('bob')");
    page.wait_for("document.getElementById('clients').innerText.includes('ann')");
    // A message published over TCP shows in the page.
    assert_eq!(c.ok("PUB news hello-from-tcp"), "+OK 1");
    page.wait_for("document.getElementById('messages').innerText.includes('hello-from-tcp')");
    // A row inserted by someone else shows in the table view, and an update replaces it.
    c.ok("INSERT users name=zed age=5");
    page.wait_for("document.getElementById('rows').innerText.includes('zed')");
    c.ok("UPDATE users 1 age=31");
    page.wait_for("[...document.querySelectorAll('#rows tr')].some(r => r.innerText.includes('ann') && r.innerText.includes('31'))");
    // Publishing from the page reaches a TCP subscriber.
    c.ok("SUB news");
    page.eval("document.getElementById('pub-channel').value = 'news'; document.getElementById('pub-data').value = 'from-the-page'; document.getElementById('publish').requestSubmit(); true");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = c.push();
        if p.ends_with("from-the-page") {
            assert!(p.starts_with("MSG news client-"), "{p}");
            break;
        }
        assert!(Instant::now() < deadline, "the page's message never came");
    }
    page.wait_for("document.getElementById('services').innerText.includes('echo')");
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64(shot["data"].as_str().expect("a screenshot"));
    assert_eq!(&png[..4], b"\x89PNG");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("console.png"), png).unwrap();
}
