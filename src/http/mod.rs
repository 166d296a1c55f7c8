//! The HTTP side (DESIGN section 12): health, Prometheus metrics and a JSON API on a
//! port of its own (`--http-port`, default the main port + 1), served by
//! `may_minihttp` on the same `may` runtime as the main port. Every API route is a
//! wire command run through the channel manager like an action's, checked against the
//! caller's rights like a client's, and answered with the wire's JSON reply (errors
//! carry the same codes).

mod api;
mod files;
pub mod keys;
mod metrics;

use std::io::{self, Read};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

use crate::auth::{Auth, AuthMode, Identity};
use crate::commands::channels::ChannelCommand;
use crate::commands::services::ServiceCommand;
use crate::commands::session::SessionCommand;
use crate::commands::{rights, Command};
use crate::framework::{Framework, Hub};
use crate::manager::stats::Stats;
use crate::manager::SERVER_ID;
use crate::protocol::{ErrorReply, Format, ParseLimits, Reply};
use crate::store::TableStore;

/// Where the server is in its life, for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Starting = 0,
    Serving = 1,
    Stopping = 2,
}

/// What every HTTP request may reach.
pub struct HttpContext {
    /// Runs commands on the channel manager.
    pub(crate) hub: Hub,
    pub stats: Arc<Stats>,
    pub store: Arc<TableStore>,
    pub auth: Arc<Auth>,
    pub(crate) framework: Arc<Framework>,
    pub settings: HttpSettings,
    health: AtomicU8,
}

/// The HTTP side's own settings (the assembly fills them in from its `Config`).
pub struct HttpSettings {
    /// What the wire's parser refuses (a published body is parsed as a request).
    pub parse: ParseLimits,
    /// The largest request body taken (`--max-line`, as for a request line).
    pub max_body: usize,
    /// Keys programs without an account bring (`--api-key-file`), read again on
    /// `SIGHUP` ([`HttpContext::replace_keys`]).
    pub keys: parking_lot::RwLock<keys::ApiKeys>,
    /// The main port, which the web console's WebSocket connects to.
    pub main_port: u16,
    /// The longest an upload's body may go without sending anything
    /// (`--line-timeout-secs`, as for an incomplete request line); `None`: no limit.
    pub body_timeout: Option<std::time::Duration>,
}

/// The web console's files, built into the binary (no CDN: it works offline).
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

impl HttpContext {
    pub(crate) fn new(
        hub: Hub,
        stats: Arc<Stats>,
        store: Arc<TableStore>,
        auth: Arc<Auth>,
        framework: Arc<Framework>,
        settings: HttpSettings,
    ) -> Self {
        HttpContext {
            hub,
            stats,
            store,
            auth,
            framework,
            settings,
            health: AtomicU8::new(Health::Starting as u8),
        }
    }

    /// Puts a newly read API key file in force: later requests are checked against it.
    pub fn replace_keys(&self, keys: keys::ApiKeys) {
        *self.settings.keys.write() = keys;
    }

    /// Says where the server is now.
    pub fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::Release);
    }

    fn health(&self) -> Health {
        match self.health.load(Ordering::Acquire) {
            1 => Health::Serving,
            2 => Health::Stopping,
            _ => Health::Starting,
        }
    }
}

/// Serves HTTP on `listener` (bound by the caller) until the returned coroutine is
/// cancelled.
pub fn start(
    listener: std::net::TcpListener,
    ctx: Arc<HttpContext>,
) -> io::Result<may::coroutine::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    // SAFETY: the fd comes from a listener we own and give up here, so the may
    // listener becomes its only owner.
    let listener = unsafe { may::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    Factory(ctx).start_on(listener)
}

struct Factory(Arc<HttpContext>);

impl HttpServiceFactory for Factory {
    type Service = Service;

    fn new_service(&self, _id: usize) -> Service {
        Service(self.0.clone())
    }
}

struct Service(Arc<HttpContext>);

/// What a route answers.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// A body streamed from a reader instead (a file), with its length.
    stream: Option<(Box<dyn Read + Send>, u64)>,
    /// End the connection after this answer (a request body left unread).
    close: bool,
}

