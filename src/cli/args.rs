//! The commands and flags, with their defaults stated once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// ringnode: a thread-per-core io_uring node runtime and its tools.
#[derive(Debug, Parser)]
#[command(name = "ringnode", version, about, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Echo server: sends back every byte (TCP) or datagram (UDP) it receives.
    Echo {
        /// Address to listen on, e.g. `127.0.0.1:7000` or `[::1]:7000` (port 0: any free port).
        #[arg(long, value_parser = parse_addr)]
        listen: SocketAddr,
        /// Cores (pinned threads, one ring each); default: every CPU this process may use.
        #[arg(long)]
        cores: Option<usize>,
        /// Echo UDP datagrams instead of TCP streams.
        #[arg(long, conflicts_with = "framed")]
        udp: bool,
        /// Echo native frames (docs/PROTOCOL.md) instead of bytes.
        #[arg(long)]
        framed: bool,
        /// Largest frame payload accepted (framed); larger frames close the connection.
        #[arg(long, default_value = "1MiB", value_parser = parse_size)]
        max_frame: usize,
        /// Payloads of this size or more are sent with zero-copy send (framed).
        #[arg(long, default_value = "64KiB", value_parser = parse_size)]
        zc_threshold: usize,
        /// Bytes a connection may have queued for sending (framed).
        #[arg(long, default_value = "4MiB", value_parser = parse_size)]
        send_limit: usize,
    },
    /// Closed-loop load against an echo server: send, wait for the echo, check every byte, repeat.
    Load {
        /// What each connection does: `echo` (bytes) or `framed` (native frames).
        #[arg(long, value_enum, default_value_t = LoadMode::Echo)]
        mode: LoadMode,
        /// The server, e.g. 127.0.0.1:7000.
        #[arg(long, value_parser = parse_addr)]
        target: SocketAddr,
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Payload size: bytes, or with a unit (64, 4KiB, 1MiB).
        #[arg(long, default_value = "64", value_parser = parse_size)]
        size: usize,
        /// How long to send: 500ms, 5s, 2m.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Payloads sent back to back per connection before waiting for their echoes.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        pipeline: u32,
        /// Cores; default: every CPU this process may use.
        #[arg(long)]
        cores: Option<usize>,
        /// Source address range for outgoing connections, e.g. 127.0.0.1-127.0.0.4 (about 28,000
        /// ephemeral ports per source address).
        #[arg(long)]
        source: Option<String>,
        /// Open connections at this many per second (default: all at once).
        #[arg(long, value_parser = parse_rate)]
        ramp: Option<f64>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// What this kernel offers: io_uring setup flags, features and opcodes.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Starts an echo server on loopback and runs a load against it (server and client on separate
    /// CPUs when there are at least two).
    Demo {
        /// How long the load runs.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Payload size.
        #[arg(long, default_value = "64", value_parser = parse_size)]
        size: usize,
    },
}

/// `--mode` of `load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// Raw bytes, echoed back.
    Echo,
    /// Native frames.
    Framed,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive rate")),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("'{s}' is not an address with a port, such as 127.0.0.1:7000 or [::1]:7000"))
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration such as 500ms, 5s or 2m");
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 30.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `64`, `4KiB`, `4k`, `1MiB`, `1m` (binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("'{s}' is not a size such as 64, 4KiB or 1MiB");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: usize = num.parse().map_err(|_| bad())?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(bad()),
    };
    let n = v.checked_mul(mult).ok_or_else(bad)?;
    if n == 0 || n > 64 << 20 {
        return Err(format!("'{s}': the size must be between 1 byte and 64 MiB"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12q").is_err());
    }
}
