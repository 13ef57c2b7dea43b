//! UDP test datagrams, sans-IO: the header iperf3 puts at the front of each (send time and
//! sequence number), the receiver's loss, order and jitter (RFC 1889 as iperf3 computes it), and
//! the sender's pacing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Header bytes: seconds, microseconds (both u32) and the sequence number (u32, or u64 with
/// `udp_counters_64bit`), all big-endian.
pub fn header_len(counters_64bit: bool) -> usize {
    if counters_64bit {
        16
    } else {
        12
    }
}

/// Writes the header for datagram `seq` (from 1) sent at `at` into the front of `buf`.
pub fn write_header(buf: &mut [u8], at: SystemTime, seq: u64, counters_64bit: bool) {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    buf[0..4].copy_from_slice(&(d.as_secs() as u32).to_be_bytes());
    buf[4..8].copy_from_slice(&d.subsec_micros().to_be_bytes());
    if counters_64bit {
        buf[8..16].copy_from_slice(&seq.to_be_bytes());
    } else {
        buf[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
    }
}

/// Reads a header: the send time (seconds since the epoch) and the sequence number.
pub fn read_header(buf: &[u8], counters_64bit: bool) -> Option<(f64, u64)> {
    if buf.len() < header_len(counters_64bit) {
        return None;
    }
    let sec = u32::from_be_bytes(buf[0..4].try_into().ok()?);
    let usec = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let seq = if counters_64bit {
        u64::from_be_bytes(buf[8..16].try_into().ok()?)
    } else {
        u64::from(u32::from_be_bytes(buf[8..12].try_into().ok()?))
    };
    Some((f64::from(sec) + f64::from(usec) / 1e6, seq))
}

/// What a UDP receiver counts, iperf3's way: `highest` is the highest sequence number seen, a gap
/// counts as lost, a datagram from behind the highest is out of order and takes one back off the
/// lost count; jitter is the smoothed difference of transit times (RFC 1889 6.3.1, A.8).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UdpReceiver {
    /// Datagrams received (with a readable header).
    pub received: u64,
    /// Highest sequence number seen.
    pub highest: u64,
    /// Lost, by gaps in sequence numbers.
    pub lost: i64,
    /// Arrived after a later one.
    pub out_of_order: u64,
    /// Jitter, seconds.
    pub jitter: f64,
    prev_transit: Option<f64>,
}

impl UdpReceiver {
    /// One datagram sent at `sent` (seconds since the epoch) with sequence number `seq`, arriving
    /// at `arrived` (same clock).
    pub fn datagram(&mut self, sent: f64, seq: u64, arrived: f64) {
        self.received += 1;
        if seq > self.highest {
            if seq > self.highest + 1 {
                self.lost = self.lost.saturating_add(i64::try_from(seq - 1 - self.highest).unwrap_or(i64::MAX));
            }
            self.highest = seq;
        } else {
            self.out_of_order += 1;
            if self.lost > 0 {
                self.lost -= 1;
            }
        }
        let transit = arrived - sent;
        let prev = self.prev_transit.unwrap_or(transit);
        self.prev_transit = Some(transit);
        self.jitter += ((transit - prev).abs() - self.jitter) / 16.0;
    }
}

/// The time now on the clock the headers use.
pub fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Paces a sender at a bitrate: how many datagrams are due by now. Without a rate every call says
/// "a full burst".
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    /// Bits per second (0: unpaced).
    rate: u64,
    /// Bits per datagram (its length on the wire as the test counts it).
    bits: u64,
    sent: u64,
}

impl Pacer {
    /// A pacer for `len`-byte datagrams at `rate` bits/s, from `start`.
    pub fn new(start: Instant, rate: u64, len: usize) -> Pacer {
        Pacer { start, rate, bits: len as u64 * 8, sent: 0 }
    }

