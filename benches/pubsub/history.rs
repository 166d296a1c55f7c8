//! `cargo bench --bench pubsub -- history`: what keeping a history costs. 1→1 and
//! 1→100 on channels created with `HISTORY 1000` against plain channels, interleaved
//! in the same run (medians of 3); how long a resume that missed 1,000 messages takes;
//! and the memory each kept message holds.

use super::*;

pub fn run(server: &Server, quick: bool) {
    let scale = if quick { 10 } else { 1 };
    let plain = server.target();
    let kept = Target {
        create_with: " HISTORY 1000",
        ..server.target()
    };
    for (what, subs, per_pub) in [
        ("1 publisher -> 1 subscriber:", 1, 4_000_000),
        ("1 publisher -> 100 subscribers:", 100, 200_000),
    ] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            off.push(fanout(&plain, 1, subs, per_pub / scale).0);
            on.push(fanout(&kept, 1, subs, per_pub / scale).0);
        }
        let (off, on) = (median(off), median(on));
        println!(
            "{what:<34} no history {off:>10.0} msgs/s, HISTORY 1000 {on:>10.0} msgs/s: {:.2}x (medians of 3)",
            on / off
        );
    }
    let times = resume_times(&kept, if quick { 5 } else { 21 });
    println!(
        "resume after 1000 missed messages: p50 {:.2} ms, max {:.2} ms ({} resumes)",
        times[times.len() / 2] * 1e3,
        times[times.len() - 1] * 1e3,
        times.len()
    );
    let n = if quick { 10_000 } else { 100_000 };
    let fresh = Server::start(&[]);
    let bytes = memory_per_message(&fresh.target(), n);
    println!("memory per kept message (16-byte payload, {n} kept): {bytes:.0} bytes");
}

/// Seconds from sending `SUB … SINCE` to its `+OK`, with 1,000 messages missed before
/// it, `rounds` times, sorted.
fn resume_times(target: &Target, rounds: usize) -> Vec<f64> {
    let ch = format!("resume{}", target.pid);
    target.create(&ch);
    let (mut pr, mut pw) = connect(target.addr);
    let batch = target.frame(&ch).repeat(1000);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let (mut r, mut w) = connect(target.addr);
        let ok = command(&mut r, &mut w, &format!("SUB {ch}"));
        let field = |k: &str| {
            ok.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {ok}"))
                .to_string()
        };
        let (offset, epoch) = (field("offset="), field("epoch="));
        drop((r, w));
        pw.write_all(batch.as_bytes()).unwrap();
        for _ in 0..1000 {
            let mut line = String::new();
            pr.read_line(&mut line).unwrap();
        }
        let (mut r, mut w) = connect(target.addr);
        let start = Instant::now();
        w.write_all(format!("SUB {ch} SINCE {offset} EPOCH {epoch}\n").as_bytes())
            .unwrap();
        let mut missed = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("connection closed during a resume");
            }
            if line.starts_with("MSG ") {
                missed += 1;
            } else if line.starts_with("+OK") {
                assert!(line.contains("recovered=true"), "{line}");
                break;
            }
        }
        times.push(start.elapsed().as_secs_f64());
        assert_eq!(missed, 1000, "every missed message came before the +OK");
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times
}

/// Resident bytes per message kept by a channel with `HISTORY n`, after publishing `n`
/// 16-byte messages to it with nobody subscribed.
fn memory_per_message(target: &Target, n: u64) -> f64 {
    let ch = format!("mem{}", target.pid);
    let (mut r, mut w) = connect(target.addr);
    let create = format!("CREATE {ch} HISTORY {n}");
    assert!(command(&mut r, &mut w, &create).starts_with("+OK"));
    thread::sleep(Duration::from_millis(300));
    let before = target.rss_kib();
    let line = target.frame(&ch);
    let per_batch = 1000;
    let batch = line.repeat(per_batch);
    for _ in 0..n / per_batch as u64 {
        w.write_all(batch.as_bytes()).unwrap();
        for _ in 0..per_batch {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
        }
    }
    thread::sleep(Duration::from_millis(300));
    let after = target.rss_kib();
    println!("  RSS {before} KiB before, {after} KiB with {n} messages kept");
    after.saturating_sub(before) as f64 * 1024.0 / n as f64
}
