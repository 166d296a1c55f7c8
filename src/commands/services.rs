//! Services between clients: `SERVE`, `UNSERVE`, `REQ`, `REPLY`, `FAIL`, `SERVICES`.
//! The channel manager keeps who serves what and the requests in flight
//! (`manager/services.rs`); a request's answer reaches its requester through its
//! outbox, in its place among the replies (or at once, for a JSON request with an id).

use super::app::text_payload;
use super::{ok, Command, CommandSpec};
use crate::manager::outbox::ConnId;
use crate::manager::Manager;
use crate::protocol::args::clip;
use crate::protocol::subject;
use crate::protocol::{ErrorReply, Payload, Reply};

/// The services family.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceCommand {
    Serve(String),
    Unserve(String),
    /// Ask one provider of `service`. `token` is how the answer finds its place in the
    /// requester's replies (set by the connection); `timeout_ms` overrides the server's.
    Req {
        service: String,
        data: Payload,
        timeout_ms: Option<u64>,
        token: u64,
    },
    Reply {
        req: u64,
        data: Payload,
    },
    Fail {
        req: u64,
        code: String,
        message: String,
    },
    Services,
}

impl From<ServiceCommand> for Command {
    fn from(c: ServiceCommand) -> Command {
        Command::Service(Box::new(c))
    }
}

fn req_id(a: &crate::protocol::args::Args, w: &str) -> Result<u64, ErrorReply> {
    w.parse()
        .map_err(|_| a.error(format!("'{}' is not a request id (a number)", clip(w))))
}

fn json_req_id(v: serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// An error code as providers may send it: a snake_case word.
fn check_code(code: &str) -> Result<(), String> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "an error code is a snake_case word of at most 64 characters, not '{}'",
            clip(code)
        ))
    }
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "SERVE",
        usage: "SERVE <service>",
        json: r#"{"op":"serve","service":"weather"}"#,
        summary: "offer a service: requests for it come to you as REQ pushes",
        parse_text: |mut a| {
            let s = a.required("service")?.to_string();
            a.finish()?;
            ok(ServiceCommand::Serve(s))
        },
        parse_json: |mut a| {
            let s = a.required_str("service")?;
            a.finish()?;
            ok(ServiceCommand::Serve(s))
        },
    },
    CommandSpec {
        name: "UNSERVE",
        usage: "UNSERVE <service>",
        json: r#"{"op":"unserve","service":"weather"}"#,
        summary: "stop offering a service; its requests still open with you fail with service_gone",
        parse_text: |mut a| {
            let s = a.required("service")?.to_string();
            a.finish()?;
            ok(ServiceCommand::Unserve(s))
        },
        parse_json: |mut a| {
            let s = a.required_str("service")?;
            a.finish()?;
            ok(ServiceCommand::Unserve(s))
        },
    },
    CommandSpec {
        name: "REQ",
        usage: "REQ <service> [payload...]",
        json: r#"{"op":"req","service":"weather","data":{"city":"Oslo"},"timeout_ms":2000}"#,
        summary: "ask one provider of a service; answered +OK [answer] or its error",
        parse_text: |mut a| {
            let service = a.required("service")?.to_string();
            let data = text_payload(a.rest());
            ok(ServiceCommand::Req {
                service,
                data,
                timeout_ms: None,
                token: 0,
            })
        },
        parse_json: |mut a| {
            let service = a.required_str("service")?;
            let data = Payload::Json(a.take("data").unwrap_or(serde_json::Value::Null));
            let timeout_ms = match a.take("timeout_ms") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
                Some(_) => {
                    return Err(a.error("'timeout_ms' must be a count of milliseconds".into()))
                }
            };
            a.finish()?;
            ok(ServiceCommand::Req {
                service,
                data,
                timeout_ms,
                token: 0,
            })
        },
    },
    CommandSpec {
        name: "REPLY",
        usage: "REPLY <req-id> [payload...]",
        json: r#"{"op":"reply","req":"17","data":{"temp":3}}"#,
        summary: "answer a request you were given (REQ push)",
        parse_text: |mut a| {
            let w = a.required("request id")?;
            let req = req_id(&a, w)?;
            let data = text_payload(a.rest());
            ok(ServiceCommand::Reply { req, data })
        },
        parse_json: |mut a| {
            let req = json_req_id(a.required_value("req")?)
                .ok_or_else(|| a.error("'req' is the request id from the REQ push".into()))?;
            let data = Payload::Json(a.take("data").unwrap_or(serde_json::Value::Null));
            a.finish()?;
            ok(ServiceCommand::Reply { req, data })
        },
    },
    CommandSpec {
        name: "FAIL",
        usage: "FAIL <req-id> <code> [message...]",
        json: r#"{"op":"fail","req":"17","code":"no_city","message":"unknown city"}"#,
        summary: "answer a request you were given with an error",
        parse_text: |mut a| {
            let w = a.required("request id")?;
            let req = req_id(&a, w)?;
            let code = a.required("code")?.to_string();
            check_code(&code).map_err(|e| a.error(e))?;
            let message = a.rest().trim().to_string();
            ok(ServiceCommand::Fail { req, code, message })
        },
        parse_json: |mut a| {
            let req = json_req_id(a.required_value("req")?)
                .ok_or_else(|| a.error("'req' is the request id from the REQ push".into()))?;
            let code = a.required_str("code")?;
            check_code(&code).map_err(|e| a.error(e))?;
            let message = a.optional_str("message")?.unwrap_or_default();
            a.finish()?;
            ok(ServiceCommand::Fail { req, code, message })
        },
    },
    CommandSpec {
        name: "SERVICES",
        usage: "SERVICES",
        json: r#"{"op":"services"}"#,
        summary: "services with their providers, pending, served and failed requests",
        parse_text: |a| a.finish().map(|_| ServiceCommand::Services.into()),
        parse_json: |a| a.finish().map(|_| ServiceCommand::Services.into()),
    },
];

/// Applies a service command on the manager's thread. `None` for `REQ`, whose answer
/// comes later through the requester's outbox.
pub fn apply(m: &mut Manager, id: ConnId, c: ServiceCommand) -> Option<Reply> {
    let result = match c {
        ServiceCommand::Serve(name) => check_name(&name).and_then(|()| m.serve(id, &name)),
        ServiceCommand::Unserve(name) => m.unserve(id, &name),
        ServiceCommand::Req {
            service,
            data,
            timeout_ms,
            token,
        } => {
            let timeout = timeout_ms.map(std::time::Duration::from_millis);
            m.request(id, &service, data, timeout, token);
            return None;
        }
        ServiceCommand::Reply { req, data } => {
            m.answer_request(id, req, Ok(Reply::Value("data", Box::new(data))))
        }
        ServiceCommand::Fail { req, code, message } => {
            m.answer_request(id, req, Err(ErrorReply::new(code, message)))
        }
        ServiceCommand::Services => Ok(m.services_list()),
    };
    Some(result.unwrap_or_else(Reply::Error))
}

fn check_name(name: &str) -> Result<(), ErrorReply> {
    subject::check_channel(name).map_err(|e| {
        ErrorReply::new(
            "bad_args",
            format!("{e} (service names are written like channel names)"),
        )
    })
}
