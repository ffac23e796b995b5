//! Every field of [`Config`] by name, read and written as text: for tools that take
//! settings on a command line (`homa sim --set NAME=VALUE`) or print them.
//!
//! The list below is the one place that names the settings. The macro also destructures
//! a `Config` with every name and no `..`, so a field added to `Config` and not here
//! fails to compile.

use crate::Config;

/// Why [`Config::set`] refused a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// No setting has this name ([`Config::SETTINGS`] lists them).
    #[error("unknown setting {0:?} (the names are those of PROTOCOL.md section 6 and homa_core::Config)")]
    Unknown(String),
    /// The text is not a value of the setting's type.
    #[error("{name} = {value:?}: {why}")]
    BadValue {
        /// The setting.
        name: &'static str,
        /// The text given.
        value: String,
        /// What the setting takes.
        why: String,
    },
}

/// A type a setting holds, as text.
trait Text: Sized {
    fn parse_text(text: &str) -> Result<Self, String>;
    fn to_text(&self) -> String;
}

macro_rules! integer_text {
    ($($t:ty),*) => {$(
        impl Text for $t {
            /// Decimal, `_` allowed between digits (`40_000`).
            fn parse_text(text: &str) -> Result<Self, String> {
                let digits = text.trim().replace('_', "");
                digits
                    .parse()
                    .map_err(|_| format!("expected an integer 0..={}", <$t>::MAX))
            }
            fn to_text(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_text!(u8, u16, u32, u64);

impl Text for bool {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl Text for [u32; 8] {
    /// Eight integers separated by commas, optionally in brackets (`[0, 0, ..., 200]`).
    fn parse_text(text: &str) -> Result<Self, String> {
        let inner = text.trim();
        let inner = inner
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(inner);
        let values = inner
            .split(',')
            .map(u32::parse_text)
            .collect::<Result<Vec<_>, _>>()?;
        values.try_into().map_err(|v: Vec<u32>| {
            format!("expected eight comma-separated integers, got {}", v.len())
        })
    }
    fn to_text(&self) -> String {
        let items: Vec<String> = self.iter().map(u32::to_string).collect();
        format!("[{}]", items.join(", "))
    }
}

macro_rules! settings {
    ($($name:ident),* $(,)?) => {
        impl Config {
            /// The name of every setting, in the order of [`Config`]'s fields.
            pub const SETTINGS: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Sets the field `name` from `value`: integers in decimal (`_` allowed
            /// between digits), `true` or `false`, and `unsched_cutoffs` as eight
            /// comma-separated integers (in brackets or not). `rtt_bytes`, the Linux
            /// module's older name, sets `unsched_bytes`. Nothing is range-checked here:
            /// call [`validate`](Config::validate) once every setting is made.
            pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
                let name = match name.trim() {
                    "rtt_bytes" => "unsched_bytes",
                    other => other,
                };
                match name {
                    $(stringify!($name) => {
                        self.$name = Text::parse_text(value).map_err(|why| {
                            SettingError::BadValue {
                                name: stringify!($name),
                                value: value.to_string(),
                                why,
                            }
                        })?;
                    })*
                    other => return Err(SettingError::Unknown(other.to_string())),
                }
                Ok(())
            }

            /// The field `name` as text [`set`](Config::set) reads back (`None` for an
            /// unknown name). Valid TOML for the runtime's settings file, too.
            pub fn get(&self, name: &str) -> Option<String> {
                match name.trim() {
                    $(stringify!($name) => Some(self.$name.to_text()),)*
                    _ => None,
                }
            }
        }

        /// Never called: does not compile if `Config` has a field the list above lacks.
        #[allow(dead_code)]
        fn every_field_is_a_setting(c: Config) {
            let Config { $($name: _),* } = c;
        }
    };
}

settings!(
    unsched_bytes,
    max_incoming,
    max_overcommit,
    window,
    grant_step_divisor,
    grant_lead_bytes,
    grant_fifo_fraction,
    fifo_grant_increment,
    pacer_fifo_fraction,
    link_mbps,
    max_nic_est_backlog_usecs,
    defer_min_bytes,
    num_priorities,
    max_sched_prio,
    unsched_cutoffs,
    cutoff_version,
    resend_ticks,
    resend_interval,
    resend_backoff_max_ticks,
    timeout_ticks,
    request_ack_ticks,
    acks_in_every_packet,
    poll_usecs,
    bpage_size,
    max_message_length,
    peer_gc_threshold,
    peer_idle_secs_min,
    peer_idle_secs_max,
    peer_net_max,
    srpt,
    unsched_prio_by_remaining,
    grant_tail_bytes,
    learn_cutoffs_ticks,
    short_messages_by_priority,
    short_messages_srpt,
    tick_nanos,
    mtu,
    ip_overhead,
    max_incoming_held,
    max_stalled_messages,
    max_peer_share_percent,
    max_outgoing_held,
    dedup_horizon_ticks,
    client_history_idle_ticks,
    max_client_histories,
    client_id_base,
    seed,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_reads_back_what_it_shows() {
        let d = Config::default();
        let mut c = Config {
            seed: 7,
            ..Config::default()
        };
        for name in Config::SETTINGS {
            let text = d.get(name).expect("a listed name");
            c.set(name, &text)
                .unwrap_or_else(|e| panic!("{name} = {text}: {e}"));
        }
        assert_eq!(c, d);
        assert_eq!(Config::SETTINGS.len(), 47);
    }

    #[test]
    fn values_are_read_as_the_docs_say() {
        let mut c = Config::default();
        c.set(" rtt_bytes ", " 9_000 ").unwrap();
        c.set("srpt", "false").unwrap();
        c.set("unsched_cutoffs", "1,2,3,4,5,6,7,8").unwrap();
        c.set("tick_nanos", "2500000").unwrap();
        assert_eq!(c.unsched_bytes, 9_000);
        assert!(!c.srpt);
        assert_eq!(c.unsched_cutoffs, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.tick_nanos, 2_500_000);
        c.set("unsched_cutoffs", "[0, 0, 0, 0, 1000000, 15000, 2800, 200]")
            .unwrap();
        assert_eq!(c.unsched_cutoffs, Config::default().unsched_cutoffs);
        assert_eq!(
            c.get("unsched_cutoffs").unwrap(),
            "[0, 0, 0, 0, 1000000, 15000, 2800, 200]"
        );
    }

    #[test]
    fn bad_names_and_values_are_refused_and_change_nothing() {
        let mut c = Config::default();
        assert_eq!(
            c.set("nonsense", "1"),
            Err(SettingError::Unknown("nonsense".into()))
        );
        for (name, value) in [
            ("num_priorities", "256"),
            ("unsched_bytes", "-1"),
            ("unsched_bytes", "4e4"),
            ("srpt", "yes"),
            ("unsched_cutoffs", "1,2,3"),
            ("unsched_cutoffs", "1,2,3,4,5,6,7,8,9"),
            ("cutoff_version", "65536"),
            ("mtu", ""),
        ] {
            match c.set(name, value) {
                Err(SettingError::BadValue { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name} = {value:?}: {other:?}"),
            }
        }
        assert_eq!(c, Config::default());
        let e = c.set("num_priorities", "256").unwrap_err().to_string();
        assert!(e.contains("num_priorities") && e.contains("0..=255"), "{e}");
    }
}
