//! Reading an object the way kstatus reads an unstructured one: a missing
//! or wrongly typed field is its default, never an error, because health is
//! computed from whatever the API server (or a controller) wrote.

use std::time::SystemTime;

use serde_json::Value;

/// An object as the API server returned it, and when it was read: rules
/// that give a state a grace period (a Pod not yet scheduled) measure it
/// from `at`, so they stay pure and tests can pin the clock.
#[derive(Debug)]
pub(super) struct Observed<'a> {
    value: &'a Value,
    pub at: SystemTime,
}

/// One entry of `status.conditions`; a missing field reads as `""`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Condition<'a> {
    pub kind: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

// === impl Observed ===

impl<'a> Observed<'a> {
    pub fn new(value: &'a Value, at: SystemTime) -> Self {
        Observed { value, at }
    }

    /// The integer at `pointer`, if there is one.
    pub fn int(&self, pointer: &str) -> Option<i64> {
        self.value.pointer(pointer)?.as_i64()
    }

    /// The integer at `pointer`, or `default` (kstatus's `GetIntField`).
    pub fn int_or(&self, pointer: &str, default: i64) -> i64 {
        self.int(pointer).unwrap_or(default)
    }

    /// The string at `pointer`, if there is one.
    pub fn string(&self, pointer: &str) -> Option<&'a str> {
        self.value.pointer(pointer)?.as_str()
    }

    /// The string at `pointer`, or `""` when it is absent.
    pub fn string_or_empty(&self, pointer: &str) -> &'a str {
        self.string(pointer).unwrap_or_default()
    }

    /// The items of the list at `pointer`; none when it is absent.
    pub fn items(&self, pointer: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        self.value
            .pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    /// `status.conditions`, in the order the controller wrote them (some
    /// rules, as in kstatus, decide on the first that matches).
    pub fn conditions(&self) -> impl Iterator<Item = Condition<'a>> + use<'a> {
        self.items("/status/conditions").filter_map(Condition::of)
    }

    /// The first condition of type `kind` with `status`.
    pub fn condition(&self, kind: &str, status: &str) -> Option<Condition<'a>> {
        self.conditions()
            .find(|c| c.kind == kind && c.status == status)
    }
}

// === impl Condition ===

impl<'a> Condition<'a> {
    fn of(entry: &'a Value) -> Option<Self> {
        let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or_default();
        entry.as_object()?;
        Some(Condition {
            kind: field("type"),
            status: field("status"),
            reason: field("reason"),
            message: field("message"),
        })
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `what`, followed by the controller's own words: its message, else
    /// its reason.
    pub fn explain(&self, what: &str) -> String {
        let detail = if self.message.is_empty() {
            self.reason
        } else {
            self.message
        };
        if detail.is_empty() {
            what.to_owned()
        } else {
            format!("{what}: {detail}")
        }
    }
}
