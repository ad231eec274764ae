use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn request(n: usize) -> SpooledRequest {
    SpooledRequest {
        path_and_query: format!("/ingest?name=app{n}.cpu&from=1&until=2"),
        headers: vec![
            ("content-type".to_owned(), "binary/octet-stream".to_owned()),
            ("x-scope-orgid".to_owned(), format!("tenant-{n}")),
        ],
        body: Bytes::from(format!("body {n}")),
    }
}

fn open(dir: &Path) -> Spool {
    Spool::open(dir, 1 << 30).expect("open")
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect()
}

fn drain(spool: &Spool) -> Vec<(u64, SpooledRequest)> {
    let mut out = Vec::new();
    while let Some((seq, req)) = spool.peek().expect("peek") {
        spool.remove(seq).expect("remove");
        out.push((seq, req));
    }
    out
}

#[test]
fn entries_come_out_in_the_order_they_went_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let seqs: Vec<u64> = (0..5)
        .map(|n| spool.push(&request(n)).expect("push"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(spool.len(), 5);
    let out = drain(&spool);
    assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs);
    assert_eq!(
        out.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        (0..5).map(request).collect::<Vec<_>>()
    );
    assert!(spool.is_empty());
    assert_eq!(spool.bytes(), 0);
}

#[test]
fn sequence_numbers_keep_increasing_across_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = {
        let spool = open(tmp.path());
        let a = spool.push(&request(1)).expect("push");
        let b = spool.push(&request(2)).expect("push");
        // Deliver the older one so the highest is not also the oldest.
        spool.remove(a).expect("remove");
        b
    };
    let spool = open(tmp.path());
    let next = spool.push(&request(3)).expect("push");
    assert!(next > first, "{next} > {first}");
    assert_eq!(
        drain(&spool).iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [first, next]
    );
}

#[test]
fn entries_survive_reopen_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let req = SpooledRequest {
        path_and_query: "/push.v1.PusherService/Push?a=%20b&c=\u{e9}\n\"q\"".to_owned(),
        headers: vec![
            ("content-type".to_owned(), "application/proto".to_owned()),
            ("connect-protocol-version".to_owned(), "1".to_owned()),
            (
                "x-odd".to_owned(),
                "tab\tnewline\n quote\" unicode \u{1F525}".to_owned(),
            ),
            ("x-odd".to_owned(), String::new()),
        ],
        body: Bytes::from((0..=255u8).chain((0..=255u8).rev()).collect::<Vec<_>>()),
    };
    let (seq, bytes) = {
        let spool = open(tmp.path());
        (spool.push(&req).expect("push"), spool.bytes())
    };
    let spool = open(tmp.path());
    assert_eq!(spool.len(), 1);
    assert_eq!(spool.bytes(), bytes);
    assert_eq!(spool.peek().expect("peek"), Some((seq, req)));
}

#[test]
fn entry_files_have_the_documented_layout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let req = SpooledRequest {
        path_and_query: "/ingest".to_owned(),
        headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
        body: Bytes::from_static(b"hello"),
    };
    let seq = spool.push(&req).expect("push");
    let data = fs::read(tmp.path().join(entry_name(seq))).expect("read");
    let mut expected = b"pyrogate-spool v1\n{\"pathAndQuery\":\"/ingest\",\"headers\":[[\"content-type\",\"text/plain\"]],\"bodyLen\":5}\nhello".to_vec();
    let digest = crate::core::crypto::sha256(&expected);
    expected.extend_from_slice(&digest);
    assert_eq!(data, expected);
    assert_eq!(spool.bytes(), data.len() as u64);
    assert_eq!(entry_name(42), "00000000000000000042.req");
}

#[test]
fn a_push_past_max_bytes_is_full_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let size = {
        let probe = tempfile::tempdir().expect("tempdir");
        let spool = open(probe.path());
        spool.push(&request(1)).expect("push");
        spool.bytes()
    };
    let spool = Spool::open(tmp.path(), 2 * size).expect("open");
    spool.push(&request(1)).expect("first fits");
    spool.push(&request(2)).expect("second fits exactly");
    let before = names(tmp.path());
    match spool.push(&request(3)) {
        Err(SpoolError::Full { max_bytes }) => assert_eq!(max_bytes, 2 * size),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(names(tmp.path()), before);
    assert_eq!(spool.len(), 2);
    assert_eq!(spool.bytes(), 2 * size);

    let tiny = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(tiny.path(), size - 1).expect("open");
    assert!(matches!(
        spool.push(&request(1)),
        Err(SpoolError::Full { .. })
    ));
    assert!(names(tiny.path()).is_empty());
    assert!(spool.is_empty());
}

