//! What an action handler returns: an [`Answer`] (a result, and the channels to
//! broadcast it on) or an [`ActionError`] with a code the client sees.

use serde::Serialize;
use serde_json::Value as Json;

use crate::protocol::ErrorReply;

/// An action's result and the channels to broadcast it on (the original frameworks'
/// "a response payload and a list of channels to broadcast on").
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The result, or why it could not be serialized.
    pub(crate) result: Result<Json, String>,
    pub(crate) broadcast: Vec<String>,
}

impl Answer {
    /// The caller's answer: any serializable value (`+OK <value>` / `"result"`).
    ///
    /// A value that cannot be serialized (a map with non-string keys, say) answers
    /// `action_failed` instead of panicking.
    pub fn new(result: impl Serialize) -> Answer {
        Answer {
            result: serde_json::to_value(result).map_err(|e| e.to_string()),
            broadcast: Vec::new(),
        }
    }

    /// An answer with nothing in it: `+OK`, `{"ok":true,"result":null}`.
    pub fn none() -> Answer {
        Answer::new(Json::Null)
    }

    /// Also publishes the result on `channel`, from the caller, before the caller is
    /// answered.
    pub fn broadcast(mut self, channel: impl Into<String>) -> Answer {
        self.broadcast.push(channel.into());
        self
    }

    /// The result, as the caller will get it (`None` if it could not be serialized).
    pub fn result(&self) -> Option<&Json> {
        self.result.as_ref().ok()
    }
}

/// An error an action (or task) chose: a stable snake_case `code` the client sees
/// (`-ERR <code> <message>`), and a message for people.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionError {
    /// A stable snake_case word (`not_in_room`).
    pub code: std::borrow::Cow<'static, str>,
    /// What went wrong, for people.
    pub message: String,
}

impl ActionError {
    /// An error with this code and message.
    pub fn new(
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> ActionError {
        ActionError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ActionError {}

/// Errors from the server's own operations (a table write, a publish) pass through a
/// handler's `?` with their codes (`no_such_channel`, `bad_value`, …).
impl From<ErrorReply> for ActionError {
    fn from(e: ErrorReply) -> ActionError {
        ActionError {
            code: e.code,
            message: e.message.into(),
        }
    }
}

impl From<ActionError> for ErrorReply {
    fn from(e: ActionError) -> ErrorReply {
        ErrorReply::new(e.code, e.message)
    }
}
