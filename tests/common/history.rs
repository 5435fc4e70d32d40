//! The naive model of the merge, written independently of the engine: a
//! set's history is its operations sorted by their own fields, then UNDO
//! and REDO cancelled to a fixpoint.

use std::collections::HashMap;

use reactordb::Operation;

fn structural(t: &str) -> bool {
    matches!(
        t,
        "CREATE_DOCUMENT"
            | "DELETE_DOCUMENT"
            | "UPGRADE_DOCUMENT"
            | "ADD_RELATIONSHIP"
            | "REMOVE_RELATIONSHIP"
            | "UPDATE_RELATIONSHIP"
    )
}

fn target(op: &Operation) -> Option<String> {
    let t = op.action.action_type.as_str();
    if t != "UNDO" && t != "REDO" {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&op.action.input).ok()?;
    Some(v.get("target")?.as_str()?.to_owned())
}

/// The history of a set (action ids are unique here, so no two versions):
/// sorted by the operation's own fields, cancellation to a fixpoint.
pub fn naive_history(set: &[Operation]) -> Vec<String> {
    let mut by_id: HashMap<String, &Operation> = HashMap::new();
    for op in set {
        by_id.insert(op.id.to_string(), op);
    }
    let mut ops: Vec<&Operation> = by_id.into_values().collect();
    ops.sort_by_key(|o| {
        let t = o.action.action_type.as_str();
        (
            !(t == "CREATE_DOCUMENT" && o.action.scope.as_str() == "document"),
            o.timestamp_utc_ms,
            !structural(t),
            o.action.id.as_str().as_bytes().to_vec(),
        )
    });
    let mut live = vec![true; ops.len()];
    loop {
        let next: Vec<bool> = (0..ops.len())
            .map(|x| {
                let xt = ops[x].action.action_type.as_str();
                !(x + 1..ops.len()).any(|m| {
                    live[m]
                        && target(ops[m]).as_deref() == Some(ops[x].id.to_string().as_str())
                        && match ops[m].action.action_type.as_str() {
                            "UNDO" => xt != "UNDO" && xt != "REDO" && !structural(xt),
                            _ => xt == "UNDO",
                        }
                })
            })
            .collect();
        if next == live {
            break;
        }
        live = next;
    }
    ops.iter()
        .zip(live)
        .filter(|(_, l)| *l)
        .map(|(o, _)| o.action.id.to_string())
        .collect()
}