impl Answer {
    fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type,
            body,
            stream: None,
            close: false,
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer::bytes(
            status,
            "Content-Type: text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }

    /// A wire reply as JSON, with the status its error code calls for.
    fn reply(reply: &Reply) -> Answer {
        let mut body = Vec::new();
        reply.encode(Format::Json, None, &mut body);
        let status = match reply {
            Reply::Error(e) => status_of(&e.code),
            _ => 200,
        };
        Answer::bytes(status, "Content-Type: application/json", body)
    }

    /// One of the console's files.
    fn file(content_type: &'static str, body: &'static str) -> Answer {
        Answer::bytes(200, content_type, body.as_bytes().to_vec())
    }

    fn error(code: &'static str, message: String) -> Answer {
        Answer::reply(&Reply::Error(ErrorReply::new(code, message)))
    }
}

/// The HTTP status of a wire error code.
fn status_of(code: &str) -> u16 {
    match code {
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "limit_reached" => 429,
        "unavailable" => 503,
        c if c.starts_with("no_such_") => 404,
        _ => 400,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        201 => "Created",
        _ => "Error",
    }
}

impl HttpService for Service {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        let answer = route(&self.0, req);
        rsp.status_code(answer.status as usize, reason(answer.status));
        rsp.header(answer.content_type);
        rsp.header("Cache-Control: no-store");
        if answer.close {
            rsp.close();
        }
        match answer.stream {
            Some((reader, len)) => {
                // A stored file is the uploader's content: never sniffed into another
                // type, and sandboxed, so a page among the files cannot run script
                // in the console's origin.
                rsp.header("X-Content-Type-Options: nosniff");
                rsp.header("Content-Security-Policy: sandbox");
                rsp.body_stream(reader, len);
            }
            None => rsp.body_vec(answer.body),
        }
        Ok(())
    }
}

/// The API routes: each a wire command.
fn api_command(path: &str) -> Option<Command> {
    Some(match path {
        "/api/info" => Command::Session(SessionCommand::Info),
        "/api/clients" => Command::Session(SessionCommand::Clients),
        "/api/channels" => Command::Channel(ChannelCommand::Channels),
        "/api/services" => Command::Service(Box::new(ServiceCommand::Services)),
        _ => return None,
    })
}

/// The request's body, whole, up to `max` bytes. A body past that, or a
/// Content-Length that is no number, is answered without reading it, and the
/// connection closed after the answer (its bytes would be read as the next request).
fn read_body(req: Request, max: usize) -> Result<Vec<u8>, Answer> {
    match req.content_length() {
        Ok(n) if n.unwrap_or(0) <= max => {
            let mut body = Vec::with_capacity(n.unwrap_or(0));
            req.body()
                .read_to_end(&mut body)
                .map_err(|e| Answer::error("bad_args", format!("reading the body failed: {e}")))?;
            Ok(body)
        }
        Ok(_) => Err(Answer {
            close: true,
            ..Answer::text(413, format!("a body is at most {max} bytes (--max-line)\n"))
        }),
        Err(()) => Err(Answer {
            close: true,
            ..Answer::error("bad_args", "Content-Length is not a number".into())
        }),
    }
}

