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
        BTreeSet::from([entry_name(seq), format!("{}.1", entry_name(seq))])
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
