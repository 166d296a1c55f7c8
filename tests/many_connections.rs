//! A few thousand concurrent connections on one server.

mod common;
use common::{start, Client};

#[test]
fn three_thousand_clients_subscribe_and_receive() {
    // Client and server sockets share this process's limit.
    let limit = leviathan::server::raise_open_file_limit().unwrap_or(1024);
    // Two descriptors per connection in this process (client and server side).
    let n = 3000.min(limit.saturating_sub(200) / 2);
    assert!(n >= 1000, "open-file limit {limit} too low for this test");
    let server = start();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    admin.ok("CREATE all");
    // Thousands connecting at once take seconds on a 2-core machine (how fast is for
    // benches/pubsub.rs to say): each client waits up to a minute for its lines.
    let mut clients: Vec<Client> = (0..n)
        .map(|_| {
            let c = Client::connect_raw(addr);
            c.writer
                .set_read_timeout(Some(std::time::Duration::from_secs(60)))
                .unwrap();
            c
        })
        .collect();
    // Speaking first gets the greeting at once instead of after the silent delay.
    for c in clients.iter_mut() {
        c.send("SUB all");
    }
    for c in clients.iter_mut() {
        assert!(c.line().starts_with("HELLO "));
        assert_eq!(c.line(), "+OK");
    }
    assert_eq!(admin.ok("PUB all hello everyone"), format!("+OK {n}"));
    for c in clients.iter_mut() {
        assert_eq!(c.line(), format!("MSG all {} hello everyone", admin.name));
    }
    let (list, _) = admin.request("CLIENTS");
    assert_eq!(list.last().unwrap(), &format!("+OK {}", n + 1));
}
