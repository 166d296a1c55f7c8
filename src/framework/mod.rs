#![warn(missing_docs)]
//! The framework floor: what a program that builds its own server on leviathan
//! registers (actions, tasks, header checks and a gate) and how the server runs them.
//! Assembled by [`crate::app::App`]; the connection hands it `CALL`, `ACTIONS`,
//! `TASKS` and `AUTH`.

mod action;
mod cluster_wide;
mod ctx;
mod gate;
mod model;
mod task;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value as Json;

/// What a grant allows, for [`Ctx::grant`].
pub use crate::store::files::FileOp;
pub use action::{ActionError, Answer};
pub use ctx::Ctx;
pub(crate) use ctx::Hub;
pub use gate::{Gate, Headers};
pub use model::{Model, ModelTable};
pub use task::Schedule;
pub(crate) use task::Task;

use crate::protocol::{ErrorReply, Item, Payload, Reply};

/// What an action does with its payload.
pub(crate) type ActionFn = Arc<dyn Fn(&mut Ctx, Json) -> Result<Answer, ActionError> + Send + Sync>;

struct Action {
    summary: String,
    run: ActionFn,
}

/// Everything the embedding program registered. A plain server has none of it.
#[derive(Default)]
pub struct Framework {
    actions: BTreeMap<String, Action>,
    tasks: Vec<Arc<Task>>,
    gate: Gate,
    /// Model tables (name, columns), defined at start when missing.
    models: Vec<(&'static str, &'static [&'static str])>,
    /// Set at shutdown: interval tasks stop.
    stop: Arc<AtomicBool>,
}

impl Framework {
    pub(crate) fn add_action(&mut self, name: &str, summary: &str, run: ActionFn) {
        self.actions.insert(
            name.to_string(),
            Action {
                summary: summary.to_string(),
                run,
            },
        );
    }

    pub(crate) fn add_task(&mut self, task: Task) {
        self.tasks.push(Arc::new(task));
    }

    pub(crate) fn add_model<T: Model>(&mut self) {
        self.models.push((T::TABLE, T::COLUMNS));
    }

    pub(crate) fn gate_mut(&mut self) -> &mut Gate {
        &mut self.gate
    }

    /// Whether a client must pass the gate before anything but `PING`, `HELP`, `AUTH`
    /// and `QUIT`.
    pub fn has_gate(&self) -> bool {
        self.gate.is_active()
    }

    /// Runs the header checks and the gate.
    pub fn admit(&self, headers: &Headers) -> Result<(), String> {
        self.gate.admit(headers)
    }

    /// Whether an action of that name exists.
    pub fn has_action(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    /// `-ERR no_such_action`.
    pub(crate) fn no_such_action(name: &str) -> Reply {
        Reply::Error(ErrorReply::new(
            "no_such_action",
            format!(
                "no action named '{}' (ACTIONS lists them)",
                crate::protocol::args::clip(name)
            ),
        ))
    }

    /// Runs action `name` for the caller in `ctx` (in the calling coroutine), publishes
    /// its result on the channels it asked for, and returns the caller's reply. A
    /// panicking handler answers `action_failed` and is logged with its name.
    pub(crate) fn call(&self, mut ctx: Ctx, name: &str, data: Payload) -> Reply {
        let Some(action) = self.actions.get(name) else {
            return Framework::no_such_action(name);
        };
        let payload = match data {
            Payload::Text(t) => Json::String(t),
            Payload::Json(v) => v,
        };
        let failed = |why: String| {
            Reply::Error(ErrorReply::new(
                "action_failed",
                format!("action '{name}' failed: {why}"),
            ))
        };
        let answer = match catch_unwind(AssertUnwindSafe(|| (action.run)(&mut ctx, payload))) {
            Err(p) => {
                let why = panic_text(&p);
                log::error!("action {name} panicked: {why}");
                return failed(format!("it panicked ({why})"));
            }
            Ok(Err(e)) => return Reply::Error(e.into()),
            Ok(Ok(answer)) => answer,
        };
        let result = match answer.result {
            Ok(r) => r,
            Err(why) => return failed(format!("its result cannot be serialized: {why}")),
        };
        for channel in &answer.broadcast {
            if let Err(e) = ctx.publish(channel, &result) {
                return Reply::Error(ErrorReply::new(
                    e.code,
                    format!(
                        "action '{name}' ran, but its result could not be broadcast on '{channel}': {}",
                        e.message
                    ),
                ));
            }
        }
        Reply::Value("result", Box::new(Payload::Json(result)))
    }

    /// `ACTIONS`: `* <name> <summary>` each.
    pub(crate) fn actions_reply(&self) -> Reply {
        let items = self
            .actions
            .iter()
            .map(|(name, a)| Item {
                text: format!("{name} {}", a.summary),
                json: serde_json::json!({"name": name, "summary": a.summary}),
            })
            .collect();
        Reply::List {
            key: "actions",
            items,
        }
    }

    /// `TASKS`: each task's schedule and how it ran.
    pub(crate) fn tasks_reply(&self) -> Reply {
        Reply::List {
            key: "tasks",
            items: self.tasks.iter().map(|t| t.item()).collect(),
        }
    }

    /// Runs the startup tasks in order, before the port opens; the first failure
    /// stops the start and says which task failed and why.
    pub(crate) fn run_startup(&self, hub: &Hub) -> Result<(), String> {
        let tables = crate::commands::table_api::Tables::new(hub.store.clone());
        for (table, columns) in &self.models {
            match tables.define(table, columns) {
                Ok(()) => log::info!("model {table}: table defined"),
                Err(e) if e.code == "table_exists" => {}
                Err(e) => return Err(format!("model {table}: cannot define its table: {e}")),
            }
        }
        for t in self
            .tasks
            .iter()
            .filter(|t| t.schedule == Schedule::Startup)
        {
            if let Err(e) = t.run_once(&mut Ctx::for_server(hub.clone())) {
                return Err(format!("startup task '{}' failed: {e}", t.name));
            }
        }
        Ok(())
    }

    /// Starts a coroutine per interval task; they stop at [`Framework::run_shutdown`].
    pub(crate) fn start_intervals(&self, hub: &Hub) {
        for t in &self.tasks {
            if matches!(t.schedule, Schedule::Every { .. }) {
                let (t, hub, stop) = (t.clone(), hub.clone(), self.stop.clone());
                may::go!(move || task::run_every(t, || Ctx::for_server(hub.clone()), stop));
            }
        }
    }

    /// Stops the interval tasks and runs the shutdown tasks in order (failures are
    /// logged and counted).
    pub(crate) fn run_shutdown(&self, hub: &Hub) {
        self.stop.store(true, Ordering::Release);
        for t in self
            .tasks
            .iter()
            .filter(|t| t.schedule == Schedule::Shutdown)
        {
            let _ = t.run_once(&mut Ctx::for_server(hub.clone()));
        }
    }
}

/// What a panic said, when it said it with a string.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".into()
    }
}
