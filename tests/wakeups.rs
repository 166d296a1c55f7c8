//! A coroutine woken from another thread always resumes. Every connection sleeps in
//! `wait_io` until the manager (or the journal, or another worker) wakes it, and every
//! command that waits on another thread parks on a `may` channel: a wake that goes
//! missing leaves a client without its reply for good. Each test has an OS thread wake
//! many coroutines again the instant each finishes a round, which is when a wake and a
//! coroutine's going to sleep overlap, hundreds of thousands of times. (The store/load
//! reordering fenced off in `vendor/may/PATCHES.md` section 3 has a window of a few
//! instructions that these rounds did not hit on our machines; they guard the wake
//! paths as a whole.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::io::WaitIo;

/// Coroutines woken in turn.
const SLEEPERS: usize = 32;
/// Rounds each of them sleeps and is woken.
const ROUNDS: u64 = 5_000;
/// A coroutine woken this long ago that has not moved lost its wake (a round takes
/// microseconds).
const STALL: Duration = Duration::from_secs(3);
/// The whole test stops after this long.
const LIMIT: Duration = Duration::from_secs(60);

/// Wakes sleeper `k` each time it has finished a round (its counter moved), until every
/// sleeper has done [`ROUNDS`]; panics naming a sleeper woken [`STALL`] ago that never
/// moved. Each wake is delayed a little more than the one before, so that over the
/// rounds the wakes sweep across the sleepers' few instructions of going to sleep.
fn wake_in_turn(counters: &[Arc<AtomicU64>], mut wake: impl FnMut(usize)) {
    let started = Instant::now();
    let mut woken_for = vec![u64::MAX; counters.len()];
    let mut woken_at = vec![Instant::now(); counters.len()];
    let mut stagger = 0u64;
    let mut wakes = 0u64;
    loop {
        let mut all_done = true;
        for (k, counter) in counters.iter().enumerate() {
            let done = counter.load(Ordering::Acquire);
            if done >= ROUNDS {
                continue;
            }
            all_done = false;
            if woken_for[k] != done {
                stagger = (stagger + 7) % 400;
                for i in 0..stagger {
                    std::hint::black_box(i);
                }
                woken_for[k] = done;
                woken_at[k] = Instant::now();
                wake(k);
                wakes += 1;
            } else if woken_at[k].elapsed() > STALL {
                panic!(
                    "sleeper {k} was woken {:?} ago after {done} rounds and never resumed \
                     ({wakes} wakes so far)",
                    woken_at[k].elapsed()
                );
            }
        }
        if all_done {
            eprintln!("{wakes} wakes in {:?}", started.elapsed());
            return;
        }
        if started.elapsed() > LIMIT {
            eprintln!("stopped at the time limit after {wakes} wakes");
            return;
        }
    }
}

fn counters() -> Vec<Arc<AtomicU64>> {
    (0..SLEEPERS).map(|_| Arc::new(AtomicU64::new(0))).collect()
}

#[test]
fn a_wait_io_woken_from_another_thread_always_resumes() {
    may::config().set_workers(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counters = counters();
    let (waker_tx, waker_rx) = std::sync::mpsc::channel();
    let mut sleepers = Vec::new();
    for (k, counter) in counters.iter().enumerate() {
        let done = counter.clone();
        let waker_tx = waker_tx.clone();
        sleepers.push(may::go!(move || {
            let stream = may::net::TcpStream::connect(addr).expect("connect");
            waker_tx
                .send((k, stream.waker()))
                .expect("hand over the waker");
            while done.load(Ordering::Relaxed) < ROUNDS {
                stream.wait_io();
                done.fetch_add(1, Ordering::Release);
            }
        }));
    }
    let peers: Vec<_> = (0..SLEEPERS)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    let mut wakers: Vec<_> = (0..SLEEPERS)
        .map(|_| {
            waker_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("every sleeper started")
        })
        .collect();
    wakers.sort_by_key(|(k, _)| *k);
    wake_in_turn(&counters, |k| wakers[k].1.wakeup());
    for s in sleepers {
        s.join().expect("a sleeper ended");
    }
    drop(peers);
}

#[test]
fn a_channel_receiver_woken_from_another_thread_always_resumes() {
    may::config().set_workers(1);
    let counters = counters();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for counter in &counters {
        let (tx, rx) = may::sync::mpsc::channel::<()>();
        let done = counter.clone();
        receivers.push(may::go!(move || {
            while done.load(Ordering::Relaxed) < ROUNDS {
                if rx.recv().is_err() {
                    return;
                }
                done.fetch_add(1, Ordering::Release);
            }
        }));
        senders.push(tx);
    }
    wake_in_turn(&counters, |k| {
        let _ = senders[k].send(());
    });
    drop(senders);
    for r in receivers {
        r.join().expect("a receiver ended");
    }
}