fn route(ctx: &HttpContext, req: Request) -> Answer {
    let method = req.method().to_string();
    let full = req.path().to_string();
    let (path, query) = full.split_once('?').unwrap_or((&full, ""));
    if let Some(rest) = path.strip_prefix("/files/") {
        return files::serve(ctx, req, &method, rest, query);
    }
    let bearer = header(&req, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let body = match read_body(req, ctx.settings.max_body) {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let bearer = bearer.as_deref();
    if let Some(rest) = path.strip_prefix("/api/tables/") {
        if method != "GET" {
            return Answer::error("method_not_allowed", format!("{path} answers GET only"));
        }
        let (table, csv) = match rest.strip_suffix(".csv") {
            Some(t) => (t, true),
            None => (rest, false),
        };
        let command = api::query_params(query).and_then(|p| api::select(table, &p));
        return match command {
            Ok(c) => run(ctx, bearer, c, |ctx, c| {
                let reply = crate::commands::apply_local(c, &ctx.store).0;
                if csv {
                    api::csv_answer(&reply)
                } else {
                    Answer::reply(&reply)
                }
            }),
            Err(e) => Answer::reply(&Reply::Error(e)),
        };
    }
    if let Some(action) = path.strip_prefix("/api/call/") {
        if method != "POST" {
            return Answer::error("method_not_allowed", format!("{path} answers POST only"));
        }
        return match api::call_command(action, &body) {
            Ok(c) => run(ctx, bearer, c, |ctx, c| Answer::reply(&api::call(ctx, c))),
            Err(e) => Answer::reply(&Reply::Error(e)),
        };
    }
    if path == "/api/publish" {
        if method != "POST" {
            return Answer::error("method_not_allowed", format!("{path} answers POST only"));
        }
        return match api::publish(ctx, &body) {
            Ok(c) => run(ctx, bearer, c, via_manager),
            Err(e) => Answer::reply(&Reply::Error(e)),
        };
    }
    match (method.as_str(), path) {
        ("GET", "/" | "/index.html") => Answer::file("Content-Type: text/html; charset=utf-8", CONSOLE_HTML),
        ("GET", "/console.js") => Answer::file("Content-Type: text/javascript; charset=utf-8", CONSOLE_JS),
        ("GET", "/console.css") => Answer::file("Content-Type: text/css; charset=utf-8", CONSOLE_CSS),
        ("GET", "/console.json") => Answer::bytes(
            200,
            "Content-Type: application/json",
            serde_json::json!({
                "port": ctx.settings.main_port,
                "version": env!("CARGO_PKG_VERSION"),
            })
            .to_string()
            .into_bytes(),
        ),
        ("GET", "/healthz") => match ctx.health() {
            Health::Serving => Answer::text(200, "ok\n"),
            Health::Starting => Answer::text(503, "starting\n"),
            Health::Stopping => Answer::text(503, "stopping\n"),
        },
        ("GET", "/metrics") => Answer::bytes(
            200,
            "Content-Type: text/plain; version=0.0.4; charset=utf-8",
            metrics::render(ctx).into_bytes(),
        ),
        (_, "/healthz" | "/metrics") => Answer::error(
            "method_not_allowed",
            format!("{path} answers GET only"),
        ),
        (m, p) => match api_command(p) {
            Some(command) if m == "GET" => {
                let clients = matches!(command, Command::Session(SessionCommand::Clients));
                let sees = clients && sees_addresses(ctx, bearer);
                let mut answer = run(ctx, bearer, command, via_manager);
                if clients && !sees {
                    answer = hide_addresses(answer);
                }
                answer
            }
            Some(_) => Answer::error("method_not_allowed", format!("{p} answers GET only")),
            None => Answer::error(
                "not_found",
                format!(
                    "no route {}; there are /healthz, /metrics, /api/info, /api/clients, /api/channels, /api/services, /api/tables/<table>[.csv], POST /api/publish, POST /api/call/<action>, PUT/GET/DELETE /files/<path> (with a grant)",
                    crate::protocol::args::clip(p)
                ),
            ),
        },
    }
}

/// The value of header `name` (any case), if present and UTF-8.
fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// Runs an API command for the caller with `apply`, once it is checked against the
/// caller's rights as the same command on the wire would be: the user of the session
/// token it brings (`Authorization: Bearer <token>`, from `LOGIN`), else a guest
/// (refused under `--auth required`).
fn run(
    ctx: &HttpContext,
    bearer: Option<&str>,
    command: Command,
    apply: impl FnOnce(&HttpContext, Command) -> Answer,
) -> Answer {
    let identity = match caller(ctx, bearer) {
        Ok(i) => i,
        Err(e) => return Answer::reply(&Reply::Error(e)),
    };
    let role = ctx.auth.role(&identity.role);
    if let Err(e) = rights::check(ctx.auth.mode, &identity, &role, &command) {
        return Answer::reply(&Reply::Error(e));
    }
    apply(ctx, command)
}

/// Whether the caller may see clients' addresses, as on the wire: admins (of
/// `clients`) only, once auth is on.
fn sees_addresses(ctx: &HttpContext, bearer: Option<&str>) -> bool {
    ctx.auth.mode == AuthMode::Off
        || caller(ctx, bearer).is_ok_and(|i| {
            ctx.auth
                .role(&i.role)
                .allows(crate::auth::Right::Admin, "clients")
        })
}

/// `/api/clients` with every address as `null` (the server sees them all).
fn hide_addresses(answer: Answer) -> Answer {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&answer.body) else {
        return answer;
    };
    if let Some(items) = v.get_mut("clients").and_then(|c| c.as_array_mut()) {
        for item in items {
            item["addr"] = serde_json::Value::Null;
        }
    }
    Answer::bytes(
        answer.status,
        answer.content_type,
        v.to_string().into_bytes(),
    )
}

/// Applies a command on the channel manager, as the server itself.
fn via_manager(ctx: &HttpContext, command: Command) -> Answer {
    match ctx.hub.apply(SERVER_ID, command) {
        Ok(reply) => Answer::reply(&reply),
        Err(e) => Answer::reply(&Reply::Error(e)),
    }
}

/// Who is asking: the API key or the user of the session token it brings, else a
/// guest, as an anonymous client on the wire is; under `--auth required` a key or a
/// session is needed.
fn caller(ctx: &HttpContext, bearer: Option<&str>) -> Result<Identity, ErrorReply> {
    let unauthorized = |why: &str| {
        ErrorReply::new(
            "unauthorized",
            format!(
                "{why}: send Authorization: Bearer <session token> (LOGIN gives one) or an API key"
            ),
        )
    };
    let token = match (ctx.auth.mode, bearer) {
        (AuthMode::Off, _) | (AuthMode::Optional, None) => return Ok(Identity::guest()),
        (AuthMode::Required, None) => return Err(unauthorized("this server requires logging in")),
        (_, Some(t)) => t,
    };
    let key = ctx.settings.keys.read().find(token).cloned();
    if let Some(key) = key {
        return Ok(Identity {
            user: Some(Arc::from(format!("key:{}", key.name).as_str())),
            role: Arc::from(key.role.as_str()),
            session: None,
        });
    }
    let (hash, session) = ctx
        .auth
        .sessions
        .find(token)
        .ok_or_else(|| unauthorized("the session token is invalid or expired"))?;
    let account = ctx
        .auth
        .users
        .get(&session.user)
        .ok_or_else(|| unauthorized("the session's user no longer exists"))?;
    Ok(Identity {
        user: Some(Arc::from(session.user.as_str())),
        role: Arc::from(account.role.as_str()),
        session: Some(hash),
    })
}
