//! Socket options and the TOML configuration file.
//!
//! Every engine parameter of PROTOCOL.md section 6 is set under its Linux sysctl name, in
//! code through [`Options::config`] or in a file. The file below gives every key with the
//! value `Options::default()` uses, except the two marked "example" (`mtu`, `server`),
//! which have no fixed default; a key set in a file is taken as written:
//! setting `mtu`, `link_mbps`, `max_incoming` (raised 4x on loopback when not set) or
//! `grant_lead_bytes` (`unsched_bytes` when not set) there turns off the adjustment the
//! runtime makes at bind, so leave out what you do not mean to pin:
//!
//! ```toml
//! [homa]                     # homa_core::Config, field for field
//! unsched_bytes = 40000      # (older name: rtt_bytes)
//! max_incoming = 400000     # setting it keeps it on loopback too (default: 4x there); never above the receive buffer
//! max_overcommit = 8
//! window = 0
//! grant_step_divisor = 2     # ours, not the module's: a GRANT per half window
//! grant_lead_bytes = 40000   # ours: a GRANT once this little is left (default: unsched_bytes, kept in step)
//! grant_fifo_fraction = 50
//! fifo_grant_increment = 50000
//! pacer_fifo_fraction = 50
//! link_mbps = 25000          # setting it turns off link-speed detection
//! max_nic_est_backlog_usecs = 100 # the module's is 5, which held Homa over UDP far below its link rate
//! defer_min_bytes = 1000
//! num_priorities = 8
//! max_sched_prio = 3         # levels 0..=3 for granted bytes: change the cutoffs with it
//! unsched_cutoffs = [0, 0, 0, 0, 1000000, 15000, 2800, 200] # nonzero only above max_sched_prio
//! resend_ticks = 5
//! resend_interval = 5
//! resend_backoff_max_ticks = 20 # ours, not the module's: RESENDs answered BUSY back off
//! timeout_ticks = 100
//! request_ack_ticks = 6      # the module's is 2: a NEED_ACK only when no request came
//! poll_usecs = 50
//! bpage_size = 65536
//! max_message_length = 1000000
//! peer_gc_threshold = 64     # the module's is 5000 (PROTOCOL.md section 6)
//! peer_idle_secs_min = 10
//! peer_idle_secs_max = 120
//! peer_net_max = 10000
//! mtu = 9000                 # example: setting it turns off MTU detection (default: the link's)
//!
//! [runtime]
//! transport = "udp"          # or "raw" (IP protocol 146, needs CAP_NET_RAW)
//! gso = true
//! gro = true
//! recv_buffer_bytes = 8388608
//! send_buffer_bytes = 8388608
//! server = true              # example: take requests (default: only on a port you name)
//! one_way = false            # take one-way messages (this implementation's extension)
//! ```
//!
//! Unknown keys are errors that name the key. The engine-only settings of
//! [`homa_core::Config`] (`srpt`, `tick_nanos`, `max_incoming_held`, ...) are accepted in
//! `[homa]` too; `ip_overhead` is not: the transport decides it.

use homa_core::Config;
use serde::Deserialize;
use std::path::Path;

/// How Homa packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Each Homa packet is the payload of one UDP datagram, and the Homa port is the UDP
    /// port. Needs no privileges. Peers must use UDP mode too.
    #[default]
    Udp,
    /// IP protocol 146, byte-identical to the Linux kernel module, so this runtime talks
    /// to Linux Homa hosts. Needs `CAP_NET_RAW`.
    #[serde(rename = "raw", alias = "raw_ip", alias = "rawip")]
    RawIp,
}

/// The pacer's NIC-backlog allowance in `Options::default()`, microseconds (the Linux
/// module's is 5). The kernel's pacer thread spins and tops the NIC queue up every few
/// microseconds; a userspace pacer wakes on OS timers, tens of microseconds late when the
/// machine is busy, and with a 5 us allowance it releases less than a packet per wake-up
/// at 1 Gbps: on a 1 Gbps testbed link that held Homa to 0.6 Gbps at 0.8 Gbps offered
/// (`homa testbed bench`). 100 us lets it fill the link and still keeps the host's own
/// queue short next to the switch queues that priorities manage.
pub const USERSPACE_NIC_BACKLOG_USECS: u32 = 100;

