//! The store against a real sled directory on disk: appends, reads,
//! listing, rebuilding the index, and damage of every kind we can make.

use std::collections::BTreeMap;
use std::path::Path;

use canaryflow_store::{CorruptKind, Error, ListFilter, NewRecord, OpenMode, Status, Store, SummaryFields, WorkflowId};

fn record(at_ms: u64, payload: &[u8]) -> NewRecord {
    NewRecord { kind: 3, kind_version: 1, at_ms, payload: payload.to_vec() }
}

fn fields(name: &str, status: Status) -> SummaryFields {
    SummaryFields { name: name.into(), status, labels: BTreeMap::from([("team".into(), "mesh".into())]) }
}

fn open(path: &Path) -> Store {
    Store::open(path, OpenMode::CreateIfMissing).expect("open store")
}

#[test]
fn appends_are_conditional_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = WorkflowId::new_v7();
    let receipt = store
        .append(id, 0, &[record(10, b"a"), record(11, b"b")], &fields("w", Status::Running))
        .expect("first append");
    assert_eq!((receipt.first_seq, receipt.last_seq), (0, 1));

    // Writing at a taken or a skipped sequence number is refused and writes nothing.
    for wrong in [0, 1, 3] {
        let err = store.append(id, wrong, &[record(12, b"x")], &fields("w", Status::Failed)).expect_err("conflict");
        assert!(matches!(err, Error::Conflict { expected_seq, next_seq: 2, .. } if expected_seq == wrong), "{err}");
    }
    assert_eq!(
        store.require_summary(id).expect("summary").status,
        Status::Running,
        "a refused append changed the summary"
    );

    store.append(id, 2, &[record(12, b"c")], &fields("w", Status::Succeeded)).expect("third");
    let payloads: Vec<Vec<u8>> = store.history(id, 0).expect("history").map(|r| r.expect("record").payload).collect();
    assert_eq!(payloads, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let from_one: Vec<u64> = store.history(id, 1).expect("history").map(|r| r.expect("record").seq).collect();
    assert_eq!(from_one, vec![1, 2]);
    let until_one: Vec<u64> =
        store.history_range(id, 0, Some(1)).expect("history").map(|r| r.expect("record").seq).collect();
    assert_eq!(until_one, vec![0, 1]);

    let summary = store.require_summary(id).expect("summary");
    assert_eq!(
        (summary.created_ms, summary.updated_ms, summary.last_seq, summary.status),
        (10, 12, 2, Status::Succeeded)
    );
    assert!(matches!(store.history(WorkflowId::new_v7(), 0), Err(Error::UnknownWorkflow(_))));
}

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = WorkflowId::new_v7();
    {
        let store = open(dir.path());
        store.append(id, 0, &[record(1, b"kept")], &fields("w", Status::Running)).expect("append");
    }
    let store = Store::open(dir.path(), OpenMode::Existing).expect("reopen");
    let records: Vec<_> = store.history(id, 0).expect("history").collect::<Result<_, _>>().expect("records");
    assert_eq!(records[0].payload, b"kept");
}

#[test]
fn a_dropped_store_can_be_reopened_at_once_in_the_same_process() {
    // sled releases its file lock from its own threads a little after the
    // last handle is dropped; the store waits for that instead of failing.
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = vec![7u8; 16 * 1024];
    for round in 0..20u64 {
        let store = Store::open(dir.path(), OpenMode::CreateIfMissing).expect("reopen at once");
        let id = WorkflowId::from_u128(u128::from(round) + 1);
        for seq in 0..50 {
            store.append(id, seq, &[record(seq, &payload)], &fields("w", Status::Running)).expect("append");
        }
    }
}

#[test]
fn concurrent_appends_share_flushes() {
    // Goal: 16 threads appending to their own workflows all succeed, every
    // record is readable, and group commit issued fewer fsyncs than appends.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let appends_per_thread = 50;
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let id = WorkflowId::new_v7();
                for seq in 0..appends_per_thread {
                    store
                        .append(id, seq, &[record(seq, &seq.to_be_bytes())], &fields("c", Status::Running))
                        .expect("append");
                }
                id
            })
        })
        .collect();
    let ids: Vec<WorkflowId> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    for id in ids {
        assert_eq!(store.history(id, 0).expect("history").count() as u64, appends_per_thread);
    }
    let flushes = store.flush_count();
    assert!(flushes < 16 * appends_per_thread, "{flushes} fsyncs for {} appends", 16 * appends_per_thread);
}