#[test]
fn removing_makes_room_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let probe = open(tmp.path());
    let seq = probe.push(&request(1)).expect("push");
    let size = probe.bytes();
    probe.remove(seq).expect("remove");
    drop(probe);
    let spool = Spool::open(tmp.path(), size).expect("open");
    let a = spool.push(&request(1)).expect("push");
    assert!(matches!(
        spool.push(&request(2)),
        Err(SpoolError::Full { .. })
    ));
    spool.remove(a).expect("remove");
    spool.push(&request(2)).expect("fits after remove");
}

#[test]
fn a_leftover_temp_file_is_removed_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seq = open(tmp.path()).push(&request(1)).expect("push");
    let leftover = tmp
        .path()
        .join(format!("{}{TEMP_EXT}", entry_name(seq + 1)));
    fs::write(&leftover, b"pyrogate-spool v1\n{\"pathAnd").expect("write");
    let spool = open(tmp.path());
    assert!(!leftover.exists());
    assert_eq!(names(tmp.path()), BTreeSet::from([entry_name(seq)]));
    assert_eq!(spool.len(), 1);
    assert_eq!(spool.peek().expect("peek").map(|(s, _)| s), Some(seq));
}

#[test]
fn truncated_and_bit_flipped_entries_are_moved_aside_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seqs: Vec<u64> = {
        let spool = open(tmp.path());
        (0..4)
            .map(|n| spool.push(&request(n)).expect("push"))
            .collect()
    };
    let truncated = tmp.path().join(entry_name(seqs[1]));
    let data = fs::read(&truncated).expect("read");
    fs::write(&truncated, &data[..data.len() - 10]).expect("truncate");
    let flipped = tmp.path().join(entry_name(seqs[2]));
    let mut data = fs::read(&flipped).expect("read");
    let middle = data.len() / 2;
    data[middle] ^= 0x04;
    fs::write(&flipped, &data).expect("flip");

    let spool = open(tmp.path());
    assert_eq!(spool.len(), 2);
    assert_eq!(
        names(&tmp.path().join(CORRUPT_DIR)),
        BTreeSet::from([entry_name(seqs[1]), entry_name(seqs[2])])
    );
    assert!(!truncated.exists() && !flipped.exists());
    let out = drain(&spool);
    assert_eq!(
        out,
        vec![(seqs[0], request(0)), (seqs[3], request(3))],
        "the rest stay readable, in order"
    );
}

#[test]
fn an_entry_damaged_after_open_is_moved_aside_when_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let a = spool.push(&request(1)).expect("push");
    let b = spool.push(&request(2)).expect("push");
    let path = tmp.path().join(entry_name(a));
    let mut data = fs::read(&path).expect("read");
    data[0] ^= 0x01;
    fs::write(&path, &data).expect("damage");

    assert_eq!(spool.peek().expect("peek"), Some((b, request(2))));
    assert_eq!(spool.len(), 1);
    assert_eq!(
        names(&tmp.path().join(CORRUPT_DIR)),
        BTreeSet::from([entry_name(a)])
    );
    // Removing the skipped entry later is harmless.
    spool.remove(a).expect("remove");
    assert_eq!(spool.len(), 1);
}

#[test]
fn a_quarantined_number_is_not_reused_after_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seq = open(tmp.path()).push(&request(1)).expect("push");
    let path = tmp.path().join(entry_name(seq));
    fs::write(&path, b"garbage").expect("damage");
    assert!(open(tmp.path()).is_empty());
    // Same name again in corrupt/ gets a counter instead of overwriting.
    fs::write(&path, b"garbage").expect("damage");
    let spool = open(tmp.path());
    assert_eq!(
        names(&tmp.path().join(CORRUPT_DIR)),
        BTreeSet::from([entry_name(seq), format!("{seq:020}-1.req")])
    );
    assert!(spool.push(&request(2)).expect("push") > seq);
}

#[test]
fn remove_then_peek_gives_the_next() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let a = spool.push(&request(1)).expect("push");
    let b = spool.push(&request(2)).expect("push");
    assert_eq!(spool.peek().expect("peek"), Some((a, request(1))));
    assert_eq!(
        spool.peek().expect("peek"),
        Some((a, request(1))),
        "peek does not consume"
    );
    spool.remove(a).expect("remove");
    assert!(!tmp.path().join(entry_name(a)).exists());
    assert_eq!(spool.peek().expect("peek"), Some((b, request(2))));
    spool.remove(b).expect("remove");
    assert_eq!(spool.peek().expect("peek"), None);
    spool.remove(b).expect("removing twice is fine");
}