/// The grant step in `Options::default()` (the engine's default is 16): a receiver sends
/// a GRANT once it can raise a message's grant by half its window, so the sender always
/// holds at least half a window (at 1 Gbps on the testbed, about 0.5 ms of link, several
/// round trips). Each GRANT costs the receiver a send and the sender a wake-up, a
/// receive and a send: on the testbed (W4, 1 Gbps ports) the engine's 16 drew 2 GRANTs
/// per RPC, a quarter window 1.46, a half 0.99, and system calls per RPC fell by 1.4-1.7
/// with the short-message tail and `homa perf tput`'s 1 MB throughput no worse.
pub const USERSPACE_GRANT_STEP_DIVISOR: u32 = 2;

/// The most ticks `Options::default()` lets a RESEND that keeps drawing BUSY wait (the
/// engine's default, 0, repeats it every `resend_ticks` as the Linux module does). On the
/// testbed (W4, 1 Gbps ports) requests queued behind shorter ones in the switch drew a
/// RESEND and a BUSY every 5 ms while they waited: 1.4 of each per RPC, more than the
/// GRANTs. Doubling the wait for each BUSY in a row, up to 20 ticks, keeps a live but
/// busy server asked within a fifth of `timeout_ticks`.
pub const USERSPACE_RESEND_BACKOFF_MAX_TICKS: u32 = 20;

/// How many ticks `Options::default()` lets a server wait after a response has left before
/// it asks the client for an ACK (the Linux module's `request_ack_ticks` is 2). A client
/// acknowledges its responses in its next request to the same server for free; the
/// NEED_ACK and the ACK it draws cost each end a system call and the other a wake-up, and
/// matter only to free the server's record sooner. On the testbed (W4, 0.5 Gbps ports)
/// a client's next request to a server came more than 2 ms later often enough for 5
/// NEED_ACKs and 5 ACKs per 100 DATA packets; after 6 ticks, 1.8 of each. The server holds
/// each answered RPC about 4 ms longer when no request follows.
pub const USERSPACE_REQUEST_ACK_TICKS: u32 = 6;

