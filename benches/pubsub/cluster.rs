//! `cargo bench --bench pubsub -- cluster`: two nodes joined through a redis-server the
//! bench starts (`--redis`), against a node alone, in the same run (medians of 3, taking
//! turns): 1→1 and 1→100 with the subscribers on the other node, and the latency a
//! cross-node hop adds at 20k msgs/s. The same node's figures with `--redis` show what
//! being in a cluster costs a node's own traffic. Server CPU counts both nodes, not
//! Redis.

use super::*;

pub fn run(alone: &Server, quick: bool) {
    let Some(redis) = common::peers::redis() else {
        println!("cluster: redis-server is missing (apt-get install redis-server); skipped");
        return;
    };
    let url = format!("redis://{}", redis.addr);
    let (a, b) = (
        Server::start(&["--redis", &url]),
        Server::start(&["--redis", &url]),
    );
    // Both nodes' links come up within a few milliseconds of the start.
    thread::sleep(Duration::from_millis(500));
    let (alone, a, b) = (alone.target(), a.target(), b.target());
    let runs: [(&str, &Target, &Target); 3] = [
        ("one node alone", &alone, &alone),
        ("one node, in a cluster", &a, &a),
        ("across two nodes", &a, &b),
    ];
    let scale = if quick { 10 } else { 1 };
    let rounds = rounds(quick, ROUNDS);
    for (what, subs, per_pub) in [
        ("1 publisher -> 1 subscriber:", 1, 1_000_000),
        ("1 publisher -> 100 subscribers:", 100, 50_000),
    ] {
        let mut rates = vec![Vec::new(); runs.len()];
        for round in 0..rounds {
            for i in turns(runs.len(), round) {
                let (who, at, subs_at) = runs[i];
                let (rate, cpu) = fanout_between(at, subs_at, 1, subs, per_pub / scale);
                println!(
                    "{what:<34} {who:<24} {rate:>10.0} msgs/s delivered, server CPU {cpu:.3} us/msg"
                );
                rates[i].push(rate);
            }
        }
        let rates: Vec<f64> = rates.into_iter().map(median).collect();
        println!(
            "  medians: alone {:.0}, in a cluster {:.0} ({:.2}x), across {:.0} ({:.2}x) msgs/s",
            rates[0],
            rates[1],
            rates[1] / rates[0],
            rates[2],
            rates[2] / rates[0]
        );
    }
    let secs = if quick { 1 } else { 5 };
    let (mut p50s, mut p99s) = (vec![Vec::new(); runs.len()], vec![Vec::new(); runs.len()]);
    for round in 0..rounds {
        for i in turns(runs.len(), round) {
            let (who, at, subs_at) = runs[i];
            let measured = latency_between(at, subs_at, 20_000, secs);
            println!(
                "one-way latency at 20000 msgs/s:   {who:<24} {}",
                measured.line()
            );
            p50s[i].push(measured.at(0.50));
            p99s[i].push(measured.at(0.99));
        }
    }
    let p50s: Vec<f64> = p50s.into_iter().map(median).collect();
    let p99s: Vec<f64> = p99s.into_iter().map(median).collect();
    println!(
        "  a cross-node hop adds p50 {:.1} us, p99 {:.1} us (medians; across {:.1} / {:.1}, alone {:.1} / {:.1})",
        p50s[2] - p50s[0],
        p99s[2] - p99s[0],
        p50s[2],
        p99s[2],
        p50s[0],
        p99s[0]
    );
}
