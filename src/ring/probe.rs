//! The feature probe: which setup flags, kernel features and opcodes this project can use here.

use io_uring::opcode;

use super::{Ring, RingError};

/// Which setup flags a ring runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: completions are produced only when this thread enters.
    DeferTaskrun,
    /// `COOP_TASKRUN`: no interrupting task work (kernels before 6.1 or refused flags).
    CoopTaskrun,
    /// No optional flags.
    Plain,
}

impl SetupMode {
    /// The flags as a person writes them.
    pub fn flags(&self) -> &'static str {
        match self {
            SetupMode::DeferTaskrun => "SINGLE_ISSUER|DEFER_TASKRUN",
            SetupMode::CoopTaskrun => "COOP_TASKRUN",
            SetupMode::Plain => "none",
        }
    }
}

/// The opcodes ringnode uses, by name, with whether it needs them or only uses them when present.
pub const OPCODES: &[(&str, u8, bool)] = &[
    ("NOP", opcode::Nop::CODE, true),
    ("ACCEPT (multishot)", opcode::AcceptMulti::CODE, true),
    ("CONNECT", opcode::Connect::CODE, true),
    ("RECV", opcode::Recv::CODE, true),
    ("SEND", opcode::Send::CODE, true),
    ("WRITEV", opcode::Writev::CODE, true),
    ("RECVMSG", opcode::RecvMsg::CODE, true),
    ("SENDMSG", opcode::SendMsg::CODE, true),
    ("READ", opcode::Read::CODE, true),
    ("SHUTDOWN", opcode::Shutdown::CODE, true),
    ("CLOSE", opcode::Close::CODE, true),
    ("TIMEOUT", opcode::Timeout::CODE, true),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE, true),
    ("MSG_RING", opcode::MsgRingData::CODE, true),
    ("SEND_ZC", opcode::SendZc::CODE, false),
    ("SENDMSG_ZC", opcode::SendMsgZc::CODE, false),
    ("LINK_TIMEOUT", opcode::LinkTimeout::CODE, false),
];

/// What the kernel offers, read from a ring created the way the runtime creates its own.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Setup flags in force.
    pub mode: SetupMode,
    /// `(name, supported, required)` for each opcode in `OPCODES`.
    pub opcodes: Vec<(&'static str, bool, bool)>,
    /// `(name, present)` for the kernel features the runtime looks at.
    pub features: Vec<(&'static str, bool)>,
}

impl Probe {
    /// Creates a throw-away ring on the calling thread and reads its capabilities.
    pub fn run() -> Result<Probe, RingError> {
        let ring = Ring::with_entries(8)?;
        let table = ring.probe().map_err(RingError::Io)?;
        let opcodes =
            OPCODES.iter().map(|&(name, code, required)| (name, table.is_supported(code), required)).collect();
        let p = ring.params();
        let features = vec![
            ("nodrop", p.is_feature_nodrop()),
            ("fast_poll", p.is_feature_fast_poll()),
            ("ext_arg", p.is_feature_ext_arg()),
            ("skip_cqe_on_success", p.is_feature_skip_cqe_on_success()),
            ("recvsend_bundle", p.is_feature_recvsend_bundle()),
            ("min_timeout", p.is_feature_min_timeout()),
            ("no_iowait", p.is_feature_no_iowait()),
        ];
        Ok(Probe { mode: ring.mode(), opcodes, features })
    }

    /// Fails with a clear error when a required opcode is missing (a kernel older than 6.1).
    pub fn require(&self) -> Result<(), RingError> {
        let missing: Vec<&str> = self.opcodes.iter().filter(|(_, ok, req)| *req && !ok).map(|(n, _, _)| *n).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(RingError::Unavailable {
            cause: format!("the kernel lacks io_uring operations ringnode needs ({})", missing.join(", ")),
            fix: "use Linux 6.1 or newer".into(),
        })
    }

    /// Whether a feature the runtime can use is present.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|(n, ok)| *n == feature && *ok)
    }
}

/// The kernel features the runtime actually uses on this host, for `ringnode info`.
pub fn features_in_use(p: &Probe) -> Vec<String> {
    let mut v = vec![
        format!("setup {}", p.mode.flags()),
        "multishot accept".to_string(),
        "multishot receive into a provided-buffer ring".to_string(),
    ];
    if p.opcodes.iter().any(|(n, ok, _)| *n == "MSG_RING" && *ok) {
        v.push("MSG_RING cross-core wake-ups".into());
    }
    if p.has("no_iowait") {
        v.push("waits not counted as iowait (NO_IOWAIT)".into());
    }
    if p.has("skip_cqe_on_success") {
        v.push("CQE skip on success (MSG_RING sends)".into());
    }
    if p.opcodes.iter().any(|(n, ok, _)| *n == "SENDMSG_ZC" && *ok) {
        v.push("SENDMSG_ZC for payloads at or above the zero-copy threshold".into());
    }
    if p.has("recvsend_bundle") {
        v.push("recv/send bundles: present, not used (see docs/ARCHITECTURE.md)".into());
    }
    if p.opcodes.iter().any(|(n, ok, _)| *n == "SEND_ZC" && *ok) {
        v.push("incremental buffer consumption: not used (see docs/ARCHITECTURE.md)".into());
    }
    v
}
