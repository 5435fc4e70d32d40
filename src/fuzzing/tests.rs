//! Every fuzz target's checked-in seed corpus (`fuzz/seeds/<target>`)
//! replayed on each `cargo test`, then mutated (flipped, cut and spliced
//! bytes from a fixed seed), so a decoder that panics on damaged bytes or
//! a stateful target that finds a divergence fails here first, without a
//! fuzzer. `REACTORDB_FUZZ_MUTATIONS=N` raises the mutations per seed.
//!
//! The decoder corpora are valid encodings made by the encoders:
//! `cargo test --lib fuzzing::tests::write_decoder_seeds -- --ignored`
//! writes them again after a format change.

use std::path::PathBuf;

use super::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// xorshift64*: mutations from a fixed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A damaged copy of `seed`: flipped bytes, a cut, an overwritten length
/// byte, or a splice of another seed.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    match rng.below(5) {
        0 | 1 => {
            for _ in 0..=rng.below(3) {
                if !out.is_empty() {
                    let i = rng.below(out.len());
                    out[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => out.truncate(rng.below(out.len() + 1)),
        3 => {
            if !out.is_empty() {
                let i = rng.below(out.len());
                out[i] = [0, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xff][rng.below(7)];
            }
        }
        _ => {
            let cut = rng.below(out.len() + 1);
            out.truncate(cut);
            out.extend_from_slice(&other[rng.below(other.len() + 1)..]);
        }
    }
    out
}

fn mutations(default: usize) -> usize {
    std::env::var("REACTORDB_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Replays a corpus, then `per_seed` mutations of each seed.
fn replay(target: &str, per_seed: usize, run: fn(&[u8])) {
    let seeds = corpus(target);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        run(seed);
    }
    for (i, seed) in seeds.iter().enumerate() {
        let other = &seeds[(i + 1) % seeds.len()];
        for _ in 0..mutations(per_seed) {
            run(&mutate(&mut rng, seed, other));
        }
    }
}

#[test]
fn keys_corpus_and_its_mutations() {
    replay("keys", 2_000, fuzz_keys);
}

#[test]
fn values_corpus_and_its_mutations() {
    replay("values", 2_000, fuzz_values);
}

#[test]
fn import_line_corpus_and_its_mutations() {
    replay("import_line", 100, fuzz_import_line);
}

#[test]
fn merge_corpus_and_its_mutations() {
    replay("merge_model", 20, fuzz_merge);
}

#[test]
fn reactor_corpus_and_its_mutations() {
    replay("reactor_model", 2, fuzz_reactor);
}

#[test]
fn load_corpus_and_its_mutations() {
    replay("load_peer", 4, fuzz_load);
}

/// A length prefix near `u64::MAX` inside a stored value: before decoders
/// had an allocation bound, decoding it aborted the process.
#[test]
fn a_huge_length_prefix_is_refused_not_allocated() {
    // Zeros decode as empty fields, so the length prefix lands on each
    // field position of each decoder in turn.
    for selector in 0..32u8 {
        for version in 1..=3u8 {
            for pad in 0..48 {
                let mut data = vec![selector, version];
                data.resize(2 + pad, 0);
                data.push(0xfd);
                data.extend_from_slice(&(1u64 << 62).to_le_bytes());
                fuzz_values(&data);
            }
        }
    }
}

/// Writes the decoder corpora (`keys`, `values`, `import_line`) from the
/// encoders, and byte seeds for the stateful targets. Run by hand after a
/// format change; the files are checked in.
#[test]
#[ignore]
fn write_decoder_seeds() {
    use crate::codec;
    use crate::keys;
    use crate::model::{
        Branch, Digest, DocumentId, DocumentType, OperationContext, OperationWithContext, Ordinal,
        Scope, SyncUnit,
    };

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write");
    };
    let unit = SyncUnit::new(
        DocumentId::new("doc").expect("valid"),
        Scope::global(),
        Branch::main(),
    );
    let op = crate::merge::check::op("a1", "INCREMENT", 5, b"3");
    let with_context = OperationWithContext {
        operation: op.clone(),
        context: OperationContext {
            document_id: unit.document_id.clone(),
            document_type: DocumentType::new("example/counter").expect("valid"),
            scope: Scope::document(),
            branch: Branch::main(),
            ordinal: Ordinal(9),
        },
    };

    write("keys", "unit", &keys::unit_key(&unit));
    write("keys", "operation", &keys::op_key(&unit, 42));
    write("keys", "ordinal", &keys::ordinal_key(Ordinal(7)));
    write("keys", "op_id", &keys::op_id_key(&op.id, 3, 1));
    write(
        "keys",
        "view_header",
        &keys::view_key(keys::view_tag::HEADER, &["doc", "main"]),
    );

    let mut value = Vec::new();
    let range = codec::encode_operation(
        &mut value,
        &op.id,
        4,
        2,
        op.timestamp_utc_ms,
        &op.state_hash,
        &op.content_hash,
        &op.action,
        &Some("refused".into()),
    );
    codec::set_operation_ordinal(&mut value[range], Ordinal(11));
    write("values", "0_operation", &[&[0u8][..], &value].concat());
    let head = codec::HeadValue {
        next_index: 5,
        last_hash: Digest([1; 32]),
        latest_timestamp_utc_ms: 77,
        document_type: DocumentType::new("example/counter").expect("valid"),
        in_merge_order: true,
    };
    let state = codec::HeadState::keep(1, &5i64.to_le_bytes());
    write(
        "values",
        "1_head",
        &[&[1u8][..], &codec::encode_head(&head, state.as_ref())].concat(),
    );
    let mut ordinal = Vec::new();
    codec::encode_ordinal_into(
        &mut ordinal,
        &codec::OrdinalValue {
            document_type: "example/counter",
            op_key: &keys::op_key(&unit, 4),
        },
    );
    write("values", "2_ordinal", &[&[2u8][..], &ordinal].concat());
    write(
        "values",
        "3_op_id",
        &[&[3u8][..], &codec::encode_op_id(&keys::unit_key(&unit))].concat(),
    );
    let (snapshot, _) = crate::fold::Snapshot {
        revision: 3,
        op_hash: Digest([2; 32]),
        op_ordinal: Ordinal(5),
        previous: Digest::default(),
        model_version: 1,
        state: 3i64.to_le_bytes().to_vec(),
    }
    .encode();
    write("values", "4_snapshot", &[&[4u8][..], &snapshot].concat());
    let record = crate::view::encode_header_record(&crate::view::HeaderRecord {
        revision: 1,
        state: b"null".to_vec(),
    });
    write("values", "5_header", &[&[5u8][..], &record].concat());
    for (k, bytes) in crate::sync::fuzz_seeds(&with_context) {
        let selector = 6 + 8 * k;
        write(
            "values",
            &format!("{selector}_sync"),
            &[&[selector][..], &bytes].concat(),
        );
    }

    // Export lines: a creation and increments, then a line out of place.
    let lines: Vec<String> = (0..3u64)
        .map(|i| {
            let (id, ty, input): (&str, &str, &[u8]) = if i == 0 {
                ("create", "CREATE_DOCUMENT", b"{}")
            } else {
                ("inc", "INCREMENT", b"1")
            };
            let mut operation = crate::merge::check::op(&format!("{id}{i}"), ty, 10 + i, input);
            operation.index = i;
            crate::store::ExportLine {
                document_id: unit.document_id.clone(),
                document_type: DocumentType::new("example/counter").expect("valid"),
                scope: Scope::document(),
                branch: Branch::main(),
                operation,
            }
            .to_json()
        })
        .collect();
    write("import_line", "stream", lines.join("\n").as_bytes());
    write("import_line", "one", lines[1].as_bytes());

    let mut rng = Rng(0x5eed);
    for target in ["reactor_model", "load_peer"] {
        for i in 0..8 {
            let len = 8 + rng.below(120);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            write(target, &format!("seed-{i}"), &bytes);
        }
    }
}