#[test]
fn an_empty_body_works() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let req = SpooledRequest {
        path_and_query: String::new(),
        headers: Vec::new(),
        body: Bytes::new(),
    };
    let seq = open(tmp.path()).push(&req).expect("push");
    let spool = open(tmp.path());
    assert_eq!(spool.peek().expect("peek"), Some((seq, req)));
}

#[test]
fn concurrent_pushes_get_distinct_increasing_numbers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let per_thread: Vec<Vec<(u64, SpooledRequest)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let spool = &spool;
                s.spawn(move || {
                    (0..100)
                        .map(|i| {
                            let req = request(t * 1000 + i);
                            (spool.push(&req).expect("push"), req)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for pushes in &per_thread {
        assert!(pushes.windows(2).all(|w| w[0].0 < w[1].0));
    }
    let mut expected: Vec<(u64, SpooledRequest)> = per_thread.into_iter().flatten().collect();
    expected.sort_by_key(|(seq, _)| *seq);
    assert_eq!(expected.len(), 400);
    assert!(expected.windows(2).all(|w| w[0].0 < w[1].0), "distinct");
    assert_eq!(spool.len(), 400);

    let reopened = open(tmp.path());
    assert_eq!(reopened.bytes(), spool.bytes());
    assert_eq!(drain(&reopened), expected);
}

#[test]
fn files_are_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let seq = open(&dir).push(&request(1)).expect("push");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(entry_name(seq))), 0o600);
}

#[test]
fn entry_names_are_strict() {
    assert_eq!(parse_entry_name("00000000000000000042.req"), Some(42));
    assert_eq!(parse_entry_name(&entry_name(u64::MAX)), Some(u64::MAX));
    for bad in [
        "42.req",
        "99999999999999999999.req",
        "+0000000000000000042.req",
        "00000000000000000042.req.tmp",
        "00000000000000000042",
    ] {
        assert_eq!(parse_entry_name(bad), None, "{bad}");
    }
}

#[test]
fn unknown_files_are_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("README"), b"hi").expect("write");
    let spool = open(tmp.path());
    assert!(spool.is_empty());
    assert!(tmp.path().join("README").exists());
}

/// Pushes `n` and dead-letters it, as the replay does when the upstream refuses it.
fn dead_letter(spool: &Spool, n: usize) -> u64 {
    let seq = spool.push(&request(n)).expect("push");
    let (first, _) = spool.peek().expect("peek").expect("an entry");
    assert_eq!(first, seq, "dead-letter the entry just pushed");
    spool
        .dead_letter(
            seq,
            &format!("upstream answered 400 Bad Request (entry {seq})"),
        )
        .expect("dead letter");
    seq
}

#[test]
fn dead_letters_are_listed_with_tenant_app_and_reason_and_no_headers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let a = dead_letter(&spool, 1);
    let b = dead_letter(&spool, 2);
    let dead = dead::DeadLetters::new(tmp.path());
    let list = dead.list().expect("list");
    assert_eq!(
        list.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![format!("{a:020}"), format!("{b:020}")]
    );
    let first = &list[0];
    assert_eq!(first.tenant.as_deref(), Some("tenant-1"));
    assert_eq!(first.app.as_deref(), Some("app1.cpu"));
    assert_eq!(first.path.as_deref(), Some("/ingest"), "no query string");
    assert!(first.reason.as_deref().unwrap().contains("400"));
    assert_eq!(first.damaged, None);
    assert_eq!(
        first.bytes,
        fs::metadata(tmp.path().join(DEAD_DIR).join(entry_name(a)))
            .unwrap()
            .len()
    );
    assert!(first.spooled_at.is_some() && first.dead_at.is_some());
    assert_eq!(spool.dead_letters(), 2);
}

#[test]
fn a_spool_without_dead_letters_lists_none() {
    let tmp = tempfile::tempdir().expect("tempdir");
    open(tmp.path());
    assert_eq!(
        dead::DeadLetters::new(tmp.path()).list().expect("list"),
        vec![]
    );
}

