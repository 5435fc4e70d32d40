//! The `reactordb` binary: verify, export/import, backup, inspect, and one
//! clear line for each bad input.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::reactor::*;
use reactordb::{OperationStore, Scope, StoreOptions};

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reactordb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reactordb");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A database with one counter document and a few operations.
fn database(dir: &std::path::Path) {
    let reactor = open(dir, 2);
    create_counter(&reactor, "doc");
    for i in 0..5 {
        written(
            &reactor
                .execute(id("doc"), main(), vec![increment(&format!("i{i}"))])
                .expect("submit"),
        );
    }
}

fn heads(dir: &std::path::Path) -> Vec<(String, String)> {
    let store = OperationStore::open(dir, StoreOptions::default()).expect("open");
    store
        .all_streams()
        .expect("streams")
        .into_iter()
        .map(|s| (s.unit.to_string(), s.head_hash.to_string()))
        .collect()
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "should fail: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(err.starts_with("reactordb: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn verify_is_clean_then_names_a_changed_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    database(dir.path());
    let db = dir.path().to_str().expect("utf8");
    let out = run(&["--db", db, "verify"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("clean: 2 streams, 6 operations"),
        "{}",
        text(&out.stdout)
    );

    common::edit_operation(dir.path(), "doc", 3, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    });
    let out = run(&["--db", db, "verify"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("BROKEN chain: doc/global@main at index 3"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn verify_names_damaged_view_data_and_repair_view_rebuilds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    database(dir.path());
    {
        // The view has indexed everything before its files are edited.
        let reactor = open(dir.path(), 1);
        let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
        reactor.view().wait_for(token).expect("caught up");
    }
    let db = dir.path().to_str().expect("utf8");
    // Lose the document's type index entry: it drops out of listings.
    {
        let raw = common::raw_db(dir.path());
        let cf = raw.cf_handle("view_meta").expect("cf");
        let key = b"texample/counter\0doc\0";
        assert!(
            raw.get_cf(cf, key).expect("get").is_some(),
            "the index entry"
        );
        raw.delete_cf(cf, key).expect("delete");
    }
    let out = run(&["--db", db, "verify"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("BROKEN view data: MissingIndexEntry at texample/counter/doc/"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["--db", db, "verify", "--repair-view"], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("view rebuilt"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["--db", db, "inspect", "--type", "example/counter"], None);
    assert!(text(&out.stdout).contains("doc"), "{}", text(&out.stdout));
}

/// `export doc` of a fresh `database` in `src`, checked to succeed.
fn exported(src: &std::path::Path) -> Output {
    database(src);
    let exported = run(
        &["--db", src.to_str().expect("utf8"), "export", "doc"],
        None,
    );
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    exported
}

#[test]
fn export_then_import_reproduces_the_chain_heads() {
    let (src, dst) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let exported = exported(src.path());
    assert_eq!(text(&exported.stdout).lines().count(), 6);
    let target = dst.path().join("copy");
    let imported = run(
        &["--db", target.to_str().expect("utf8"), "import"],
        Some(&exported.stdout),
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert_eq!(heads(src.path()), heads(&target));
    // Importing the same lines again is an idempotent replay.
    let again = run(
        &["--db", target.to_str().expect("utf8"), "import"],
        Some(&exported.stdout),
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(heads(src.path()), heads(&target));
}

/// The raw JSON text of a line's `operation.action.input`.
fn raw_input(line: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        operation: Op<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Op<'a> {
        #[serde(borrow)]
        action: Act<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Act<'a> {
        #[serde(borrow)]
        input: &'a serde_json::value::RawValue,
    }
    let line: Line<'_> = serde_json::from_str(line).expect("an export line");
    line.operation.action.input.get().to_owned()
}

#[test]
fn export_shows_json_inputs_as_json_and_import_reads_base64_too() {
    use base64::Engine;
    let (src, dst) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let exported = exported(src.path());
    let lines: Vec<String> = text(&exported.stdout).lines().map(str::to_owned).collect();
    // The creation's input is a JSON object, each increment's a number:
    // shown as themselves, never as arrays of byte values.
    assert!(raw_input(&lines[0]).starts_with('{'), "{}", lines[0]);
    for line in &lines[1..] {
        assert_eq!(raw_input(line), "1", "{line}");
    }
    // The same lines with every input in the base64 form import to the
    // same chain heads: the bytes are the same.
    let as_base64: String = lines
        .iter()
        .map(|line| {
            let raw = raw_input(line);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
            let from = format!(r#""input":{raw}"#);
            assert_eq!(line.matches(&from).count(), 1, "{line}");
            line.replacen(&from, &format!(r#""input":{{"base64":"{encoded}"}}"#), 1) + "\n"
        })
        .collect();
    let target = dst.path().join("copy");
    let imported = run(
        &["--db", target.to_str().expect("utf8"), "import"],
        Some(as_base64.as_bytes()),
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert_eq!(heads(src.path()), heads(&target));
}

/// The read-only commands, each of which must succeed on `db`.
fn read_everything(db: &str) {
    for args in [
        vec!["verify"],
        vec!["inspect"],
        vec!["inspect", "doc"],
        vec!["inspect", "doc", "--json"],
        vec!["inspect", "doc", "--scope", "global"],
        vec!["inspect", "--type", "example/counter"],
        vec!["export", "doc"],
    ] {
        let mut all = vec!["--db", db];
        all.extend(args.iter().copied());
        let out = run(&all, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn read_only_commands_write_nothing_and_read_a_database_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    database(dir.path());
    let db = dir.path().to_str().expect("utf8");
    let before = common::file_hashes(dir.path());
    read_everything(db);
    assert_eq!(
        common::file_hashes(dir.path()),
        before,
        "a read-only command changed a file"
    );

    // Held by a live reactor (this process): they still read it, and what
    // needs the writer says so.
    let reactor = open(dir.path(), 2);
    written(
        &reactor
            .execute(id("doc"), main(), vec![increment("live")])
            .expect("submit"),
    );
    read_everything(db);
    let json = run(&["--db", db, "inspect", "doc", "--json"], None);
    assert!(
        text(&json.stdout).contains("\"revision\": 6"),
        "{}",
        text(&json.stdout)
    );
    let copy = dir.path().join("copy");
    let err = one_line_error(&run(
        &["--db", db, "backup", copy.to_str().expect("utf8")],
        None,
    ));
    assert!(
        err.contains("held by another process") && err.contains("OperationStore::backup"),
        "{err}"
    );
    let err = one_line_error(&run(&["--db", db, "import"], Some(b"")));
    assert!(err.contains("held by another process"), "{err}");
    drop(reactor);
}

#[test]
fn backup_opens_as_a_database_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    database(dir.path());
    let copy = dir.path().join("backup");
    let db = dir.path().to_str().expect("utf8");
    let out = run(&["--db", db, "backup", copy.to_str().expect("utf8")], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(heads(dir.path()), heads(&copy));
    let verify = run(&["--db", copy.to_str().expect("utf8"), "verify"], None);
    assert!(verify.status.success());
    let listed = run(
        &[
            "--db", db, "inspect", "doc", "--scope", "global", "--limit", "2",
        ],
        None,
    );
    assert!(listed.status.success());
    let stdout = text(&listed.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with('{')).count(), 2);
    assert!(stdout.contains("# more: --from 2"), "{stdout}");
    let _ = Scope::global();
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failure_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    let err = one_line_error(&run(
        &["--db", missing.to_str().expect("utf8"), "verify"],
        None,
    ));
    assert!(err.contains("no database"), "{err}");

    database(dir.path());
    let db = dir.path().to_str().expect("utf8");
    let err = one_line_error(&run(&["--db", db, "export", "unknown-doc"], None));
    assert!(err.contains("unknown document"), "{err}");
    let err = one_line_error(&run(&["--db", db, "import"], Some(b"{not json\n")));
    assert!(err.contains("line 1"), "{err}");
    {
        // Held by another handle: what needs the writer says so, in a line.
        let _held = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
        let copy = dir.path().join("held-copy");
        let err = one_line_error(&run(
            &["--db", db, "backup", copy.to_str().expect("utf8")],
            None,
        ));
        assert!(err.contains("held by another process"), "{err}");
    }
    let err = one_line_error(&run(&["--db", db, "backup", db], None));
    assert!(err.contains("already exists"), "{err}");

    // A database written by a newer format version.
    {
        let raw = common::raw_db(dir.path());
        raw.put(b"meta/format_version", 7u32.to_be_bytes())
            .expect("put");
    }
    let err = one_line_error(&run(&["--db", db, "verify"], None));
    assert!(err.contains("format version 7"), "{err}");
}

#[test]
fn inspect_shows_documents_by_type_and_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    database(dir.path());
    let db = dir.path().to_str().expect("utf8");
    let listed = run(&["--db", db, "inspect", "--type", "example/counter"], None);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(text(&listed.stdout).trim(), "doc");
    let shown = run(&["--db", db, "inspect", "doc", "--json"], None);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let json: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(json["header"]["document_type"], "example/counter");
    assert_eq!(json["scopes"]["global"]["state"], 5);
    assert_eq!(json["scopes"]["global"]["revision"], 5);
    let err = one_line_error(&run(&["--db", db, "inspect", "nope", "--json"], None));
    assert!(err.contains("unknown document"), "{err}");
}

#[test]
fn demo_runs_prints_its_table_and_leaves_a_clean_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo");
    let db = db.to_str().expect("utf8");
    let out = run(&["--db", db, "demo"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for row in [
        "documents",
        "operations",
        "actions/s",
        "view reads/s",
        "p50",
        "p99",
        "disk MiB",
    ] {
        assert!(stdout.contains(row), "missing {row}: {stdout}");
    }
    assert!(
        stdout.contains("undo/redo (counter-000)") && stdout.contains("40→35→40"),
        "{stdout}"
    );
    assert!(stdout.contains("DocumentDeleted"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("replicas converged") && l.ends_with("yes")),
        "{stdout}"
    );
    assert!(stdout.contains("\"slug\": \"list-0\""), "{stdout}");
    // The document shown is named by its id, which `inspect` knows.
    let shown = stdout
        .lines()
        .find(|l| l.contains("(slug list-0) as JSON"))
        .and_then(|l| l.split(' ').next())
        .expect("the shown document's line");
    let inspect = run(&["--db", db, "inspect", shown, "--json"], None);
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    let verify = run(&["--db", db, "verify"], None);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    let err = one_line_error(&run(&["--db", db, "demo"], None));
    assert!(err.contains("--fresh"), "{err}");
    let again = run(&["--db", db, "demo", "--fresh"], None);
    assert!(again.status.success(), "{}", text(&again.stderr));
}

#[test]
fn inspect_lists_documents_paged() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let reactor = open(dir.path(), 2);
        for d in ["a", "b", "c"] {
            create_counter(&reactor, d);
        }
    }
    let db = dir.path().to_str().expect("utf8");
    let first = run(&["--db", db, "inspect", "--limit", "2"], None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "a\texample/counter\t1 streams",
            "b\texample/counter\t1 streams",
            "# more: --from 2"
        ]
    );
    let rest = run(
        &["--db", db, "inspect", "--limit", "2", "--from", "2"],
        None,
    );
    assert_eq!(
        text(&rest.stdout).lines().collect::<Vec<_>>(),
        ["c\texample/counter\t1 streams"]
    );
}

/// `bench --scale`: one JSON line per step, each from a child process
/// that checked every document it read, the first step's ratios 1, and
/// figures a real run has (the test debug build is slow: sizes are tiny).
#[test]
fn bench_scale_prints_each_step_with_its_ratio_to_the_first() {
    let out = run(
        &[
            "bench",
            "--scale",
            "--scale-docs",
            "50,200",
            "--scale-actions",
            "3",
            "--json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, docs) in lines.iter().zip([50u64, 200]) {
        let step = &line["step"];
        assert_eq!(step["docs"], docs);
        assert_eq!(step["actions"], docs * 3);
        for figure in ["actions_per_s", "cold_reads_per_s", "peak_rss_mb"] {
            assert!(step[figure].as_f64().expect("a number") > 0.0, "{figure}");
        }
        assert!(step["disk_bytes_per_op"].as_f64().expect("a number") > 0.0);
        assert!(step["p99_ms"].as_f64() >= step["p50_ms"].as_f64());
    }
    // Steps this short run several times and report their median run.
    assert!(
        lines.iter().all(|l| l["runs"].as_u64() > Some(1)),
        "{lines:?}"
    );
    assert_eq!(lines[0]["actions_per_s_ratio"], 1.0);
    assert_eq!(lines[0]["cold_reads_ratio"], 1.0);
    let ratio = lines[1]["actions_per_s_ratio"].as_f64().expect("a number");
    let expected = lines[1]["step"]["actions_per_s"].as_f64().unwrap()
        / lines[0]["step"]["actions_per_s"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9);
}

#[test]
fn bench_prints_the_reactor_metrics() {
    let out = run(
        &[
            "bench",
            "--workload",
            "hot-doc",
            "--hot-actions",
            "40",
            "--durability",
            "synced",
            "--json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().last().expect("a line")).expect("json");
    // W2 awaits each job: under `Synced` every job (and the creation) is
    // its own fsync.
    assert!(line["fsyncs"].as_u64() >= Some(41), "{line}");
    assert!(line["appends_per_fsync"].as_f64() >= Some(1.0), "{line}");
    assert_eq!(line["jobs_failed"], 0);
    assert_eq!(line["queued_jobs"], 0);
    assert!(line["metrics_p99_bound_ms"].as_f64() > Some(0.0), "{line}");
    assert!(line["executor_hit_rate"].as_f64() > Some(0.5), "{line}");
}
