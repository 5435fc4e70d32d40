//! Bootstrapping past the stream's retention from a point-to-point peer:
//! when the message after our inbox cursor is gone from the stream, the
//! consumer waits until the peer named by [`NatsOptions::bootstrap_from`]
//! has given us, over its own session, everything the stream held before
//! its first message, and only then reads on from that message. Proof
//! comes from the audit bucket: the peer's relay mark says how far it has
//! loaded the same stream, and its records say what it held then; we go on
//! once its mark reaches past the gap and no record of it shows us behind.
//! Owns that check; starting the peer's session is the application's.
//!
//! [`NatsOptions::bootstrap_from`]: super::NatsOptions::bootstrap_from

use std::time::Duration;

use super::audit;
use super::relay::Relay;
use crate::error::Result;
use crate::sync::audit::Standing;
use crate::sync::state;

/// How often the check runs while it waits.
const RECHECK: Duration = Duration::from_millis(250);

/// Waits until the peer `from` has given us the stream's history before
/// `first`; returns the stream sequence the peer vouches for (its mark's
/// cursor, at least `first - 1`: we hold everything up to it), or `None`
/// if the relay is ending first. Each check that fails says why in the
/// remote's status (`last_error`).
pub(super) fn wait(relay: &Relay, from: &str, first: u64) -> Result<Option<u64>> {
    let shared = &relay.shared;
    let kv = relay.block_on(audit::bucket(&relay.js, &relay.options))?;
    loop {
        if relay.ending() {
            return Ok(None);
        }
        let waiting = match why_not_yet(relay, &kv, from, first)? {
            Ok(covered) => return Ok(Some(covered)),
            Err(reason) => reason,
        };
        let reason = format!(
            "behind the stream's retention (its first message is {first}): bootstrapping from {from}: {waiting}"
        );
        shared.update(&relay.remote, |l| l.last_error = Some(reason));
        let mut slept = Duration::ZERO;
        while slept < RECHECK && !relay.ending() {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
    }
}

/// The sequence the peer vouches for, or why the bootstrap is not
/// complete yet.
fn why_not_yet(
    relay: &Relay,
    kv: &async_nats::jetstream::kv::Store,
    from: &str,
    first: u64,
) -> Result<std::result::Result<u64, String>> {
    let shared = &relay.shared;
    let Some(record) = shared.state.remote(from)? else {
        return Ok(Err(format!("no remote is named {from}")));
    };
    let Some(peer) = record.peer_node else {
        return Ok(Err("it has not connected yet".into()));
    };
    let peer = state::hex(&peer);
    let ours = shared.state.relay_log(&relay.remote)?;
    let (mark, records) = relay.block_on(audit::published_by(kv, &peer))?;
    let Some(mark) = mark else {
        return Ok(Err("its relay has published no mark yet".into()));
    };
    if Some(&mark.stream) != ours.as_ref() {
        return Ok(Err(format!(
            "its relay reads {}, not our stream",
            mark.stream
        )));
    }
    if !mark.relays_everything {
        // Its records then leave out streams our consumer would load.
        return Ok(Err(
            "its relay has a filter or loads some partitions only: it cannot vouch for the whole stream".into(),
        ));
    }
    if mark.inbox_cursor + 1 < first {
        return Ok(Err(format!(
            "it has loaded the stream only to {} itself",
            mark.inbox_cursor
        )));
    }
    // Every stream our consumer loads: all, whatever our filter, but for
    // the partitions we load.
    let mut behind = 0;
    for theirs in records {
        if relay.ending() {
            return Ok(Err("ending".into()));
        }
        if !relay.options.serves(&theirs.unit.document_id) {
            continue;
        }
        let local = audit::local_record(shared, &theirs)?;
        if !matches!(local.standing(&theirs), Standing::InSync | Standing::Ahead) {
            behind += 1;
        }
    }
    Ok(match behind {
        0 => Ok(mark.inbox_cursor),
        _ => Err(format!("{behind} stream(s) still behind its records")),
    })
}
