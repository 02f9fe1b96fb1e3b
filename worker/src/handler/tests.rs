use super::*;
use orderly_common::limits::ORDER_ID_BYTES_MAX;
use orderly_common::OrderKey;

fn order(id: &str, items: &[&[u8]]) -> Dispatch {
    Dispatch {
        order: OrderKey::new("p1", id),
        attempt: 2,
        redelivered: true,
        items: items.iter().map(|i| ByteBuf::from(i.to_vec())).collect(),
    }
}

fn exec(command: String) -> Handler {
    Handler::Exec { command }
}

#[test]
fn json_embeds_items_byte_for_byte() {
    let items: &[&[u8]] = &[b"{\"b\": 1,  \"a\":2}", b" [1, 2.50] \n", b"\"tab\\t\""];
    let json = order_json(&order("o\"1\n", items)).expect("valid items");
    let text = String::from_utf8(json.clone()).expect("utf-8");
    for item in items {
        assert!(text.contains(std::str::from_utf8(item).expect("utf-8")), "{text}");
    }
    let value: serde_json::Value = serde_json::from_slice(&json).expect("the whole object is JSON");
    assert_eq!(value["producer"], "p1");
    assert_eq!(value["id"], "o\"1\n");
    assert_eq!(value["attempt"], 2);
    assert_eq!(value["redelivered"], true);
    assert_eq!(value["items"][1][1], 2.5);
}

#[test]
fn non_json_item_is_refused_for_good() {
    let failure = Handler::Noop.run(&order("o", &[b"{}", b"{}"])).err();
    assert_eq!(failure, None, "noop does not even look");
    for handler in [exec("true".into()), Handler::Sink { dir: std::env::temp_dir() }] {
        let failure = handler.run(&order("o", &[b"{}", b"{not json"])).expect_err("refused");
        assert!(!failure.retry);
        assert!(failure.reason.starts_with("item 1 is not valid JSON: "), "{}", failure.reason);
    }
}

#[test]
fn items_sha256_frames_each_item_with_its_length() {
    let empty = items_sha256(&[]);
    assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let one = items_sha256(&[ByteBuf::from(b"ab".to_vec())]);
    let two = items_sha256(&[ByteBuf::from(b"a".to_vec()), ByteBuf::from(b"b".to_vec())]);
    assert_ne!(one, two);
    let manual = hex::encode(Sha256::digest(b"\x00\x00\x00\x02ab"));
    assert_eq!(one, manual);
}

#[test]
fn sink_writes_the_file_and_the_log_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = Handler::Sink { dir: dir.path().to_path_buf() };
    let dispatch = order("a/b\tc", &[b"{\"x\":1}", b"2"]);
    handler.run(&dispatch).expect("sink ok");
    let path = dir.path().join("p1").join("a%2Fb%09c.json");
    let written = fs::read(&path).expect("order file exists");
    assert_eq!(written, order_json(&dispatch).expect("json"));
    let log = fs::read_to_string(dir.path().join(DELIVERIES_LOG)).expect("log exists");
    assert_eq!(log, format!("p1\ta%2Fb%09c\t2\t{}\n", items_sha256(&dispatch.items)));
    // A redelivery rewrites the file and logs a second line.
    handler.run(&dispatch).expect("sink ok again");
    let log = fs::read_to_string(dir.path().join(DELIVERIES_LOG)).expect("log exists");
    assert_eq!(log.lines().count(), 2);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("p1"))
        .expect("producer dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
}

#[test]
fn sink_appends_whole_lines_from_many_threads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = Handler::Sink { dir: dir.path().to_path_buf() };
    std::thread::scope(|scope| {
        for t in 0..8 {
            let handler = &handler;
            scope.spawn(move || {
                for n in 0..10 {
                    handler.run(&order(&format!("{t}-{n}"), &[b"{}"])).expect("sink ok");
                }
            });
        }
    });
    let log = fs::read_to_string(dir.path().join(DELIVERIES_LOG)).expect("log exists");
    assert_eq!(log.lines().count(), 80);
    assert!(log.lines().all(|l| l.split('\t').count() == 4));
}

#[test]
fn sink_names_that_fit_are_unchanged() {
    assert_eq!(sink_file_name("order-1"), "order-1.json");
    let longest_plain = "x".repeat(FILE_NAME_BYTES_MAX - SINK_FILE_EXTENSION.len());
    assert_eq!(sink_file_name(&longest_plain), format!("{longest_plain}.json"));
}

/// Attack 8: an id of the maximum length whose escaped name is far over
/// NAME_MAX is written under a hashed name and acked, not dead-lettered.
#[test]
fn sink_writes_ids_too_long_for_a_file_name_under_a_hashed_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = Handler::Sink { dir: dir.path().to_path_buf() };
    let id = "/é".repeat(ORDER_ID_BYTES_MAX / 3) + &"a".repeat(ORDER_ID_BYTES_MAX % 3);
    assert_eq!(id.len(), ORDER_ID_BYTES_MAX);
    let dispatch = order(&id, &[b"{\"x\":1}"]);
    assert_eq!(handler.run(&dispatch), Ok(()), "acked");
    let name = sink_file_name(&id);
    assert!(name.len() <= FILE_NAME_BYTES_MAX, "{name}");
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    assert!(name.ends_with(&format!("~{digest}.json")), "{name}");
    assert!(file_safe(&id).starts_with(name.split('~').next().expect("prefix")));
    let written = fs::read(dir.path().join("p1").join(&name)).expect("order file exists");
    assert_eq!(written, order_json(&dispatch).expect("json"));
    // The log line still names the order exactly.
    let log = fs::read_to_string(dir.path().join(DELIVERIES_LOG)).expect("log exists");
    assert_eq!(log, format!("p1\t{}\t2\t{}\n", file_safe(&id), items_sha256(&dispatch.items)));
}