#[test]
fn list_filters_by_status_label_time_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut ids = Vec::new();
    for (index, status) in
        [Status::Running, Status::Succeeded, Status::Paused, Status::Succeeded].into_iter().enumerate()
    {
        let id = WorkflowId::new_v7();
        let mut labels = BTreeMap::from([("index".to_string(), index.to_string())]);
        labels.insert("kind".into(), if index % 2 == 0 { "even" } else { "odd" }.into());
        let at_ms = 1_000 * (index as u64 + 1);
        store
            .append(id, 0, &[record(at_ms, b"x")], &SummaryFields { name: format!("w{index}"), status, labels })
            .expect("append");
        ids.push(id);
    }
    let names = |filter: ListFilter| -> Vec<String> {
        store.list(&filter).expect("list").into_iter().map(|s| s.name).collect()
    };
    assert_eq!(names(ListFilter::default()), ["w0", "w1", "w2", "w3"]);
    assert_eq!(names(ListFilter { statuses: vec![Status::Succeeded], ..Default::default() }), ["w1", "w3"]);
    assert_eq!(
        names(ListFilter { labels: BTreeMap::from([("kind".into(), "even".into())]), ..Default::default() }),
        ["w0", "w2"]
    );
    assert_eq!(names(ListFilter { created_before_ms: Some(2_500), ..Default::default() }), ["w0", "w1"]);
    assert_eq!(
        names(ListFilter { created_from_ms: Some(2_000), created_before_ms: Some(4_000), ..Default::default() }),
        ["w1", "w2"]
    );
    assert_eq!(
        names(ListFilter { limit: Some(1), statuses: vec![Status::Succeeded, Status::Paused], ..Default::default() }),
        ["w1"]
    );
}

#[test]
fn the_summary_index_can_be_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = WorkflowId::new_v7();
    {
        let store = open(dir.path());
        store
            .append(id, 0, &[record(5, b"start"), record(6, b"done")], &fields("rebuilt", Status::Succeeded))
            .expect("append");
    }
    wipe_tree(dir.path(), "summaries");
    let store = Store::open(dir.path(), OpenMode::Existing).expect("reopen");
    assert!(store.summary(id).expect("read").is_none(), "the index was wiped");
    let (report, _) = {
        drop(store);
        Store::verify(dir.path()).expect("verify runs")
    };
    assert!(
        report.problems.iter().any(|p| p.workflow_id == Some(id) && p.what.contains("no entry in the summary index")),
        "{report:?}"
    );

    let store = Store::open(dir.path(), OpenMode::Existing).expect("reopen");
    let rebuilt = store
        .rebuild_summaries(|_, records| {
            let last = records.last().expect("a record").expect("readable");
            let status = if last.payload == b"done" { Status::Succeeded } else { Status::Running };
            Ok(SummaryFields { name: "rebuilt".into(), status, labels: BTreeMap::new() })
        })
        .expect("rebuild");
    assert_eq!(rebuilt, 1);
    let summary = store.require_summary(id).expect("summary");
    assert_eq!(
        (summary.status, summary.last_seq, summary.created_ms, summary.updated_ms),
        (Status::Succeeded, 1, 5, 6)
    );
}

#[test]
fn a_damaged_record_is_named_and_other_workflows_stay_readable() {
    // Goal: a record whose bytes changed after it was written (sled's own
    // checks passed, ours must not) is an error naming workflow and
    // sequence; its neighbours and other workflows still read.
    let dir = tempfile::tempdir().expect("tempdir");
    let (damaged_id, healthy_id) = (WorkflowId::new_v7(), WorkflowId::new_v7());
    {
        let store = open(dir.path());
        for id in [damaged_id, healthy_id] {
            for seq in 0..4 {
                store.append(id, seq, &[record(seq, b"payload")], &fields("w", Status::Running)).expect("append");
            }
        }
    }
    rewrite_value(dir.path(), damaged_id, 2, |value| value[52] ^= 0x01);

    let store = Store::open(dir.path(), OpenMode::Existing).expect("reopen");
    let results: Vec<_> = store.history(damaged_id, 0).expect("history").collect();
    assert!(results[0].is_ok() && results[1].is_ok());
    match &results[2] {
        Err(Error::Corrupt { workflow_id, seq: 2, kind: CorruptKind::Checksum { .. } }) => {
            assert_eq!(*workflow_id, damaged_id)
        }
        other => panic!("expected a checksum error at sequence 2, got {other:?}"),
    }
    assert_eq!(store.history(healthy_id, 0).expect("history").filter(Result::is_ok).count(), 4);
    drop(store);

    let (report, _) = Store::verify(dir.path()).expect("verify runs");
    assert!(!report.problems.is_empty());
    for problem in &report.problems {
        assert_eq!((problem.workflow_id, problem.seq), (Some(damaged_id), Some(2)), "{problem}");
    }
    assert!(report.problems.iter().any(|p| p.what.contains("checksum")), "{report:#?}");
}

