//! The send queue as the server drives it, against a real socket: any mix of units — small ones
//! coalesced, large ones sent as the slices they came in, some copied past the pin limit — comes
//! out of the socket as exactly the bytes pushed, in order, whatever the flush points.

use std::io::Read;

use bytes::Bytes;
use proptest::prelude::*;
use ringnode::net::SendQueue;
use ringnode::runtime::{self, RuntimeConfig};

fn one_core() -> RuntimeConfig {
    RuntimeConfig { cpus: vec![None], handle_signals: false, name: "send".into() }
}

/// A unit: a prefix (like a frame header) and payload parts, then whether to flush after it.
fn units() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<Vec<u8>>, bool)>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..9),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6000), 0..4),
            any::<bool>(),
        ),
        1..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn what_is_pushed_is_what_the_peer_reads(
        units in units(),
        limit in 1usize..100_000,
        zc_threshold in prop_oneof![Just(usize::MAX), 1000usize..20_000],
        pin_limit in prop_oneof![Just(usize::MAX), 0usize..10_000],
    ) {
        // TCP, so that zero-copy sends (SENDMSG_ZC) are possible too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut b = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (a, _) = listener.accept().unwrap();
        let expect: Vec<u8> = units
            .iter()
            .flat_map(|(prefix, parts, _)| prefix.iter().chain(parts.iter().flatten()).copied().collect::<Vec<u8>>())
            .collect();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            b.read_to_end(&mut all).unwrap();
            all
        });
        let a = std::sync::Mutex::new(Some(a));
        let units = std::sync::Arc::new(units);
        runtime::run(one_core(), move |_| {
            let a = a.lock().unwrap().take().unwrap();
            let units = units.clone();
            async move {
                let fd: ringnode::ring::ops::SharedFd = std::rc::Rc::new(a.into());
                let mut tx = SendQueue::new(fd.clone(), limit, zc_threshold);
                tx.set_pin_limit(pin_limit);
                for (prefix, parts, flush) in units.iter() {
                    let parts: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
                    if tx.push(prefix, &parts).is_err() {
                        // Full: flush, then it must fit (an empty queue takes any unit).
                        tx.flush().await.unwrap();
                        tx.push(prefix, &parts).expect("an empty queue takes any unit");
                    }
                    if *flush {
                        tx.flush().await.unwrap();
                    }
                }
                tx.flush().await.unwrap();
                drop(tx);
                drop(fd);
            }
        })
        .unwrap();
        let got = reader.join().unwrap();
        prop_assert_eq!(got.len(), expect.len());
        prop_assert!(got == expect, "the bytes read differ from the bytes pushed");
    }
}
