use super::*;
use crate::schema::{PayloadFormat, decode};
use crate::sink::test_events;

fn lines(path: &Path) -> Vec<Envelope> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| decode(l.as_bytes(), PayloadFormat::Json).unwrap())
        .collect()
}

#[tokio::test]
async fn writes_one_envelope_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut sink = JsonlSink::open(Some(&path)).unwrap();
    assert_eq!(sink.name(), format!("jsonl:{}", path.display()));
    let events = test_events(12, "j");
    assert_eq!(sink.publish(&events[..5]).await.unwrap(), 5);
    assert_eq!(sink.publish(&events[5..]).await.unwrap(), 7);
    assert_eq!(sink.publish(&[]).await.unwrap(), 0);
    assert_eq!(lines(&path), events);
}

#[tokio::test]
async fn dedups_within_a_run_and_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let events = test_events(10, "r");
    {
        let mut sink = JsonlSink::open(Some(&path)).unwrap();
        assert_eq!(sink.publish(&events[..6]).await.unwrap(), 6);
        // A re-send in the same run.
        assert_eq!(sink.publish(&events[..3]).await.unwrap(), 3);
    }
    // After a "crash": events 4..6 are re-sent together with new ones.
    let mut sink = JsonlSink::open(Some(&path)).unwrap();
    assert_eq!(sink.known_ids(), 6);
    assert_eq!(sink.publish(&events[4..]).await.unwrap(), 6);
    // Duplicates inside one batch are written once.
    let twice = [events[0].clone(), events[0].clone()];
    assert_eq!(sink.publish(&twice).await.unwrap(), 2);
    assert_eq!(lines(&path), events);
}

#[tokio::test]
async fn torn_tail_is_cut_and_garbage_lines_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let events = test_events(4, "t");
    let mut text = String::new();
    text.push_str(&serde_json::to_string(&events[0]).unwrap());
    text.push_str("\nnot json\n\n");
    let torn = serde_json::to_string(&events[1]).unwrap();
    text.push_str(&torn[..torn.len() / 2]);
    std::fs::write(&path, &text).unwrap();

    let mut sink = JsonlSink::open(Some(&path)).unwrap();
    assert_eq!(sink.known_ids(), 1);
    assert_eq!(sink.publish(&events).await.unwrap(), 4);
    let content = std::fs::read_to_string(&path).unwrap();
    let parsed: Vec<_> = content
        .lines()
        .filter_map(|l| decode(l.as_bytes(), PayloadFormat::Json).ok())
        .collect();
    assert_eq!(parsed, events);
    assert!(content.ends_with('\n'));
}

#[test]
fn unopenable_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("x.jsonl");
    let err = JsonlSink::open(Some(&path)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot open {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[tokio::test]
async fn stdout_sink() {
    for p in [None, Some(Path::new("-"))] {
        let mut sink = JsonlSink::open(p).unwrap();
        assert_eq!(sink.name(), "jsonl:-");
        assert_eq!(sink.publish(&test_events(1, "s")).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_fifo_is_never_waited_for_and_never_gets_a_torn_line() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    // Nobody reads: opening fails at once.
    let started = std::time::Instant::now();
    let err = JsonlSink::open(Some(&path)).unwrap_err();
    assert!(err.to_string().contains("nobody reads"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A reader that does not read: the pipe fills, the write gives up.
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let mut sink = JsonlSink::open(Some(&path)).unwrap();
    let events = test_events(2_000, "f");
    let acked: usize = sink.publish(&events).await.unwrap_or_default();
    assert!(acked < events.len(), "a pipe holds less than 2,000 events");
    // It reads now: everything arrives, each line whole, each event once.
    let reading = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut chunk = vec![0; 1 << 16];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break, // no writer left
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    });
    let mut delivered = acked;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered < events.len() && std::time::Instant::now() < deadline {
        if let Ok(n) = sink.publish(&events[delivered..]).await {
            delivered += n;
        }
    }
    assert_eq!(delivered, events.len());
    drop(sink);
    let got = reading.join().unwrap();
    let ids: Vec<String> = String::from_utf8(got)
        .unwrap()
        .lines()
        .map(|l| decode(l.as_bytes(), PayloadFormat::Json).unwrap().id)
        .collect();
    let want: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, want);
}
