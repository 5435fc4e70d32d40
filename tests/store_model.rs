//! Property test: the store against the in-memory reference model.

mod common;

use common::model::{check, Append};
use proptest::prelude::*;

fn append() -> impl Strategy<Value = Append> {
    (
        any::<u8>(),
        prop_oneof![4 => Just(0i8), 1 => -3i8..=2],
        // A small pool of action ids and skips makes replays, partial
        // duplicates and same-id-other-skip collisions common.
        proptest::collection::vec(
            (
                0u8..4,
                prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => 2u8..4],
            ),
            0..4,
        ),
    )
        .prop_map(|(stream, shift, ops)| Append { stream, shift, ops })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_reference_model(commands in proptest::collection::vec(append(), 1..60)) {
        check(&commands);
    }
}

/// Replays that matter: an exact replay of a batch, then a partial one.
#[test]
fn regression_replay_then_partial_duplicate() {
    check(&[
        Append {
            stream: 0,
            shift: 0,
            ops: vec![(1, 0), (2, 0)],
        },
        Append {
            stream: 0,
            shift: -2,
            ops: vec![(1, 0), (2, 0)],
        },
        Append {
            stream: 0,
            shift: -1,
            ops: vec![(2, 0), (3, 0)],
        },
        Append {
            stream: 0,
            shift: -2,
            ops: vec![(5, 0)],
        },
    ]);
}

/// Same action at the same index but another skip is not a replay.
#[test]
fn regression_same_id_other_skip_is_not_a_replay() {
    check(&[
        Append {
            stream: 1,
            shift: 0,
            ops: vec![(1, 0), (2, 1)],
        },
        Append {
            stream: 1,
            shift: -1,
            ops: vec![(2, 0)],
        },
        Append {
            stream: 1,
            shift: -2,
            ops: vec![(1, 0), (2, 0)],
        },
    ]);
}
