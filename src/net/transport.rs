//! The seam between sockets and protocols: a [`Transport`] turns bytes from the socket into the
//! protocol's bytes and the protocol's bytes into bytes for the socket, sans-IO. [`Plain`] passes
//! them through untouched (the same `Bytes`, no copy); TLS will sit behind the same trait, and
//! [`Upgradable`] swaps one for another in place, mid-connection, as NATS does after INFO.
//!
//! # The shape, checked against rustls's unbuffered API
//!
//! rustls's `UnbufferedConnectionCommon::process_tls_records(&mut incoming)` returns a state the
//! caller must act on, and reports how many incoming bytes it consumed (`discard`):
//! - `ReadTraffic` — decrypted application data, record by record: what [`Transport::on_wire`]
//!   appends to `plain`. rustls decrypts in place, so a TLS transport keeps its own writable
//!   buffer of incoming records (the pool's leases are read-only): the one copy of the TLS path.
//! - `EncodeTlsData` / `TransmitTlsData` — handshake records to send *while reading*: `on_wire`
//!   queues them and [`Transport::poll_wire`] yields them; the driver sends them before anything
//!   else. (`TransmitTlsData::done` is called once the bytes were taken by `poll_wire`.)
//! - `BlockedHandshake` — more incoming bytes needed: `on_wire` returns with nothing to add.
//! - `WriteTraffic` — application data may be encrypted: until then [`Transport::ready`] is false
//!   and [`Transport::send`] refuses ([`TransportError::NotReady`]); after, `send` encrypts into
//!   records `poll_wire` yields.
//! - `PeerClosed` / `Closed` — [`TransportError::Closed`].
//!
//! The test transport of `tests/transport.rs` has the same shape (a handshake written while
//! reading, records split anywhere, bytes transformed both ways) and is driven over the ring.

use bytes::Bytes;

/// Why a transport cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Protocol bytes offered before the handshake lets them through.
    #[error("the transport is not ready to send (handshake in progress)")]
    NotReady,
    /// The bytes from the socket are not valid for this transport.
    #[error("bad transport data: {0}")]
    Bad(String),
    /// The peer closed the transport.
    #[error("the transport was closed")]
    Closed,
}

/// Between a socket and a protocol, sans-IO.
pub trait Transport {
    /// Bytes arrived from the socket. The protocol's bytes they carry are appended to `plain`;
    /// bytes the transport must send in answer (a handshake) are queued for
    /// [`Transport::poll_wire`] — the driver must send them even when it only reads.
    fn on_wire(&mut self, data: Bytes, plain: &mut Vec<Bytes>) -> Result<(), TransportError>;

    /// The protocol's bytes to send (transformed and queued for [`Transport::poll_wire`]).
    fn send(&mut self, parts: &[Bytes]) -> Result<(), TransportError>;

    /// Moves the bytes to put on the socket now, in order, to `out`.
    fn poll_wire(&mut self, out: &mut Vec<Bytes>);

    /// Whether [`Transport::send`] is accepted (the handshake, if any, is done).
    fn ready(&self) -> bool;
}

/// No transformation: the socket's bytes are the protocol's, the very same `Bytes` both ways.
#[derive(Debug, Default)]
pub struct Plain {
    wire: Vec<Bytes>,
}

impl Transport for Plain {
    fn on_wire(&mut self, data: Bytes, plain: &mut Vec<Bytes>) -> Result<(), TransportError> {
        if !data.is_empty() {
            plain.push(data);
        }
        Ok(())
    }

    fn send(&mut self, parts: &[Bytes]) -> Result<(), TransportError> {
        self.wire.extend(parts.iter().filter(|p| !p.is_empty()).cloned());
        Ok(())
    }

    fn poll_wire(&mut self, out: &mut Vec<Bytes>) {
        out.append(&mut self.wire);
    }

    fn ready(&self) -> bool {
        true
    }
}

/// A transport that can be replaced in place: plaintext first, then (say) TLS after the
/// protocol's upgrade message, on the same socket.
pub struct Upgradable {
    inner: Box<dyn Transport>,
    /// Wire bytes the replaced transport still had to send, sent before the new one's.
    before: Vec<Bytes>,
    upgrades: u32,
}

impl Default for Upgradable {
    fn default() -> Self {
        Upgradable { inner: Box::new(Plain::default()), before: Vec::new(), upgrades: 0 }
    }
}

impl Upgradable {
    /// Starts with `inner`.
    pub fn new(inner: Box<dyn Transport>) -> Upgradable {
        Upgradable { inner, before: Vec::new(), upgrades: 0 }
    }

    /// Replaces the transport with `next` at a message boundary the protocol chose. `leftover`
    /// is what the old transport yielded past that boundary — bytes the peer sent for the new
    /// transport right after its upgrade message, which arrived with it — and is fed to `next`
    /// first; what that yields goes to `plain`. What the old transport still had to send goes
    /// out first.
    pub fn upgrade(
        &mut self,
        next: Box<dyn Transport>,
        leftover: Vec<Bytes>,
        plain: &mut Vec<Bytes>,
    ) -> Result<(), TransportError> {
        self.inner.poll_wire(&mut self.before);
        self.inner = next;
        self.upgrades += 1;
        for b in leftover {
            self.inner.on_wire(b, plain)?;
        }
        Ok(())
    }

    /// Times it was upgraded.
    pub fn upgrades(&self) -> u32 {
        self.upgrades
    }
}

impl Transport for Upgradable {
    fn on_wire(&mut self, data: Bytes, plain: &mut Vec<Bytes>) -> Result<(), TransportError> {
        self.inner.on_wire(data, plain)
    }

    fn send(&mut self, parts: &[Bytes]) -> Result<(), TransportError> {
        self.inner.send(parts)
    }

    fn poll_wire(&mut self, out: &mut Vec<Bytes>) {
        out.append(&mut self.before);
        self.inner.poll_wire(out);
    }

    fn ready(&self) -> bool {
        self.inner.ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passes_the_same_bytes_through_both_ways() {
        let mut t = Plain::default();
        let b = Bytes::from_static(b"abc");
        let mut plain = Vec::new();
        t.on_wire(b.clone(), &mut plain).unwrap();
        assert_eq!(plain[0].as_ptr(), b.as_ptr());
        t.send(&[b.clone(), Bytes::new()]).unwrap();
        let mut out = Vec::new();
        t.poll_wire(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), b.as_ptr());
    }
}