#[test]
fn a_missing_record_is_refused_at_open_and_then_a_gap_not_a_silent_skip() {
    // Goal: a record that vanishes from sled's view (here removed behind the
    // store's back) stops the store at open with the record named; once an
    // operator accepts the loss, reads report the gap instead of skipping it.
    let dir = tempfile::tempdir().expect("tempdir");
    let id = WorkflowId::new_v7();
    {
        let store = open(dir.path());
        for seq in 0..5 {
            store.append(id, seq, &[record(seq, b"p")], &fields("w", Status::Running)).expect("append");
        }
    }
    remove_record(dir.path(), id, 3);
    let err = Store::open(dir.path(), OpenMode::Existing).expect_err("refused");
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
    assert!(err.to_string().contains(&format!("workflow {id}, sequence 3")), "{err}");
    let again = Store::open(dir.path(), OpenMode::Existing).expect_err("still refused after sled rewrote its files");
    assert!(matches!(again, Error::Damaged { .. }), "{again}");

    let (report, _) = Store::verify(dir.path()).expect("verify runs");
    assert!(report.problems.iter().any(|p| p.workflow_id == Some(id) && p.seq == Some(3)), "{report:#?}");

    assert!(Store::accept_damage(dir.path()).expect("accept"));
    let store = Store::open(dir.path(), OpenMode::Existing).expect("opens once accepted");
    let err = store.history(id, 0).expect("history").find_map(Result::err).expect("a gap error");
    assert!(matches!(err, Error::Corrupt { seq: 3, kind: CorruptKind::Gap { next_found: 4 }, .. }), "{err}");
}