#[test]
fn a_retried_dead_letter_joins_the_queue_behind_what_is_waiting_under_a_new_number() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let old = dead_letter(&spool, 1);
    let waiting = spool.push(&request(2)).expect("push");
    let dead = dead::DeadLetters::new(tmp.path());
    // The number alone is enough.
    let letter = dead.retry(&old.to_string()).expect("retry");
    assert_eq!(letter.id, format!("{old:020}"));
    assert!(
        names(&tmp.path().join(DEAD_DIR)).is_empty(),
        "entry and reason moved out"
    );
    assert_eq!(dead.list().expect("list"), vec![]);
    // Not in the queue until the node takes it.
    assert_eq!(spool.len(), 1);
    assert_eq!(spool.adopt_retried().expect("adopt"), 1);
    assert_eq!(spool.adopt_retried().expect("adopt again"), 0);
    assert_eq!(spool.len(), 2);
    assert!(names(&tmp.path().join(RETRY_DIR)).is_empty());
    let out = drain(&spool);
    assert_eq!(out[0], (waiting, request(2)));
    assert!(
        out[1].0 > waiting,
        "a fresh number, after the waiting entry"
    );
    assert_eq!(out[1].1, request(1), "byte for byte");
}

#[test]
fn retried_entries_left_by_a_stopped_node_are_taken_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(tmp.path());
        dead_letter(&spool, 1);
    }
    let (retried, _) = dead::DeadLetters::new(tmp.path())
        .retry_all()
        .expect("retry all");
    assert_eq!(retried.len(), 1);
    let spool = open(tmp.path());
    assert!(spool.is_empty(), "open leaves retry/ alone");
    assert_eq!(spool.adopt_retried().expect("adopt"), 1);
    let out = drain(&spool);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, request(1));
}

#[test]
fn sequence_numbers_continue_after_the_dead_letters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seq = {
        let spool = open(tmp.path());
        dead_letter(&spool, 1)
    };
    // The live spool is empty; the next number still passes the dead letter's, so ids stay
    // unique in dead/.
    let spool = open(tmp.path());
    assert!(spool.push(&request(2)).expect("push") > seq);
}

#[test]
fn a_damaged_dead_letter_is_listed_refused_for_retry_and_can_be_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let seq = dead_letter(&spool, 1);
    let path = tmp.path().join(DEAD_DIR).join(entry_name(seq));
    let mut bytes = fs::read(&path).expect("read");
    bytes[30] ^= 1;
    fs::write(&path, bytes).expect("damage");
    let dead = dead::DeadLetters::new(tmp.path());
    let list = dead.list().expect("list");
    assert!(
        list[0].damaged.as_deref().unwrap().contains("checksum"),
        "{list:?}"
    );
    assert_eq!(list[0].tenant, None, "nothing read from a damaged entry");
    let err = dead
        .retry(&list[0].id)
        .expect_err("retry of a damaged entry");
    assert!(matches!(err, SpoolError::DamagedDeadLetter { .. }), "{err}");
    let (retried, damaged) = dead.retry_all().expect("retry all");
    assert!(retried.is_empty());
    assert_eq!(damaged.len(), 1);
    assert!(path.exists(), "left where it was");
    assert_eq!(dead.drop(&list[0].id).expect("drop"), list[0].id);
    assert!(names(&tmp.path().join(DEAD_DIR)).is_empty());
}

#[test]
fn drop_removes_entries_and_reasons() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    let a = dead_letter(&spool, 1);
    dead_letter(&spool, 2);
    dead_letter(&spool, 3);
    let dead = dead::DeadLetters::new(tmp.path());
    dead.drop(&format!("{a:020}")).expect("drop one");
    assert_eq!(dead.list().expect("list").len(), 2);
    assert_eq!(spool.dead_letters(), 2);
    // A reason whose entry is gone goes with --all too.
    fs::write(
        tmp.path()
            .join(DEAD_DIR)
            .join("00000000000000000999.reason"),
        "x",
    )
    .unwrap();
    assert_eq!(dead.drop_all().expect("drop all").len(), 2);
    assert!(names(&tmp.path().join(DEAD_DIR)).is_empty());
    assert_eq!(spool.dead_letters(), 0);
}

