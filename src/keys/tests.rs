use proptest::prelude::*;

use super::*;

fn id_text() -> impl Strategy<Value = String> {
    // Short strings over a small alphabet make shared prefixes (the
    // interesting case for injectivity) common; the non-ASCII letter checks
    // that multi-byte UTF-8 keeps order.
    proptest::string::string_regex("[ab\u{e9}/.-]{1,6}").expect("valid regex")
}

fn unit() -> impl Strategy<Value = SyncUnit> {
    (id_text(), id_text(), id_text()).prop_map(|(d, s, b)| {
        SyncUnit::new(
            DocumentId::new(d).expect("valid"),
            Scope::new(s).expect("valid"),
            Branch::new(b).expect("valid"),
        )
    })
}

fn tuple(unit: &SyncUnit, index: u64) -> (&str, &str, &str, u64) {
    (
        unit.document_id.as_str(),
        unit.branch.as_str(),
        unit.scope.as_str(),
        index,
    )
}

proptest! {
    #[test]
    fn op_key_round_trips(u in unit(), index in any::<u64>()) {
        let key = op_key(&u, index);
        prop_assert_eq!(decode_op_key(&key), Some((u.clone(), index)));
        prop_assert_eq!(op_key_index(&key), Some(index));
    }

    #[test]
    fn op_keys_are_injective_and_ordered(a in unit(), b in unit(), i in any::<u64>(), j in any::<u64>()) {
        let (ka, kb) = (op_key(&a, i), op_key(&b, j));
        // Equal bytes only for equal tuples.
        prop_assert_eq!(ka == kb, (&a, i) == (&b, j));
        // Byte order is (document, branch, scope, index) order.
        prop_assert_eq!(ka.cmp(&kb), tuple(&a, i).cmp(&tuple(&b, j)));
    }

    #[test]
    fn no_stream_prefix_collides_with_another(a in unit(), b in unit(), i in any::<u64>()) {
        // A key of stream `b` lies inside stream `a`'s range only when a == b.
        let prefix = unit_key(&a);
        let key = op_key(&b, i);
        let upper = prefix_upper_bound(&prefix).expect("ends in NUL");
        let inside = key.starts_with(&prefix) && key < upper;
        prop_assert_eq!(inside, a == b);
        prop_assert_eq!(key.starts_with(&prefix), a == b);
    }

    #[test]
    fn index_order_within_a_stream(u in unit(), i in any::<u64>(), j in any::<u64>()) {
        prop_assert_eq!(op_key(&u, i).cmp(&op_key(&u, j)), i.cmp(&j));
    }

    #[test]
    fn ordinal_keys_round_trip_in_order(a in any::<u64>(), b in any::<u64>()) {
        let (ka, kb) = (ordinal_key(Ordinal(a)), ordinal_key(Ordinal(b)));
        prop_assert_eq!(decode_ordinal_key(&ka), Some(Ordinal(a)));
        prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
    }

    #[test]
    fn op_id_keys_round_trip(bytes in any::<[u8; 16]>(), index in any::<u64>(), skip in any::<u64>()) {
        let id = OperationId(bytes);
        prop_assert_eq!(decode_op_id_key(&op_id_key(&id, index, skip)), Some((id, index, skip)));
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_op_key(&bytes);
        let _ = decode_ordinal_key(&bytes);
        let _ = decode_op_id_key(&bytes);
        let _ = op_key_index(&bytes);
    }
}

#[test]
fn document_prefixes_separate_similar_ids() {
    let unit = |d: &str| {
        SyncUnit::new(
            DocumentId::new(d).expect("valid"),
            Scope::global(),
            Branch::main(),
        )
    };
    let ab = document_prefix(&DocumentId::new("ab").expect("valid"));
    assert!(op_key(&unit("ab"), 0).starts_with(&ab));
    assert!(!op_key(&unit("abc"), 0).starts_with(&ab));
    assert_eq!(prefix_upper_bound(&[1, 0xFF]), Some(vec![2]));
    assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
}
