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

fn exec(command: String) -> Exec {
    Exec { command, timeout_ms: None }
}

#[test]
fn non_json_item_reaches_exec_and_sink_in_base64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dispatch = order("o", &[b"{}", b"\xff\x00\x01"]);
    let out = dir.path().join("stdin.json");
    exec(format!("cat > '{}'", out.display())).handle(&dispatch).expect("acked");
    let expected = br#""items":[{},{"base64":"/wAB"}],"base64_items":[1]}"#;
    assert!(fs::read(&out).expect("stdin copied").ends_with(expected));
    let sink = Sink { dir: dir.path().join("sink") };
    sink.prepare().expect("sink dir");
    sink.handle(&dispatch).expect("acked");
    assert!(fs::read(dir.path().join("sink/p1/o.json")).expect("written").ends_with(expected));
}

#[test]
fn closures_are_handlers() {
    let handler: Box<dyn Handler> = Box::new(|order: &Dispatch| match order.attempt {
        1 => Ok(()),
        n => Err(Failure::permanent(format!("attempt {n}"))),
    });
    assert_eq!(handler.handle(&order("o", &[])), Err(Failure::permanent("attempt 2")));
    assert_eq!(handler.describe(), "a custom handler");
    assert!(!handler.inline());
    assert!(Noop.inline());
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
    let handler = Sink { dir: dir.path().to_path_buf() };
    let dispatch = order("a/b\tc", &[b"{\"x\":1}", b"2"]);
    handler.handle(&dispatch).expect("sink ok");
    let path = dir.path().join("p1").join("a%2Fb%09c.json");
    let written = fs::read(&path).expect("order file exists");
    assert_eq!(written, order_json(&dispatch));
    let log = fs::read_to_string(dir.path().join(DELIVERIES_LOG)).expect("log exists");
    assert_eq!(log, format!("p1\ta%2Fb%09c\t2\t{}\n", items_sha256(&dispatch.items)));
    // A redelivery rewrites the file and logs a second line.
    handler.handle(&dispatch).expect("sink ok again");
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
    let handler = Sink { dir: dir.path().to_path_buf() };
    std::thread::scope(|scope| {
        for t in 0..8 {
            let handler = &handler;
            scope.spawn(move || {
                for n in 0..10 {
                    handler.handle(&order(&format!("{t}-{n}"), &[b"{}"])).expect("sink ok");
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
    let handler = Sink { dir: dir.path().to_path_buf() };
    let id = "/é".repeat(ORDER_ID_BYTES_MAX / 3) + &"a".repeat(ORDER_ID_BYTES_MAX % 3);
    assert_eq!(id.len(), ORDER_ID_BYTES_MAX);
    let dispatch = order(&id, &[b"{\"x\":1}"]);
    assert_eq!(handler.handle(&dispatch), Ok(()), "acked");
    let name = sink_file_name(&id);
    assert!(name.len() <= FILE_NAME_BYTES_MAX, "{name}");
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    assert!(name.ends_with(&format!("~{digest}.json")), "{name}");
    assert!(file_safe(&id).starts_with(name.split('~').next().expect("prefix")));
    let written = fs::read(dir.path().join("p1").join(&name)).expect("order file exists");
    assert_eq!(written, order_json(&dispatch));
    // The log line still names the order exactly.
    let log = fs::read_to_string(dir.path().join(DELIVERIES_LOG)).expect("log exists");
    assert_eq!(log, format!("p1\t{}\t2\t{}\n", file_safe(&id), items_sha256(&dispatch.items)));
}

#[test]
fn sink_hashed_names_differ_for_ids_sharing_a_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = Sink { dir: dir.path().to_path_buf() };
    let (a, b) = ("y".repeat(ORDER_ID_BYTES_MAX - 1) + "1", "y".repeat(ORDER_ID_BYTES_MAX - 1) + "2");
    assert_ne!(sink_file_name(&a), sink_file_name(&b));
    for id in [&a, &b] {
        handler.handle(&order(id, &[id.len().to_string().as_bytes()])).expect("sink ok");
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
    let failure = Sink { dir: not_a_dir }.handle(&order("o", &[b"{}"])).expect_err("cannot write");
    assert!(failure.retry, "{failure}");
}

#[test]
fn exec_exit_zero_acks() {
    assert_eq!(exec("exit 0".into()).handle(&order("o", &[b"{}"])), Ok(()));
}

#[test]
fn exec_nonzero_exit_is_retryable_with_stderr_tail() {
    let command = "echo starting >&2; head -c 1000 /dev/zero | tr '\\0' x >&2; echo ' it broke' >&2; exit 3";
    let failure = exec(command.into()).handle(&order("o", &[b"{}"])).expect_err("exit 3");
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
    exec(command).handle(&dispatch).expect("command ok");
    assert_eq!(fs::read(&out).expect("stdin copied"), order_json(&dispatch));
    assert_eq!(fs::read_to_string(&env).expect("env written"), "o-1|p1|2|true");
}

#[test]
fn exec_that_ignores_a_large_stdin_does_not_hang() {
    let big = format!("\"{}\"", "x".repeat(1 << 20));
    let dispatch = order("o", &[big.as_bytes()]);
    assert_eq!(exec("exit 0".into()).handle(&dispatch), Ok(()));
    let failure = exec("exit 9".into()).handle(&dispatch).expect_err("exit 9");
    assert_eq!(failure.reason, "exit code 9");
}

#[test]
fn exec_killed_by_a_signal_is_retryable() {
    let failure = exec("kill -9 $$".into()).handle(&order("o", &[b"{}"])).expect_err("killed");
    assert!(failure.retry);
    assert!(failure.reason.contains("signal"), "{}", failure.reason);
}

#[test]
fn prepare_creates_the_sink_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = dir.path().join("a").join("b");
    Sink { dir: sink.clone() }.prepare().expect("created");
    assert!(sink.is_dir());
    let file = dir.path().join("file");
    fs::write(&file, b"x").expect("write");
    assert!(Sink { dir: file.join("sub") }.prepare().is_err());
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

fn exec_limited(command: &str, timeout_ms: u64) -> Exec {
    Exec { command: command.into(), timeout_ms: Some(timeout_ms) }
}

/// True once `pid` is gone (or a zombie waiting for its reaper).
fn is_dead(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn assert_all_die(pids_file: &Path) {
    let pids = fs::read_to_string(pids_file).expect("the command wrote its pids");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|pid| is_dead(pid)) {
        assert!(Instant::now() < deadline, "survivors among {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_past_its_time_limit_has_its_whole_process_group_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids");
    // A grandchild in the background and the shell waiting in the foreground.
    let command = format!("echo $$ > '{0}'; sleep 300 & echo $! >> '{0}'; sleep 300", pids.display());
    let started = Instant::now();
    let failure = exec_limited(&command, 500).handle(&order("o", &[b"{}"])).expect_err("timed out");
    let elapsed = started.elapsed();
    assert!(failure.retry && !failure.cannot_run, "{failure}");
    assert_eq!(failure.reason, "handler timed out after 500 ms (process group killed)");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(500 + KILL_GRACE_MS), "SIGTERM was enough: {elapsed:?}");
    assert_all_die(&pids);
}

#[test]
fn exec_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids");
    // Ignored signals stay ignored across exec: both sleeps ignore SIGTERM.
    let command = format!("trap '' TERM; echo $$ > '{0}'; sleep 300 & echo $! >> '{0}'; sleep 300", pids.display());
    let started = Instant::now();
    let failure = exec_limited(&command, 300).handle(&order("o", &[b"{}"])).expect_err("timed out");
    assert!(failure.reason.contains("timed out after 300 ms"), "{failure}");
    assert!(started.elapsed() >= Duration::from_millis(300 + KILL_GRACE_MS));
    assert_all_die(&pids);
}

#[test]
fn exec_within_its_time_limit_is_not_disturbed() {
    assert_eq!(exec_limited("sleep 0.2; cat > /dev/null", 5000).handle(&order("o", &[b"{}"])), Ok(()));
}

#[test]
fn exec_within_a_limit_too_far_to_represent_runs() {
    assert_eq!(exec_limited("exit 0", u64::MAX).handle(&order("o", &[b"{}"])), Ok(()));
}

#[test]
fn exec_leaving_a_process_behind_is_not_held_up_by_its_pipes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = dir.path().join("group");
    // The background sleep keeps stdout and stderr open after sh exits.
    let command = format!("echo $$ > '{}'; sleep 20 & exit 0", group.display());
    let started = Instant::now();
    assert_eq!(exec(command).handle(&order("o", &[b"{}"])), Ok(()));
    assert!(started.elapsed() < Duration::from_millis(KILL_GRACE_MS + 1500), "{:?}", started.elapsed());
    let group: i32 = fs::read_to_string(&group).expect("group written").trim().parse().expect("a pid");
    // SAFETY: killpg has no memory-safety preconditions. Cleans up the sleep.
    unsafe { libc::killpg(group, libc::SIGKILL) };
}

#[test]
fn exit_75_asks_for_a_retry_with_the_delay_from_the_last_stdout_line() {
    let dispatch = order("o", &[b"{}"]);
    let command = "head -c 100000 /dev/zero | tr '\\0' x; echo; echo delay_ms=30000; echo; exit 75";
    let failure = exec(command.into()).handle(&dispatch).expect_err("exit 75");
    assert!(failure.retry && !failure.cannot_run, "{failure}");
    assert_eq!(failure.delay_ms, Some(30_000));
    assert!(failure.reason.starts_with("exit code 75"), "{failure}");
    let failure = exec("echo 'busy' >&2; exit 75".into()).handle(&dispatch).expect_err("exit 75");
    assert_eq!((failure.retry, failure.delay_ms), (true, None), "no line: the broker's backoff");
    assert_eq!(failure.reason, "exit code 75 (retry later): busy");
    // The line counts only with exit 75.
    let failure = exec("echo delay_ms=5; exit 1".into()).handle(&dispatch).expect_err("exit 1");
    assert_eq!(failure.delay_ms, None);
}

#[test]
fn delay_line_must_be_last_and_a_number() {
    assert_eq!(delay_from_stdout(b"delay_ms=7\n\n  \n"), Some(7));
    assert_eq!(delay_from_stdout(b"delay_ms=7\nmore\n"), None);
    assert_eq!(delay_from_stdout(b"delay_ms=-1\n"), None);
    assert_eq!(delay_from_stdout(b"delay_ms=\n"), None);
    assert_eq!(delay_from_stdout(b""), None);
    assert_eq!(delay_from_stdout(b"delay_ms=99999999999999999\n"), Some(RETRY_DELAY_MS_MAX));
}

#[test]
fn exit_127_means_the_handler_cannot_run() {
    let failure = exec("/nonexistent/handler".into()).handle(&order("o", &[b"{}"])).expect_err("exit 127");
    assert!(failure.cannot_run && failure.retry, "{failure}");
    assert!(failure.reason.contains("127") && failure.reason.contains("/nonexistent/handler"), "{failure}");
}

#[test]
fn exit_126_means_the_handler_cannot_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("handler.sh");
    fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    let failure = exec(format!("'{}'", script.display())).handle(&order("o", &[b"{}"])).expect_err("not executable");
    assert!(failure.cannot_run, "{failure}");
    assert!(failure.reason.starts_with("exit code 126"), "{failure}");
}

#[test]
fn a_spawn_error_means_the_handler_cannot_run() {
    // A NUL byte cannot be passed in an argument: spawning fails.
    let failure = exec("true\0".into()).handle(&order("o", &[b"{}"])).expect_err("cannot spawn");
    assert!(failure.cannot_run, "{failure}");
    assert!(failure.reason.starts_with("cannot start sh -c"), "{failure}");
}

#[test]
fn ordinary_failures_are_not_cannot_run() {
    for command in ["exit 1", "exit 2", "exit 125", "exit 128", "kill -9 $$"] {
        let failure = exec(command.into()).handle(&order("o", &[b"{}"])).expect_err(command);
        assert!(failure.retry && !failure.cannot_run && failure.delay_ms.is_none(), "{command}: {failure}");
    }
}

#[test]
fn every_result_comes_with_a_wake_up() {
    // Reporters on several threads; the consumer takes results only when
    // the wake-up socket is readable, as the io loop does. A result left
    // without a byte would stall the poll until its timeout.
    let (completion, completions) = completion_channel().expect("channel");
    const THREADS: usize = 4;
    const EACH: usize = 5000;
    let reporters: Vec<_> = (0..THREADS)
        .map(|t| {
            let completion = completion.clone();
            std::thread::spawn(move || {
                for n in 0..EACH {
                    let order = OrderKey::new("p", format!("{t}-{n}"));
                    completion.finish(Done { order, attempt: 1, outcome: Ok(()) });
                }
            })
        })
        .collect();
    let mut taken = 0;
    while taken < THREADS * EACH {
        let mut fd = libc::pollfd { fd: completions.wake_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut fd, 1, 2000) };
        assert!(ready > 0, "no wake-up with {} results outstanding", THREADS * EACH - taken);
        taken += completions.take().len();
    }
    for reporter in reporters {
        reporter.join().expect("no panic");
    }
}
