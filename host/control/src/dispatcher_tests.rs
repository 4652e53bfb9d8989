use super::*;
use stratus_protocol::framing::MAX_FRAME;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A dispatcher logging into a temporary state directory (kept as long as the first value).
fn dispatcher() -> (tempfile::TempDir, Dispatcher) {
    let dir = tempfile::tempdir().unwrap();
    let store = stratus_store::Store::open(dir.path().join("stratus.db")).unwrap();
    let logs = Logs::open(dir.path(), store).unwrap();
    (dir, Dispatcher::new(logs, |c| format!("digest:{c}")))
}

/// An agent that answers with one line over the frame limit: the reading side refuses it,
/// closes the connection, and the waiting call fails now instead of at its 600 s limit.
#[tokio::test]
async fn a_reply_over_the_frame_limit_fails_the_waiting_call_at_once() {
    let (dir, d) = dispatcher();
    let d = Arc::new(d);
    let key = ("dep".to_string(), "s-1".to_string());
    d.expect(key.clone(), "digest:cred".into()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = {
        let d = d.clone();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let conn = Connection::new(s);
            d.serve_agent(conn, "dep".into(), "s-1".into(), "cred".into(), 1)
                .await;
        })
    };
    let agent = tokio::spawn(async move {
        let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut lines = BufReader::new(r).lines();
        let _welcome = lines.next_line().await.unwrap();
        let _request = lines.next_line().await.unwrap();
        let mut huge = vec![b'x'; MAX_FRAME + 10];
        huge.push(b'\n');
        let _ = w.write_all(&huge).await;
        // Stay connected: only the refused frame may end the connection.
        std::future::pending::<()>().await;
    });
    d.wait_connected(&key, Duration::from_secs(10))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reply = d
        .call(&key, AgentRequest::Ping, Duration::from_secs(600))
        .await;
    assert!(
        matches!(reply, Err(DispatchError::Disconnected(_))),
        "{reply:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    served.await.unwrap();
    agent.abort();
    let log = std::fs::read_to_string(dir.path().join("logs/dispatcher.log")).unwrap();
    assert!(
        log.contains("frame larger than the connection accepts"),
        "{log}"
    );
}

/// A replacement credential on offer admits alongside the expected one; adopted, it alone
/// admits; withdrawn, only the expected one does; one offer at a time, none for a stranger,
/// and a forgotten server is not brought back by a late adoption.
#[tokio::test]
async fn an_offered_credential_admits_until_settled() {
    let (_dir, d) = dispatcher();
    let key = ("dep".to_string(), "s-1".to_string());
    let stranger = ("dep".to_string(), "s-9".to_string());
    assert!(!d.offer(stranger.clone(), "digest:x".into()).await);
    d.expect(key.clone(), "digest:launch".into()).await;
    assert!(d.offer(key.clone(), "digest:new".into()).await);
    assert!(
        !d.offer(key.clone(), "digest:other".into()).await,
        "one at a time"
    );
    assert!(d.verify_credential(&key, "launch").await);
    assert!(d.verify_credential(&key, "new").await);
    d.settle(&key, "digest:other", true).await;
    assert!(
        d.verify_credential(&key, "launch").await,
        "not the offer: ignored"
    );
    d.settle(&key, "digest:new", true).await;
    assert!(!d.verify_credential(&key, "launch").await);
    assert!(d.verify_credential(&key, "new").await);

    assert!(d.offer(key.clone(), "digest:third".into()).await);
    d.settle(&key, "digest:third", false).await;
    assert!(!d.verify_credential(&key, "third").await, "withdrawn");
    assert!(d.verify_credential(&key, "new").await);

    assert!(d.offer(key.clone(), "digest:late".into()).await);
    d.forget(&key).await;
    d.settle(&key, "digest:late", true).await;
    assert!(!d.verify_credential(&key, "late").await);
    assert!(
        !d.verify_credential(&key, "new").await,
        "forgotten stays forgotten"
    );
}

/// A zero limit asks "connected now?": a look that must first wait for the busy state lock
/// still answers yes for a connected agent (a launch's hook calls ask this of every server,
/// and a wrong no sent each to its provider to ask whether the server was gone).
#[tokio::test]
async fn a_connected_agent_is_connected_at_once_while_the_state_is_busy() {
    let (_dir, d) = dispatcher();
    let key = ("dep".to_string(), "s-1".to_string());
    let _agent = d.connect_for_test(&key, 1).await;
    let busy = d.state.clone().lock_owned().await;
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(busy);
    });
    let connected = d.wait_connected(&key, Duration::ZERO).await;
    assert!(connected.is_ok(), "{connected:?}");
    holder.await.unwrap();
    let other = ("dep".to_string(), "s-2".to_string());
    let absent = d.wait_connected(&other, Duration::ZERO).await;
    assert!(
        matches!(absent, Err(DispatchError::NotConnected(..))),
        "{absent:?}"
    );
}

/// A severed connection is handed to the monitor once, apart from the live ones; one that
/// `forget` dropped (a terminated server's) is not; at most `MAX_CLOSED_KEPT` are kept, the
/// newest.
#[tokio::test]
async fn closed_connections_are_kept_for_the_monitor_until_taken() {
    let (_dir, d) = dispatcher();
    let key = |s: &str| ("dep".to_string(), s.to_string());
    for (server, generation) in [("a", 1), ("b", 2), ("c", 3)] {
        d.connect_for_test(&key(server), generation).await;
    }
    d.sever(&key("a")).await;
    d.forget(&key("b")).await;
    let (live, closed) = d.take_closed().await;
    assert_eq!(live.keys().collect::<Vec<_>>(), [&key("c")]);
    let gone = LiveConnection {
        generation: 1,
        pid: 1,
    };
    assert_eq!(closed, [(key("a"), gone)]);
    assert!(d.take_closed().await.1.is_empty(), "taken once");
    // A connection that ends on its own tells the watchers; a stale one (already replaced)
    // changes nothing and tells no one.
    let watcher = d.subscribe();
    d.drop_live(&key("c"), 2).await;
    assert!(!watcher.has_changed().unwrap(), "not c's live connection");
    d.drop_live(&key("c"), 3).await;
    assert!(watcher.has_changed().unwrap());
    assert_eq!(d.take_closed().await.1.len(), 1);
    for generation in 0..MAX_CLOSED_KEPT as u64 + 2 {
        d.connect_for_test(&key("a"), generation).await;
        d.sever(&key("a")).await;
    }
    let closed = d.take_closed().await.1;
    assert_eq!(closed.len(), MAX_CLOSED_KEPT);
    assert_eq!(closed[0].1.generation, 2, "the oldest were dropped");
}