#[test]
fn sink_hashed_names_differ_for_ids_sharing_a_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = Handler::Sink { dir: dir.path().to_path_buf() };
    let (a, b) = ("y".repeat(ORDER_ID_BYTES_MAX - 1) + "1", "y".repeat(ORDER_ID_BYTES_MAX - 1) + "2");
    assert_ne!(sink_file_name(&a), sink_file_name(&b));
    for id in [&a, &b] {
        handler.run(&order(id, &[id.len().to_string().as_bytes()])).expect("sink ok");
    }
    let files = fs::read_dir(dir.path().join("p1")).expect("producer dir").count();
    assert_eq!(files, 2);
}

#[test]
fn sink_hashed_names_never_cut_an_escape() {
    // Shift where the escapes fall, so one straddles the cut each time.
    for pad in 0..3 {
        let id = "a".repeat(pad) + &"/".repeat(ORDER_ID_BYTES_MAX - pad);
        let name = sink_file_name(&id);
        let prefix = name.split('~').next().expect("prefix");
        assert!(prefix.len() <= HASHED_NAME_PREFIX_BYTES_MAX && prefix.len() + 2 >= HASHED_NAME_PREFIX_BYTES_MAX);
        assert!(prefix.ends_with("%2F"), "{prefix}");
    }
}

#[test]
fn sink_io_errors_are_retryable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, b"x").expect("write");
    let failure = Handler::Sink { dir: not_a_dir }.run(&order("o", &[b"{}"])).expect_err("cannot write");
    assert!(failure.retry, "{failure}");
}

#[test]
fn exec_exit_zero_acks() {
    assert_eq!(exec("exit 0".into()).run(&order("o", &[b"{}"])), Ok(()));
}

#[test]
fn exec_nonzero_exit_is_retryable_with_stderr_tail() {
    let command = "echo starting >&2; head -c 1000 /dev/zero | tr '\\0' x >&2; echo ' it broke' >&2; exit 3";
    let failure = exec(command.into()).run(&order("o", &[b"{}"])).expect_err("exit 3");
    assert!(failure.retry);
    assert!(failure.reason.starts_with("exit code 3: "), "{}", failure.reason);
    assert!(failure.reason.ends_with("it broke"), "{}", failure.reason);
    assert!(!failure.reason.contains("starting"), "only the tail is kept: {}", failure.reason);
    assert!(failure.reason.len() <= STDERR_TAIL_BYTES_MAX + 20);
}

#[test]
fn exec_gets_the_json_on_stdin_and_the_env() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.json");
    let env = dir.path().join("env.txt");
    let command = format!(
        "cat > '{}' && printf '%s|%s|%s|%s' \"$ORDERLY_ORDER_ID\" \"$ORDERLY_PRODUCER\" \"$ORDERLY_ATTEMPT\" \
         \"$ORDERLY_REDELIVERED\" > '{}'",
        out.display(),
        env.display()
    );
    let dispatch = order("o-1", &[b"{\"k\": \"v\"}"]);
    exec(command).run(&dispatch).expect("command ok");
    assert_eq!(fs::read(&out).expect("stdin copied"), order_json(&dispatch).expect("json"));
    assert_eq!(fs::read_to_string(&env).expect("env written"), "o-1|p1|2|true");
}

#[test]
fn exec_that_ignores_a_large_stdin_does_not_hang() {
    let big = format!("\"{}\"", "x".repeat(1 << 20));
    let dispatch = order("o", &[big.as_bytes()]);
    assert_eq!(exec("exit 0".into()).run(&dispatch), Ok(()));
    let failure = exec("exit 9".into()).run(&dispatch).expect_err("exit 9");
    assert_eq!(failure.reason, "exit code 9");
}

#[test]
fn exec_killed_by_a_signal_is_retryable() {
    let failure = exec("kill -9 $$".into()).run(&order("o", &[b"{}"])).expect_err("killed");
    assert!(failure.retry);
    assert!(failure.reason.contains("signal"), "{}", failure.reason);
}

#[test]
fn prepare_creates_the_sink_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = dir.path().join("a").join("b");
    Handler::Sink { dir: sink.clone() }.prepare().expect("created");
    assert!(sink.is_dir());
    let file = dir.path().join("file");
    fs::write(&file, b"x").expect("write");
    assert!(Handler::Sink { dir: file.join("sub") }.prepare().is_err());
}

/// Pins the documented format; `tests/helpers/check_sinks.py` computes the
/// same name (this value came from it).
#[test]
fn sink_hashed_name_format_is_stable() {
    let id = "a".to_owned() + &"/".repeat(ORDER_ID_BYTES_MAX - 1);
    let expected =
        "a".to_owned() + &"%2F".repeat(61) + "~44fb227ed7c2bcd3e0034c7446479139423baa91b5204940d7ed6c8d2c022220.json";
    assert_eq!(sink_file_name(&id), expected);
}
