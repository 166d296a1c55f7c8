//! The application's own commands, for servers built with the framework: `CALL` an
//! action, list `ACTIONS` and `TASKS`, pass the header gate with `AUTH`. They are
//! parsed here and carried out by the framework (`framework/`), which holds what the
//! embedding program registered.

use serde_json::{Map, Value as Json};

use super::{ok, Command, CommandSpec};
use crate::protocol::args::{clip, type_name};
use crate::protocol::Payload;

/// The application family. Answered by the connection through the framework.
#[derive(Clone, Debug, PartialEq)]
pub enum AppCommand {
    /// Run an action with a payload.
    Call {
        action: String,
        data: Payload,
    },
    Actions,
    Tasks,
    /// Headers for the gate.
    Auth(Map<String, Json>),
}

impl From<AppCommand> for Command {
    fn from(c: AppCommand) -> Command {
        Command::App(Box::new(c))
    }
}

/// A text payload: JSON when the rest of the line parses as JSON, else the text itself.
pub fn text_payload(rest: &str) -> Payload {
    let rest = rest.trim();
    match serde_json::from_str::<Json>(rest) {
        Ok(v) if !rest.is_empty() => Payload::Json(v),
        _ => Payload::Text(rest.to_string()),
    }
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "CALL",
        usage: "CALL <action> [payload...]",
        json: r#"{"op":"call","action":"signup","data":{"name":"ann"}}"#,
        summary: "run one of the server's actions (ACTIONS lists them); the payload is JSON when it parses as JSON, else text",
        parse_text: |mut a| {
            let action = a.required("action")?.to_string();
            let data = text_payload(a.rest());
            ok(AppCommand::Call { action, data })
        },
        parse_json: |mut a| {
            let action = a.required_str("action")?;
            let data = Payload::Json(a.take("data").unwrap_or(Json::Null));
            a.finish()?;
            ok(AppCommand::Call { action, data })
        },
    },
    CommandSpec {
        name: "ACTIONS",
        usage: "ACTIONS",
        json: r#"{"op":"actions"}"#,
        summary: "the actions this server offers, one line each",
        parse_text: |a| a.finish().map(|_| AppCommand::Actions.into()),
        parse_json: |a| a.finish().map(|_| AppCommand::Actions.into()),
    },
    CommandSpec {
        name: "TASKS",
        usage: "TASKS",
        json: r#"{"op":"tasks"}"#,
        summary: "the server's tasks: schedule, runs, skipped runs, failures, last and next run",
        parse_text: |a| a.finish().map(|_| AppCommand::Tasks.into()),
        parse_json: |a| a.finish().map(|_| AppCommand::Tasks.into()),
    },
    CommandSpec {
        name: "AUTH",
        usage: "AUTH <json object>",
        json: r#"{"op":"auth","headers":{"key":"..."}}"#,
        summary: "show the server's gate your headers, e.g. AUTH {\"key\":\"secret\"}",
        parse_text: |mut a| {
            let rest = a.required_rest("headers")?;
            match serde_json::from_str::<Json>(rest) {
                Ok(Json::Object(headers)) => ok(AppCommand::Auth(headers)),
                Ok(other) => Err(a.error(format!(
                    "headers must be a JSON object, not {}",
                    type_name(&other)
                ))),
                Err(e) => Err(a.error(format!("headers '{}' are not JSON: {e}", clip(rest)))),
            }
        },
        parse_json: |mut a| match a.required_value("headers")? {
            Json::Object(headers) => {
                a.finish()?;
                ok(AppCommand::Auth(headers))
            }
            other => Err(a.error(format!(
                "'headers' must be an object, not {}",
                type_name(&other)
            ))),
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::parse_text;

    #[test]
    fn call_payloads_are_json_when_they_parse() {
        let call = |rest: &str| match parse_text("CALL", rest) {
            Ok(Command::App(c)) => *c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            call(r#" say {"text":"hi"}"#),
            AppCommand::Call {
                action: "say".into(),
                data: Payload::Json(serde_json::json!({"text":"hi"}))
            }
        );
        assert_eq!(
            call(" say hello there"),
            AppCommand::Call {
                action: "say".into(),
                data: Payload::Text("hello there".into())
            }
        );
        assert!(parse_text("CALL", "").is_err());
        assert!(parse_text("AUTH", "[1]").is_err());
        assert!(parse_text("AUTH", r#"{"key":"k"}"#).is_ok());
    }
}