#[test]
fn unknown_or_malformed_ids_are_refused_and_never_leave_dead() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    dead_letter(&spool, 1);
    // Something a bad id could reach if ids were paths.
    fs::write(tmp.path().join("outside.req"), "x").unwrap();
    let dead = dead::DeadLetters::new(tmp.path());
    for id in [
        "999",
        "",
        "-1",
        "../outside",
        "../../etc/passwd",
        "00000000000000000001/../../outside",
        "1-x",
        "abc",
        "123456789012345678901234",
    ] {
        for err in [dead.retry(id).expect_err(id), dead.drop(id).expect_err(id)] {
            assert!(
                matches!(err, SpoolError::NoSuchDeadLetter { .. }),
                "{id}: {err}"
            );
            assert!(err.to_string().contains("spool dead list"), "{err}");
        }
    }
    assert!(tmp.path().join("outside.req").exists());
    assert_eq!(dead.list().expect("list").len(), 1);
}

#[test]
fn colliding_dead_letter_names_keep_the_req_extension() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dead_dir = tmp.path().join(DEAD_DIR);
    fs::create_dir_all(&dead_dir).unwrap();
    let spool = open(tmp.path());
    let seq = spool.push(&request(1)).expect("push");
    // Someone restored an old dead letter under the same name by hand.
    fs::write(dead_dir.join(entry_name(seq)), b"old").unwrap();
    spool.dead_letter(seq, "refused").expect("dead letter");
    assert_eq!(
        names(&dead_dir),
        BTreeSet::from([
            entry_name(seq),
            format!("{seq:020}-1.req"),
            format!("{seq:020}-1.reason")
        ])
    );
    assert_eq!(spool.dead_letters(), 2);
    let list = dead::DeadLetters::new(tmp.path()).list().expect("list");
    assert_eq!(list[1].id, format!("{seq:020}-1"));
    assert_eq!(list[1].app.as_deref(), Some("app1.cpu"));
}

#[test]
fn a_retry_run_as_root_leaves_the_retry_directory_to_the_spools_owner() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(tmp.path());
    dead_letter(&spool, 1);
    if fs::metadata(tmp.path()).unwrap().uid() != 0 {
        eprintln!("skipped: needs root to hand a directory to another user");
        return;
    }
    // The node's user: someone else than the one running the command.
    std::os::unix::fs::chown(tmp.path(), Some(65534), Some(65534)).expect("chown");
    dead::DeadLetters::new(tmp.path())
        .retry_all()
        .expect("retry");
    let retry = fs::metadata(tmp.path().join(RETRY_DIR)).expect("retry/");
    assert_eq!((retry.uid(), retry.gid()), (65534, 65534));
    assert_eq!(retry.mode() & 0o777, 0o700);
}

#[test]
fn pushes_from_many_threads_are_all_durable() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let spool = std::sync::Arc::new(open(tmp.path()));
    let mut seqs = push_together(&spool, 16, 20);
    seqs.dedup();
    assert_eq!(seqs.len(), 320, "every push got its own number");
    drop(spool);
    let reopened = open(tmp.path());
    assert_eq!(reopened.len(), 320, "every acknowledged push is on disk");
}

#[test]
fn claims_hand_out_the_oldest_free_entries_and_released_ones_come_back_first() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let spool = open(tmp.path());
    let seqs: Vec<u64> = (0..5)
        .map(|n| spool.push(&request(n)).expect("push"))
        .collect();
    assert_eq!(spool.claim(2), seqs[..2]);
    assert_eq!(
        spool.claim(2),
        seqs[2..4],
        "claimed entries are not handed out twice"
    );
    spool.release(seqs[1]);
    assert_eq!(
        spool.claim(5),
        vec![seqs[1], seqs[4]],
        "a released entry comes back before newer ones"
    );
    assert_eq!(spool.claim(5), Vec::<u64>::new());
    assert_eq!(spool.read(seqs[0]).expect("read"), Some(request(0)));
    spool.remove(seqs[0]).expect("remove");
    assert_eq!(
        spool.read(seqs[0]).expect("read"),
        None,
        "gone once removed"
    );
    assert_eq!(spool.len(), 4);
    assert!(spool.oldest_at().is_some());
}

/// Pushes from many threads at once, so that they are written as shared batches.
fn push_together(spool: &std::sync::Arc<Spool>, threads: usize, each: usize) -> Vec<u64> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                (0..each)
                    .map(|n| spool.push(&request(t * 1000 + n)).expect("push"))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    seqs
}

