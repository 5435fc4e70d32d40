//! Paging and filters over long streams, and exact ordinal ranges.

mod common;

use common::*;
use reactordb::{ActionType, Cursor, Error, OperationFilter, Ordinal, Page, Paging, Revision};

const N: u64 = 10_000;

fn fill(store: &reactordb::OperationStore, u: &reactordb::SyncUnit) {
    for chunk in 0..N / 500 {
        let start = chunk * 500;
        let ops = (start..start + 500)
            .map(|i| op(u, i, &format!("{}-{i}", u.document_id), i))
            .collect();
        append(store, u, start, ops).expect("append");
    }
}

fn collect_pages<T: Clone>(
    mut fetch: impl FnMut(Paging) -> Page<T>,
    limit: usize,
) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut paging = Paging::first(limit);
    let mut pages = 0;
    loop {
        let page = fetch(paging);
        pages += 1;
        assert!(page.items.len() <= limit);
        out.extend(page.items.iter().cloned());
        match page.next_cursor {
            Some(cursor) => paging = Paging::after(cursor, limit),
            None => return (out, pages),
        }
    }
}

#[test]
fn get_since_pages_through_ten_thousand_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("long", "global");
    let other = unit("long", "local");
    fill(&store, &u);
    fill(&store, &other);

    let (all, pages) = collect_pages(
        |p| {
            store
                .get_since(&u, Revision(0), &OperationFilter::default(), p)
                .expect("page")
        },
        999,
    );
    assert_eq!(all.len() as u64, N);
    assert_eq!(pages, 11);
    assert!(all.iter().enumerate().all(|(i, op)| op.index == i as u64));
    assert!(
        all.iter().all(|op| op.action.scope == u.scope),
        "no other stream leaks in"
    );

    let tail = store
        .get_since(
            &u,
            Revision(9_990),
            &OperationFilter::default(),
            Paging::all(),
        )
        .expect("tail");
    assert_eq!(
        tail.items.iter().map(|o| o.index).collect::<Vec<_>>(),
        (9_990..N).collect::<Vec<_>>()
    );
    assert_eq!(tail.next_cursor, None);

    // Filters: even action type in a timestamp window.
    let filter = OperationFilter::default()
        .action_types(vec![ActionType::new("EVEN").expect("valid")])
        .timestamp_from(2_000)
        .timestamp_to(2_999);
    let (filtered, _) = collect_pages(
        |p| store.get_since(&u, Revision(0), &filter, p).expect("page"),
        100,
    );
    let expected: Vec<u64> = (2_000..3_000).filter(|i| i % 2 == 0).collect();
    assert_eq!(
        filtered
            .iter()
            .map(|o| o.timestamp_utc_ms)
            .collect::<Vec<_>>(),
        expected
    );

    let (conflicting, _) =
        collect_pages(|p| store.get_conflicting(&u, 9_500, p).expect("page"), 128);
    assert_eq!(conflicting.len(), 500);
    assert!(conflicting.iter().all(|o| o.timestamp_utc_ms >= 9_500));

    let err = store
        .get_since(
            &u,
            Revision(0),
            &OperationFilter::default(),
            Paging::first(0),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            argument: "limit",
            ..
        }
    ));
}

#[test]
fn get_since_ordinal_returns_exactly_the_range_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = unit("a", "global");
    let b = unit("b", "global");
    fill(&store, &a);
    fill(&store, &b);

    let page = store
        .get_since_ordinal(Ordinal(4_321), Paging::first(1_000))
        .expect("page");
    let ordinals: Vec<u64> = page.items.iter().map(|o| o.context.ordinal.get()).collect();
    assert_eq!(ordinals, (4_321..5_321).collect::<Vec<_>>());
    assert_eq!(page.next_cursor, Some(Cursor(5_321)));
    for item in &page.items {
        // Ordinals 1..=10_000 are stream a, the rest stream b.
        let (u, index) = if item.context.ordinal.get() <= N {
            (&a, item.context.ordinal.get() - 1)
        } else {
            (&b, item.context.ordinal.get() - N - 1)
        };
        assert_eq!(&item.context.unit(), u);
        assert_eq!(item.operation.index, index);
        assert_eq!(item.context.document_type, doc_type());
    }

    let (all, _) = collect_pages(
        |p| store.get_since_ordinal(Ordinal(1), p).expect("page"),
        4_096,
    );
    assert_eq!(all.len() as u64, 2 * N);
    let last = store
        .get_since_ordinal(Ordinal(2 * N), Paging::all())
        .expect("page");
    assert_eq!(last.items.len(), 1);
    let beyond = store
        .get_since_ordinal(Ordinal(2 * N + 1), Paging::all())
        .expect("page");
    assert!(beyond.items.is_empty() && beyond.next_cursor.is_none());
}

#[test]
fn revisions_streams_and_latest_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let global = unit("doc", "global");
    let local = unit("doc", "local");
    let neighbour = unit("doc2", "global");
    append(
        &store,
        &global,
        0,
        vec![op(&global, 0, "g0", 50), op(&global, 1, "g1", 40)],
    )
    .expect("append");
    append(&store, &local, 0, vec![op(&local, 0, "l0", 70)]).expect("append");
    append(&store, &neighbour, 0, vec![op(&neighbour, 0, "n0", 99)]).expect("append");

    let revs = store
        .get_revisions(&global.document_id, &global.branch)
        .expect("revisions");
    assert_eq!(revs.revisions.len(), 2);
    assert_eq!(revs.revisions[&global.scope], Revision(2));
    assert_eq!(revs.revisions[&local.scope], Revision(1));
    assert_eq!(revs.latest_timestamp_utc_ms, 70);
    assert_eq!(
        store.get_stream_latest_timestamp(&global).expect("ts"),
        Some(50)
    );
    assert_eq!(
        store
            .get_stream_latest_timestamp(&unit("none", "global"))
            .expect("ts"),
        None
    );
    let streams = store.streams(&global.document_id).expect("streams");
    assert_eq!(
        streams.iter().map(|s| s.unit.clone()).collect::<Vec<_>>(),
        vec![global, local]
    );
}