#[test]
fn a_workflows_missing_tail_is_unacknowledged_while_the_watermark_holds() {
    // Goal: after a crash, sled may drop a write it had not yet flushed
    // while a complete copy sits in its files. That is not a loss: while
    // the watermark's record (the newest flushed) is there, records missing
    // past a workflow's last one were never acknowledged. A record missing
    // before a later one of its workflow still is (previous test).
    let dir = tempfile::tempdir().expect("tempdir");
    let (cut, other) = (WorkflowId::new_v7(), WorkflowId::new_v7());
    {
        let store = open(dir.path());
        for seq in 0..3 {
            store.append(cut, seq, &[record(seq, b"p")], &fields("cut", Status::Running)).expect("append");
        }
    }
    let summary_before =
        raw_db(dir.path()).open_tree("summaries").expect("summaries").get(cut.as_bytes()).expect("get");
    {
        let store = open(dir.path());
        store.append(cut, 3, &[record(3, b"p")], &fields("cut", Status::Running)).expect("append");
        for seq in 0..3 {
            store.append(other, seq, &[record(seq, b"p")], &fields("other", Status::Running)).expect("append");
        }
    }
    // The watermark names (other, 2). sled drops the cut workflow's last
    // append, record and summary update together (one transaction).
    remove_record(dir.path(), cut, 3);
    {
        let db = raw_db(dir.path());
        let summaries = db.open_tree("summaries").expect("summaries");
        summaries.insert(cut.as_bytes(), summary_before.expect("a summary after 3 appends")).expect("restore");
        db.flush().expect("flush");
    }
    let store = Store::open(dir.path(), OpenMode::Existing).expect("an unacknowledged tail is no damage");
    let seqs: Vec<u64> = store.history(cut, 0).expect("history").map(|r| r.expect("record").seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    drop(store);
    let (report, _) = Store::verify(dir.path()).expect("verify runs");
    assert!(report.is_clean(), "{report:#?}");

    // Without the watermark's record, the same missing tail is refused.
    remove_record(dir.path(), other, 2);
    let err = Store::open(dir.path(), OpenMode::Existing).expect_err("refused");
    assert!(matches!(err, Error::Damaged { .. } | Error::LogCorrupt { .. }), "{err}");
}

#[test]
fn a_lost_tail_is_refused_by_the_watermark() {
    // Goal: even with no raw copy left to compare with, a history that ends
    // before the newest record known durable is refused at open.
    let dir = tempfile::tempdir().expect("tempdir");
    let id = WorkflowId::new_v7();
    {
        let store = open(dir.path());
        for seq in 0..3 {
            store.append(id, seq, &[record(seq, b"p")], &fields("w", Status::Running)).expect("append");
        }
    }
    // The watermark names (id, 2). Point it at a record that sled does not
    // have, as if sled's recovery had dropped it and zeroed every copy.
    let mut watermark = id.as_bytes().to_vec();
    watermark.extend_from_slice(&7u64.to_be_bytes());
    watermark.extend_from_slice(&crc32c::crc32c(&watermark).to_be_bytes());
    std::fs::write(dir.path().join("watermark"), watermark).expect("write watermark");
    let err = Store::open(dir.path(), OpenMode::Existing).expect_err("refused");
    assert!(err.to_string().contains("sequence 7 was flushed, and is gone"), "{err}");
}

#[test]
fn bytes_flipped_in_the_sled_files_are_traced_to_the_record() {
    // Goal: damage the log file itself. sled refuses to open it; verify
    // must still say which workflow and sequence number were hit.
    let dir = tempfile::tempdir().expect("tempdir");
    let id = WorkflowId::new_v7();
    let marker = b"FIND-ME-IN-THE-RAW-FILE";
    {
        let store = open(dir.path());
        for seq in 0..20u64 {
            let payload: &[u8] = if seq == 11 { marker } else { b"ordinary payload" };
            store.append(id, seq, &[record(seq, payload)], &fields("w", Status::Running)).expect("append");
        }
    }
    let db_file = dir.path().join("log").join("db");
    let mut bytes = std::fs::read(&db_file).expect("read db");
    // sled rewrites a tree node on every change, so the log holds several
    // copies of the record; the newest one is the live one.
    let at = bytes.windows(marker.len()).rposition(|w| w == marker).expect("payload is stored raw");
    bytes[at + 3] ^= 0xff;
    std::fs::write(&db_file, bytes).expect("write db");

    // Depending on where the frame sits, sled either refuses to open or
    // opens with everything after the damaged frame dropped; the store
    // must refuse in both cases, never carry on with a shortened history.
    let err = Store::open(dir.path(), OpenMode::Existing).expect_err("the damage is noticed at open");
    assert!(matches!(err, Error::LogCorrupt { .. } | Error::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("canaryflow verify"), "the error says what to do: {err}");

    let (report, _) = Store::verify(dir.path()).expect("verify runs");
    assert!(!report.is_clean());
    let named: Vec<_> = report.problems.iter().filter(|p| p.workflow_id == Some(id) && p.seq == Some(11)).collect();
    assert_eq!(named.len(), 1, "{report:#?}");
    assert!(named[0].what.contains("log/db byte"), "{}", named[0]);
}

#[test]
fn verify_of_a_healthy_directory_is_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for index in 0..30u64 {
            let id = WorkflowId::new_v7();
            for seq in 0..3 {
                store
                    .append(id, seq, &[record(index, b"payload of a healthy record")], &fields("w", Status::Running))
                    .expect("append");
            }
        }
    }
    let (report, store) = Store::verify(dir.path()).expect("verify runs");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.workflows, report.records_ok), (30, 90));
    assert!(store.is_some());
}

/// sled itself, behind the store's back, opened as the store opens it.
fn raw_db(path: &Path) -> sled::Db {
    canaryflow_store::open_sled(&path.join("log")).expect("open sled directly")
}

fn key(id: WorkflowId, seq: u64) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn rewrite_value(path: &Path, id: WorkflowId, seq: u64, change: impl Fn(&mut Vec<u8>)) {
    let db = raw_db(path);
    let events = db.open_tree("events").expect("events tree");
    let mut value = events.get(key(id, seq)).expect("get").expect("present").to_vec();
    change(&mut value);
    events.insert(key(id, seq), value).expect("insert");
    db.flush().expect("flush");
}

fn remove_record(path: &Path, id: WorkflowId, seq: u64) {
    let db = raw_db(path);
    db.open_tree("events").expect("events").remove(key(id, seq)).expect("remove");
    db.flush().expect("flush");
}

fn wipe_tree(path: &Path, name: &str) {
    let db = raw_db(path);
    db.open_tree(name).expect("tree").clear().expect("clear");
    db.flush().expect("flush");
}