#[test]
fn pushes_made_together_share_batch_files_and_each_file_goes_with_its_last_entry() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let spool = std::sync::Arc::new(open(tmp.path()));
    let seqs = push_together(&spool, 16, 20);
    let files = names(tmp.path());
    assert!(
        files.len() < seqs.len(),
        "{} files for {} pushes: none shared a batch",
        files.len(),
        seqs.len()
    );
    // Everything reads back after a restart, each entry under its own number.
    drop(spool);
    let spool = open(tmp.path());
    assert_eq!(spool.len(), seqs.len());
    let mut seen = Vec::new();
    while let Some((seq, req)) = spool.peek().expect("peek") {
        let n: usize = req.path_and_query["/ingest?name=app".len()..]
            .split('.')
            .next()
            .expect("number")
            .parse()
            .expect("number");
        assert_eq!(req, request(n));
        seen.push(seq);
        spool.remove(seq).expect("remove");
    }
    assert_eq!(seen, seqs);
    assert!(
        names(tmp.path()).is_empty(),
        "every batch file went with its last entry"
    );
    assert_eq!(spool.bytes(), 0);
}

#[test]
fn an_entry_of_a_batch_is_dead_lettered_on_its_own_and_the_rest_stay() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let spool = std::sync::Arc::new(open(tmp.path()));
    push_together(&spool, 8, 10);
    let shared = {
        let st = spool.state();
        st.files
            .iter()
            .find(|(_, f)| f.written > 1)
            .map(|(&file, _)| file)
            .expect("a batch of several")
    };
    let path = tmp.path().join(entry_name(shared));
    let before = spool.len();
    let target = spool
        .dead_letter(shared, "upstream said 400")
        .expect("dead letter");
    assert_eq!(spool.len(), before - 1);
    assert!(path.exists(), "the batch file stays for its other entries");
    let kept = fs::read(&target).expect("dead letter file");
    assert!(
        decode(kept).is_ok(),
        "a dead letter is an entry file of its own"
    );
    assert_eq!(
        fs::read_to_string(target.with_extension("reason")).expect("reason"),
        "upstream said 400\n"
    );
    drop(spool);
    assert_eq!(
        open(tmp.path()).len(),
        before - 1,
        "it is not replayed after a restart"
    );
}

#[test]
fn a_good_entry_followed_by_damage_is_kept_and_the_rest_set_aside() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let seq = open(tmp.path()).push(&request(1)).expect("push");
    let path = tmp.path().join(entry_name(seq));
    let mut data = fs::read(&path).expect("read");
    let good = data.len();
    data.extend_from_slice(b"pyrogate-spool v1\n{\"broken");
    fs::write(&path, &data).expect("damage");
    let spool = open(tmp.path());
    assert_eq!(spool.peek().expect("peek"), Some((seq, request(1))));
    let aside = names(&tmp.path().join(CORRUPT_DIR));
    assert_eq!(aside, BTreeSet::from([entry_name(seq + 1)]));
    assert_eq!(
        fs::read(tmp.path().join(CORRUPT_DIR).join(entry_name(seq + 1))).expect("aside"),
        data[good..].to_vec()
    );
    assert!(
        spool.push(&request(2)).expect("push") > seq + 1,
        "numbers set aside are not reused"
    );
}

#[test]
fn entries_removed_from_a_batch_stay_removed_after_a_restart() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let spool = std::sync::Arc::new(open(tmp.path()));
    let seqs = push_together(&spool, 8, 10);
    for &seq in seqs.iter().step_by(2) {
        spool.remove(seq).expect("remove");
    }
    let left = spool.len();
    assert_eq!(left, seqs.len() / 2);
    drop(spool);
    let spool = open(tmp.path());
    assert_eq!(spool.len(), left, "removed entries don't come back");
    let back: Vec<u64> = std::iter::from_fn(|| {
        let (seq, _) = spool.peek().expect("peek")?;
        spool.remove(seq).expect("remove");
        Some(seq)
    })
    .collect();
    assert_eq!(
        back,
        seqs.iter().skip(1).step_by(2).copied().collect::<Vec<_>>()
    );
    assert!(
        names(tmp.path()).is_empty(),
        "batches and their notes are gone"
    );
}

#[test]
fn notes_without_their_batch_are_removed_on_open() {
    let tmp = tempfile::tempdir().expect("temp dir");
    drop(open(tmp.path()));
    fs::write(tmp.path().join("00000000000000000001.done"), "1\n").expect("orphan note");
    let spool = open(tmp.path());
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
    // Numbering starts again at 1, and the new entry is not hidden by the old note.
    let seq = spool.push(&request(1)).expect("push");
    drop(spool);
    assert_eq!(
        open(tmp.path()).peek().expect("peek"),
        Some((seq, request(1)))
    );
}