    /// How many datagrams may go now (at most `burst`), and when the next falls due if none may.
    pub fn due(&self, now: Instant, burst: u64) -> (u64, Option<Instant>) {
        if self.rate == 0 {
            return (burst, None);
        }
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let allowed = ((elapsed * self.rate as f64 / self.bits as f64) as u64).saturating_add(1);
        let n = allowed.saturating_sub(self.sent).min(burst);
        if n > 0 {
            return (n, None);
        }
        // Wake when a burst's worth is due: what falls due in a millisecond (iperf3's pacing
        // timer), at least one datagram, at most 64 — not once per datagram, which at a
        // few Gbit/s would be a wake-up every few microseconds. A microsecond late, so that the
        // float rounding cannot wake the sender a hair early and find nothing due (a deadline
        // already past does not wait); never before `now`.
        let per_ms = (self.rate as f64 / self.bits as f64 / 1000.0).floor() as u64;
        let quantum = per_ms.clamp(1, 64);
        let next = ((self.sent + quantum - 1) as f64) * self.bits as f64 / self.rate as f64;
        let at = self.start + Duration::from_secs_f64(next) + Duration::from_micros(1);
        (0, Some(at.max(now + Duration::from_micros(1))))
    }

    /// `n` datagrams went.
    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_both_widths() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        for wide in [false, true] {
            let mut b = [0u8; 32];
            write_header(&mut b, at, 0x1_0000_0005, wide);
            let (t, seq) = read_header(&b, wide).unwrap();
            assert!((t - 1_700_000_000.123456).abs() < 1e-6);
            assert_eq!(seq, if wide { 0x1_0000_0005 } else { 5 });
            assert!(read_header(&b[..header_len(wide) - 1], wide).is_none());
        }
    }

    #[test]
    fn loss_and_order_are_counted_as_iperf3_counts_them() {
        let mut r = UdpReceiver::default();
        for seq in [1, 2, 5, 3, 6] {
            r.datagram(0.0, seq, 0.0);
        }
        // 3 and 4 missing at 5 (lost 2), 3 arrives late (out of order, lost back to 1).
        assert_eq!((r.received, r.highest, r.lost, r.out_of_order), (5, 6, 1, 1));
    }

    #[test]
    fn jitter_follows_rfc_1889() {
        let mut r = UdpReceiver::default();
        // Transit times 10, 12, 10 ms: differences 2 ms twice.
        r.datagram(0.0, 1, 0.010);
        r.datagram(1.0, 2, 1.012);
        r.datagram(2.0, 3, 2.010);
        let j1 = 0.002 / 16.0;
        let j2 = j1 + (0.002 - j1) / 16.0;
        assert!((r.jitter - j2).abs() < 1e-12, "{}", r.jitter);
    }

    #[test]
    fn pacing_releases_datagrams_at_the_rate() {
        let t0 = Instant::now();
        // 1,000 B datagrams at 8 Mbit/s: 1,000 per second.
        let mut p = Pacer::new(t0, 8_000_000, 1000);
        let (n, _) = p.due(t0, 64);
        assert_eq!(n, 1);
        p.sent(n);
        let (n, next) = p.due(t0, 64);
        assert_eq!(n, 0);
        // One per millisecond at this rate: the next is due at 1 ms.
        assert_eq!(next, Some(t0 + Duration::from_millis(1) + Duration::from_micros(1)));
        // At 80 Mbit/s, ten fall due each millisecond: the sender sleeps until ten are due.
        let mut fast = Pacer::new(t0, 80_000_000, 1000);
        fast.sent(1);
        let (n, next) = fast.due(t0, 64);
        assert_eq!(n, 0);
        assert_eq!(next, Some(t0 + Duration::from_micros(1000) + Duration::from_micros(1)));
        let (n, _) = p.due(t0 + Duration::from_millis(100), 64);
        assert_eq!(n, 64, "capped at the burst");
        p.sent(n);
        let (n, _) = p.due(t0 + Duration::from_millis(100), 64);
        assert_eq!(n, 101 - 65);
        let unpaced = Pacer::new(t0, 0, 1000);
        assert_eq!(unpaced.due(t0, 7), (7, None));
    }
}
