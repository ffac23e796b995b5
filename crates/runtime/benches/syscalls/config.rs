//! Command-line configuration: how long, what window, which variants, where the threads run.

use super::*;

pub(crate) struct Config {
    pub(crate) seconds: f64,
    pub(crate) window: usize,
    /// `--only a,b`: run just these variants (for profiling one).
    pub(crate) only: Option<Vec<String>>,
    pub(crate) pin: Pin,
}

/// Where the two threads run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Client and server each on its own CPU, as on two hosts (the default).
    Split,
    /// Both on one CPU: wake-ups without inter-processor interrupts.
    Same,
    /// Wherever the scheduler puts them (it may move them between slices).
    Free,
}

impl Config {
    /// `--seconds S`, `--window N`, `--pin split|same|none` and `--only a,b` (also
    /// `--name=value`); anything else, such as the `--bench` cargo passes, is ignored.
    pub(crate) fn from_args(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut cfg = Config {
            seconds: DEFAULT_SECONDS,
            window: DEFAULT_WINDOW,
            only: None,
            pin: Pin::Split,
        };
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg, None),
            };
            if !["--seconds", "--window", "--only", "--pin"].contains(&name.as_str()) {
                continue;
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))?;
            if name == "--pin" {
                cfg.pin = match value.as_str() {
                    "split" => Pin::Split,
                    "same" => Pin::Same,
                    "none" => Pin::Free,
                    _ => return Err(format!("--pin {value}: want split, same or none")),
                };
            } else if name == "--only" {
                let names: Vec<String> = value.split(',').map(str::to_string).collect();
                if let Some(n) = names
                    .iter()
                    .find(|n| !Variant::ALL.iter().any(|v| v.name() == n.as_str()))
                {
                    return Err(format!("--only: unknown variant {n}"));
                }
                cfg.only = Some(names);
            } else if name == "--seconds" {
                cfg.seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or_else(|| format!("--seconds {value}: want a number in (0, 3600]"))?;
            } else {
                cfg.window = value
                    .parse::<usize>()
                    .ok()
                    .filter(|w| (1..=MAX_WINDOW).contains(w))
                    .ok_or_else(|| format!("--window {value}: want 1..={MAX_WINDOW}"))?;
            }
        }
        Ok(cfg)
    }

    /// The length of one measured slice and how many each variant gets.
    pub(crate) fn slices(&self) -> (Duration, usize) {
        let slice = SLICE.min(Duration::from_secs_f64(self.seconds));
        let rounds = (self.seconds / slice.as_secs_f64() - 1e-9).ceil().max(1.0);
        (slice, rounds as usize)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Mmsg,
    MmsgGso,
    Uring,
    UringGso,
}

impl Variant {
    pub(crate) const ALL: [Variant; 4] = [
        Variant::Mmsg,
        Variant::MmsgGso,
        Variant::Uring,
        Variant::UringGso,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Mmsg => "mmsg",
            Variant::MmsgGso => "mmsg_gso",
            Variant::Uring => "uring",
            Variant::UringGso => "uring_gso",
        }
    }

    pub(crate) fn gso(self) -> bool {
        matches!(self, Variant::MmsgGso | Variant::UringGso)
    }

    pub(crate) fn uring(self) -> bool {
        matches!(self, Variant::Uring | Variant::UringGso)
    }
}
