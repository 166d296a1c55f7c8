//! Limits on what clients may make the server hold, each with a flag and a clear error.

mod common;
use common::{start_with, Client};
use leviathan::store::StoreLimits;
use leviathan::Config;

#[test]
fn channels_and_subscriptions_are_limited_in_total_and_per_client() {
    let server = start_with(Config {
        max_channels: 5,
        max_channels_per_client: 3,
        max_subscriptions: 2,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    for ch in ["a1", "a2", "a3"] {
        assert_eq!(a.ok(&format!("CREATE {ch}")), "+OK");
    }
    let e = a.ok("CREATE a4");
    assert!(
        e.starts_with("-ERR limit_reached ") && e.contains("--max-channels-per-client"),
        "{e}"
    );
    assert_eq!(b.ok("CREATE b1"), "+OK");
    assert_eq!(b.ok("CREATE b2"), "+OK");
    let e = b.ok("CREATE b3");
    assert!(
        e.starts_with("-ERR limit_reached ") && e.contains("--max-channels"),
        "{e}"
    );
    assert_eq!(b.ok("DROP a1"), "+OK");
    assert_eq!(b.ok("CREATE b3"), "+OK", "room again after a DROP");

    assert_eq!(a.ok("SUB a2"), "+OK");
    assert_eq!(a.ok("SUB b.*"), "+OK");
    let e = a.ok("SUB a3");
    assert!(
        e.starts_with("-ERR limit_reached ") && e.contains("--max-subscriptions"),
        "{e}"
    );
    assert_eq!(
        a.ok("SUB a2 WHERE x = 1"),
        "+OK",
        "changing a subscription is not a new one"
    );
    a.ok("DEFINE t v:int");
    let e = a.ok("WATCH t");
    assert!(
        e.starts_with("-ERR limit_reached "),
        "watches count too: {e}"
    );
    assert_eq!(a.ok("UNSUB b.*"), "+OK");
    assert!(a.ok("WATCH t").starts_with("+OK seq="));
}

#[test]
fn tables_rows_and_bytes_are_limited_and_a_refused_write_changes_nothing() {
    let server = start_with(Config {
        store_limits: StoreLimits {
            max_tables: 2,
            max_table_rows: 3,
            max_row_bytes: 2000,
            max_store_bytes: 3000,
        },
        ..Config::default()
    });
    let mut c = Client::connect(server.local_addr());
    c.ok("DEFINE t s:str");
    c.ok("DEFINE u s:str");
    let e = c.ok("DEFINE v s:str");
    assert!(
        e.starts_with("-ERR limit_reached ") && e.contains("--max-tables"),
        "{e}"
    );

    let big = "b".repeat(3000);
    let e = c.ok(&format!("INSERT t s={big}"));
    assert!(
        e.starts_with("-ERR limit_reached ") && e.contains("--max-row-bytes"),
        "{e}"
    );
    assert_eq!(c.ok("COUNT t"), "+OK 0");
    for i in 1..=3 {
        assert_eq!(c.ok(&format!("INSERT t s=row{i}")), format!("+OK {i}"));
    }
    let e = c.ok("INSERT t s=row4");
    assert!(
        e.starts_with("-ERR limit_reached ") && e.contains("--max-table-rows"),
        "{e}"
    );
    let e = c.ok(&format!("UPDATE t 1 s={big}"));
    assert!(
        e.contains("--max-row-bytes"),
        "an update may not grow a row past it: {e}"
    );

    // The store's total: rows of about 1.1 KB against 3,000 bytes.
    let mid = "m".repeat(1000);
    let mut accepted = 0;
    let mut refusal = String::new();
    for _ in 0..10 {
        let r = c.ok(&format!("INSERT u s={mid}"));
        if r.starts_with("+OK") {
            accepted += 1;
        } else {
            refusal = r;
            break;
        }
    }
    assert!(refusal.contains("--max-store-mib"), "{refusal}");
    assert!((1..=2).contains(&accepted), "{accepted} rows went in");
    assert_eq!(c.ok("COUNT u"), format!("+OK {accepted}"));
    // Deleting makes room again.
    c.ok("DELETE u 1");
    assert!(c.ok(&format!("INSERT u s={mid}")).starts_with("+OK"));
}
