//! The header gate: named checks over a client's headers, combined by a gate function
//! (all of them by default), as the original framework's header functions and `gate`.

use std::sync::Arc;

use serde_json::{Map, Value as Json};

/// A client's headers: what it sent with `AUTH`, or its WebSocket upgrade's HTTP
/// headers (names in lower case) and query parameters.
pub type Headers = Map<String, Json>;

type Check = Arc<dyn Fn(&Headers) -> bool + Send + Sync>;
type GateFn = Arc<dyn Fn(&[bool]) -> bool + Send + Sync>;

/// Header checks and the gate over their results.
#[derive(Clone, Default)]
pub struct Gate {
    checks: Vec<(String, Check)>,
    gate: Option<GateFn>,
}

impl Gate {
    pub(crate) fn add_check(&mut self, name: &str, check: Check) {
        self.checks.push((name.to_string(), check));
    }

    pub(crate) fn set_gate(&mut self, gate: GateFn) {
        self.gate = Some(gate);
    }

    /// Whether any check is configured: without one, everybody is in.
    pub fn is_active(&self) -> bool {
        !self.checks.is_empty() || self.gate.is_some()
    }

    /// Runs every check over `headers` and the gate over their results. `Err` names
    /// the checks that failed.
    pub fn admit(&self, headers: &Headers) -> Result<(), String> {
        if !self.is_active() {
            return Ok(());
        }
        let results: Vec<bool> = self.checks.iter().map(|(_, c)| c(headers)).collect();
        let passed = match &self.gate {
            Some(g) => g(&results),
            None => results.iter().all(|r| *r),
        };
        if passed {
            return Ok(());
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .zip(&results)
            .filter(|(_, ok)| !**ok)
            .map(|(c, _)| c.0.as_str())
            .collect();
        Err(if failed.is_empty() {
            "the gate did not admit these headers".into()
        } else {
            format!("the headers did not pass: {}", failed.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(v: Json) -> Headers {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn all_checks_by_default_or_the_gate_given() {
        let mut g = Gate::default();
        assert!(
            g.admit(&Headers::new()).is_ok(),
            "no checks: everybody is in"
        );
        g.add_check("key", Arc::new(|h| h.get("key") == Some(&json!("k"))));
        g.add_check("agent", Arc::new(|h| h.contains_key("agent")));
        let e = g.admit(&headers(json!({"key":"k"}))).unwrap_err();
        assert!(e.contains("agent") && !e.contains("key"), "{e}");
        assert!(g.admit(&headers(json!({"key":"k","agent":1}))).is_ok());
        g.set_gate(Arc::new(|r| r.iter().any(|x| *x)));
        assert!(g.admit(&headers(json!({"agent":1}))).is_ok());
        assert!(g.admit(&Headers::new()).is_err());
    }
}