/// How to open a [`Socket`](crate::Socket): transport, engine configuration and socket
/// tuning. `Options::default()` is UDP with the engine's defaults (`Config::default()`,
/// the Linux module's except where docs/PROTOCOL.md section 6 says, such as
/// `peer_gc_threshold`), and these changed for a userspace runtime:
/// `max_nic_est_backlog_usecs`, see [`USERSPACE_NIC_BACKLOG_USECS`],
/// `grant_step_divisor`, see [`USERSPACE_GRANT_STEP_DIVISOR`], and
/// `resend_backoff_max_ticks`, see [`USERSPACE_RESEND_BACKOFF_MAX_TICKS`], and
/// `request_ack_ticks`, see [`USERSPACE_REQUEST_ACK_TICKS`]; the MTU and link speed are
/// detected from the interface, and `max_incoming` and `grant_lead_bytes` adjusted at bind
/// (see [`config`](Self::config)).
#[derive(Debug, Clone)]
pub struct Options {
    /// UDP (default) or raw IP protocol 146.
    pub transport: Transport,
    /// The engine's parameters. `ip_overhead` is always set from the transport and the
    /// address family; `mtu` and `link_mbps` are replaced by detected values unless
    /// [`auto_mtu`](Self::auto_mtu) / [`auto_link_mbps`](Self::auto_link_mbps) are off;
    /// a zero `client_id_base` or `seed` is replaced by one drawn from the operating
    /// system's random source. At bind, `max_incoming` is also cut to the receive buffer
    /// the kernel granted (see [`recv_buffer_bytes`](Self::recv_buffer_bytes)) and raised
    /// on loopback ([`loopback_profile`](Self::loopback_profile)), and a zero
    /// `grant_lead_bytes` follows `unsched_bytes` ([`auto_grant_lead`](Self::auto_grant_lead)).
    pub config: Config,
    /// Take the MTU from the interface of the bound address (capped at 65535, the most an
    /// IP packet can carry; with an unspecified address, or one that is not a loopback
    /// address but sits on the loopback interface, the smallest MTU of the host's up,
    /// non-loopback interfaces, and the configuration's `mtu` where there is none). Read
    /// once, at bind: the MTU of a path through a hop with a smaller one is not learnt
    /// (IPv4 packets over UDP are then fragmented on the way; set `mtu` to the path's
    /// where that is known). Default on.
    pub auto_mtu: bool,
    /// Take `link_mbps` from the interface speed the kernel reports (ethtool), if any;
    /// loopback reports none and gets 1000000 (1 Tbps: loopback has no NIC queue for the
    /// pacer to keep short). Default on.
    pub auto_link_mbps: bool,
    /// On a loopback address, raise `max_incoming` 4x (to 1.6 MB) if it is still the
    /// Linux default: grant round trips on loopback are software-bound (tens of
    /// microseconds), and the default window leaves a sender waiting. Default on.
    pub loopback_profile: bool,
    /// At bind, a `grant_lead_bytes` of 0 becomes `unsched_bytes`: a message is granted
    /// again only when its sender has about a round trip of granted bytes left, then up to
    /// the whole window, instead of every half window (`grant_step_divisor`). Each GRANT
    /// costs a userspace receiver a send and its sender a wake-up, a receive and a send;
    /// on the testbed at W4 this took GRANTs per RPC from 1.01 to 0.78 (BENCHMARKS.md).
    /// Setting `grant_lead_bytes` in a configuration file, 0 included, turns this off.
    /// Default on.
    pub auto_grant_lead: bool,
    /// Accept incoming requests. `None` (default): yes for any port the address names,
    /// no for an automatic port (port 0).
    pub server: Option<bool>,
    /// Take one-way messages ([`MessageKind::OneWay`](crate::MessageKind::OneWay)), this
    /// implementation's extension: peers send them to this socket only after it said it
    /// takes them (docs/PROTOCOL.md, "One-way messages"), so a socket that does not, and
    /// the Linux module, never see one. Independent of [`server`](Self::server). Default
    /// off.
    pub one_way: bool,
    /// Use UDP GSO (`UDP_SEGMENT`) for runs of same-size packets, if the kernel has it.
    /// A destination whose route refuses it gets single datagrams. UDP only.
    pub gso: bool,
    /// Use UDP GRO (`UDP_GRO`) on receive, if the kernel has it. It is turned on when the
    /// socket starts receiving in bulk (after 64 datagrams that were 1,200 bytes or more,
    /// or came several to one receive call), not at bind: until then a blocking receive
    /// uses `recvfrom`, which costs less than
    /// the `recvmsg` GRO needs (~0.35 us of a 100-byte round trip on loopback), so a socket
    /// that only ever sees short messages never pays for GRO. UDP only.
    pub gro: bool,
    /// `SO_RCVBUF` to ask for (forced past `rmem_max` when privileged). The engine's
    /// `max_incoming` (bytes granted and not yet received) is cut to what the kernel
    /// grants, set in a file or not: more would be dropped by the kernel.
    /// `SocketInfo::recv_buffer_bytes` says what was granted. UDP only: raw-IP sockets
    /// share one socket per address family, of 16 MiB each way.
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF` to ask for (forced past `wmem_max` when privileged). UDP only.
    pub send_buffer_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            transport: Transport::Udp,
            config: Config {
                max_nic_est_backlog_usecs: USERSPACE_NIC_BACKLOG_USECS,
                grant_step_divisor: USERSPACE_GRANT_STEP_DIVISOR,
                resend_backoff_max_ticks: USERSPACE_RESEND_BACKOFF_MAX_TICKS,
                request_ack_ticks: USERSPACE_REQUEST_ACK_TICKS,
                ..Config::default()
            },
            auto_mtu: true,
            auto_link_mbps: true,
            loopback_profile: true,
            auto_grant_lead: true,
            server: None,
            one_way: false,
            gso: true,
            gro: true,
            recv_buffer_bytes: 8 << 20,
            send_buffer_bytes: 8 << 20,
        }
    }
}

/// The longest configuration file [`Options::from_toml_file`] reads: far more than every
/// key with a comment each.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// The values parse but are inconsistent.
    #[error(transparent)]
    Invalid(#[from] homa_core::ConfigError),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    homa: Option<HomaTable>,
    runtime: Option<RuntimeTable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RuntimeTable {
    transport: Option<Transport>,
    gso: Option<bool>,
    gro: Option<bool>,
    server: Option<bool>,
    one_way: Option<bool>,
    recv_buffer_bytes: Option<usize>,
    send_buffer_bytes: Option<usize>,
}

macro_rules! homa_table {
    ($($(#[$m:meta])* $name:ident: $ty:ty),* $(,)?) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct HomaTable {
            $($(#[$m])* $name: Option<$ty>,)*
        }
        impl HomaTable {
            fn apply(&self, c: &mut Config) {
                $(if let Some(v) = self.$name { c.$name = v; })*
            }
        }
    };
}

homa_table! {
    #[serde(alias = "rtt_bytes")]
    unsched_bytes: u32,
    max_incoming: u32,
    max_overcommit: u32,
    window: u32,
    grant_step_divisor: u32,
    grant_lead_bytes: u32,
    grant_fifo_fraction: u32,
    fifo_grant_increment: u32,
    pacer_fifo_fraction: u32,
    link_mbps: u32,
    max_nic_est_backlog_usecs: u32,
    defer_min_bytes: u32,
    num_priorities: u8,
    max_sched_prio: u8,
    unsched_cutoffs: [u32; 8],
    cutoff_version: u16,
    resend_ticks: u32,
    resend_interval: u32,
    resend_backoff_max_ticks: u32,
    timeout_ticks: u32,
    request_ack_ticks: u32,
    poll_usecs: u32,
    bpage_size: u32,
    max_message_length: u32,
    peer_gc_threshold: u32,
    peer_idle_secs_min: u32,
    peer_idle_secs_max: u32,
    peer_net_max: u32,
    srpt: bool,
    unsched_prio_by_remaining: bool,
    acks_in_every_packet: bool,
    grant_tail_bytes: u32,
    learn_cutoffs_ticks: u32,
    short_messages_by_priority: bool,
    short_messages_srpt: bool,
    tick_nanos: u64,
    mtu: u32,
    max_incoming_held: u64,
    max_stalled_messages: u32,
    max_peer_share_percent: u32,
    max_outgoing_held: u64,
    dedup_horizon_ticks: u32,
    client_history_idle_ticks: u32,
    max_client_histories: u32,
    client_id_base: u64,
    seed: u64,
}

impl Options {
    /// Options from TOML text with a `[homa]` table (engine parameters under their
    /// PROTOCOL.md section 6 names) and an optional `[runtime]` table. Keys not given
    /// keep their defaults; unknown keys are errors.
    pub fn from_toml_str(text: &str) -> Result<Options, ConfigFileError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigFileError::Parse(e.to_string()))?;
        let mut o = Options::default();
        if let Some(h) = &file.homa {
            h.apply(&mut o.config);
            if h.mtu.is_some() {
                o.auto_mtu = false;
            }
            if h.link_mbps.is_some() {
                o.auto_link_mbps = false;
            }
            if h.max_incoming.is_some() {
                o.loopback_profile = false;
            }
            if h.grant_lead_bytes.is_some() {
                o.auto_grant_lead = false;
            }
        }
        if let Some(r) = file.runtime {
            o.transport = r.transport.unwrap_or(o.transport);
            o.gso = r.gso.unwrap_or(o.gso);
            o.gro = r.gro.unwrap_or(o.gro);
            o.server = r.server.or(o.server);
            o.one_way = r.one_way.unwrap_or(o.one_way);
            o.recv_buffer_bytes = r.recv_buffer_bytes.unwrap_or(o.recv_buffer_bytes);
            o.send_buffer_bytes = r.send_buffer_bytes.unwrap_or(o.send_buffer_bytes);
        }
        o.config.validate()?;
        Ok(o)
    }

    /// [`from_toml_str`](Self::from_toml_str) on a file's contents. The file must be a
    /// regular file of at most [`MAX_CONFIG_FILE_BYTES`]: a device such as `/dev/zero`
    /// would otherwise be read until memory runs out, and a FIFO would block for good.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Options, ConfigFileError> {
        use std::io::Read;
        let path = path.as_ref();
        let refuse = |source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        };
        let invalid =
            |why: &str| refuse(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
        // Opened without blocking: opening a FIFO for reading would wait for a writer
        // before the check below could refuse it (reads of a regular file never wait).
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(refuse)?
        };
        if !file.metadata().map_err(refuse)?.is_file() {
            return Err(invalid("not a regular file"));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(refuse)?;
        if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(invalid("longer than a configuration file can be (1 MiB)"));
        }
        Self::from_toml_str(&text)
    }

    /// These options with `transport` instead.
    pub fn with_transport(mut self, transport: Transport) -> Options {
        self.transport = transport;
        self
    }

    /// These options with `config` instead, as given: a `Config` made from
    /// `Config::default()` carries the module's values, not the four userspace ones
    /// `Options::default()` sets (`grant_step_divisor`, `max_nic_est_backlog_usecs`,
    /// `resend_backoff_max_ticks`, `request_ack_ticks`). To change a few settings and keep
    /// the rest, set them on `Options::default().config` instead.
    pub fn with_config(mut self, config: Config) -> Options {
        self.config = config;
        self
    }
}

/// An engine [`Config`] from TOML text holding a `[homa]` table. A `[runtime]` table is
/// allowed, and checked as [`Options::from_toml_str`] checks it, but its values are not
/// returned; any other table is an error.
///
/// Only the `Config`: which keys the file set is lost, so a socket bound with it still
/// detects the MTU and link rate and adjusts `max_incoming` and `grant_lead_bytes`, as
/// for `Options::default()`. Use [`Options::from_toml_str`] to bind as the file says.
pub fn config_from_toml(text: &str) -> Result<Config, ConfigFileError> {
    Options::from_toml_str(text).map(|o| o.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example at the top of this module is a file users copy: it must parse, and
    /// say what it says.
    #[test]
    fn the_documented_example_parses() {
        let src = include_str!("options.rs");
        let start = src.find("//! ```toml\n").expect("the example") + "//! ```toml\n".len();
        let len = src[start..].find("//! ```\n").expect("its end");
        let text: String = src[start..start + len]
            .lines()
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start())
            .map(|l| format!("{l}\n"))
            .collect();
        let o = Options::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(o.config.mtu, 9000);
        assert_eq!(o.server, Some(true));
        assert!(!o.one_way);
        // The userspace values `Options::default()` uses, not the module's.
        let d = Options::default().config;
        let userspace = |c: &Config| {
            (
                c.grant_step_divisor,
                c.max_nic_est_backlog_usecs,
                c.resend_backoff_max_ticks,
                c.request_ack_ticks,
            )
        };
        assert_eq!(userspace(&o.config), userspace(&d));
    }

    #[test]
    fn every_section_6_name_parses_and_unknown_keys_fail() {
        let o = Options::from_toml_str(
            "[homa]\nrtt_bytes = 60000\nmax_incoming = 1000000\nwindow = 70000\n\
             unsched_cutoffs = [0,0,0,0,1000000,20000,3000,100]\nlink_mbps = 10000\n\
             [runtime]\ntransport = \"raw\"\n",
        )
        .unwrap();
        assert_eq!(o.config.unsched_bytes, 60_000);
        assert_eq!(o.config.max_incoming, 1_000_000);
        assert_eq!(o.config.window, 70_000);
        assert_eq!(o.config.unsched_cutoffs[5], 20_000);
        assert_eq!(o.transport, Transport::RawIp);
        assert!(!o.auto_link_mbps && o.auto_mtu);

        assert!(!o.one_way);
        let o = Options::from_toml_str(
            "[homa]\npeer_gc_threshold = 5000\npeer_idle_secs_min = 5\npeer_idle_secs_max = 60\n\
             peer_net_max = 20000\nmax_client_histories = 1000\n",
        )
        .unwrap();
        let c = &o.config;
        assert_eq!(
            (
                c.peer_gc_threshold,
                c.peer_idle_secs_min,
                c.peer_idle_secs_max
            ),
            (5_000, 5, 60)
        );
        assert_eq!((c.peer_net_max, c.max_client_histories), (20_000, 1_000));
        let o = Options::from_toml_str(
            "[homa]\nlearn_cutoffs_ticks = 10\nunsched_prio_by_remaining = true\n\
             grant_tail_bytes = 9000\nshort_messages_by_priority = true\n\
             short_messages_srpt = true\n\
             [runtime]\none_way = true\n",
        )
        .unwrap();
        assert!(o.one_way);
        let c = &o.config;
        assert_eq!((c.learn_cutoffs_ticks, c.grant_tail_bytes), (10, 9_000));
        assert!(c.unsched_prio_by_remaining && c.short_messages_by_priority);
        assert!(c.short_messages_srpt);

        let e = Options::from_toml_str("[homa]\nunsched_byte = 1\n").unwrap_err();
        assert!(e.to_string().contains("unsched_byte"), "{e}");
        let e = Options::from_toml_str("[homer]\n").unwrap_err();
        assert!(e.to_string().contains("homer"), "{e}");
        let e = Options::from_toml_str("[homa]\nip_overhead = 28\n").unwrap_err();
        assert!(e.to_string().contains("ip_overhead"), "{e}");
        let e = Options::from_toml_str("[homa]\nmax_sched_prio = 9\n").unwrap_err();
        assert!(matches!(e, ConfigFileError::Invalid(_)), "{e}");
    }

    /// The file takes every engine setting but `ip_overhead` (the transport decides it),
    /// under the names `homa sim --set` uses: the two lists cannot drift apart.
    #[test]
    fn the_file_takes_every_engine_setting_by_its_name() {
        let mut want = Options::default().config;
        want.seed = 12_345;
        for &name in Config::SETTINGS {
            let value = want.get(name).expect("a listed name");
            let parsed = Options::from_toml_str(&format!("[homa]\n{name} = {value}\n"));
            if name == "ip_overhead" {
                assert!(parsed.is_err(), "ip_overhead is the transport's to set");
                continue;
            }
            let c = parsed
                .unwrap_or_else(|e| panic!("{name} = {value}: {e}"))
                .config;
            assert_eq!(c.get(name), Some(value), "{name}");
        }
    }

    #[test]
    fn values_that_would_break_the_engine_are_refused_with_a_reason() {
        // Each once passed validation and then divided by zero, overflowed, or made every
        // full DATA packet fail to send.
        for (text, word) in [
            ("bpage_size = 0", "bpage_size"),
            ("max_stalled_messages = 4294967295", "max_stalled_messages"),
            ("mtu = 70000", "mtu"),
            ("tick_nanos = 18446744073709551615", "tick_nanos"),
            ("client_id_base = 18446744073709551615", "client_id_base"),
            ("peer_net_max = 0", "peer_net_max"),
            ("peer_net_max = 16777217", "peer_net_max"),
            ("peer_gc_threshold = 16777217", "peer_gc_threshold"),
            ("peer_idle_secs_min = 200", "peer_idle_secs_min"),
            ("peer_idle_secs_max = 2000000", "peer_idle_secs_max"),
            ("max_client_histories = 0", "max_client_histories"),
            // Not a crash, but every RPC that lost a packet failed.
            ("timeout_ticks = 5", "timeout_ticks"),
            // Nor these: a thread spinning for an hour; unscheduled bytes below granted ones.
            ("poll_usecs = 4000000000", "poll_usecs"),
            (
                "unsched_cutoffs = [0, 0, 0, 0, 0, 0, 0, 0]",
                "unsched_cutoffs",
            ),
            ("max_sched_prio = 5", "unsched_cutoffs[4]"),
        ] {
            let e = Options::from_toml_str(&format!("[homa]\n{text}\n")).unwrap_err();
            assert!(
                matches!(e, ConfigFileError::Invalid(_)) && e.to_string().contains(word),
                "{text}: {e}"
            );
        }
    }
}
