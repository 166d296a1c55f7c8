//! A subscriber that never reads is disconnected; everyone else receives everything.

mod common;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_with, Client, WAIT};
use leviathan::Config;

#[test]
fn stalled_subscriber_is_cut_off_and_others_get_everything() {
    let server = start_with(Config {
        outbox_limit: 1 << 20,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut publisher = Client::connect(addr);
    publisher.ok("CREATE firehose");
    let mut stalled = Client::connect(addr);
    stalled.ok("SUB firehose");
    let mut reader = Client::connect(addr);
    reader.ok("SUB firehose");

    const N: usize = 30_000;
    let payload = "p".repeat(1000);
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let total = std::thread::spawn(move || {
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < N && Instant::now() < deadline {
            let l = reader.line();
            assert!(
                l.ends_with(&format!(" {got}")),
                "out of order or lost: got {got}, line {}",
                &l[..l.len().min(80)]
            );
            got += 1;
            counter.store(got, Ordering::Release);
        }
        got
    });
    // Pipelined in chunks so the publisher's own replies never pile up, and never more
    // than ~500 KB ahead of the reading subscriber: that one is slow only because this
    // test machine is busy, while the stalled one falls behind without bound.
    for chunk in 0..N / 100 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Acquire) + 500 < chunk * 100 {
            assert!(Instant::now() < deadline, "reader stopped receiving");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut batch = String::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            batch.push_str(&format!("PUB firehose {payload} {i}\n"));
        }
        publisher.send_raw(batch.as_bytes());
        for _ in 0..100 {
            let l = publisher.line();
            assert!(l.starts_with("+OK "), "{l}");
        }
    }
    assert_eq!(
        total.join().unwrap(),
        N,
        "the reading subscriber got every message"
    );
    assert_eq!(server.stats().slow_consumers.load(Ordering::Relaxed), 1);

    // The stalled client finds its connection closed after what was buffered, with
    // BYE slow_consumer as its last line if the server managed to write it.
    stalled.writer.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(Instant::now() < deadline, "stalled connection never closed");
        match stalled.reader.get_mut().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&rest);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() < N,
        "the stalled client cannot have received everything"
    );
    if let Some(bye) = lines.iter().position(|l| l.starts_with("BYE")) {
        assert_eq!(lines[bye], "BYE slow_consumer");
        assert_eq!(bye, lines.len() - 1, "BYE is the last line");
    }
    // The publisher carries on.
    assert_eq!(publisher.ok("PUB firehose after"), "+OK 0");
}
