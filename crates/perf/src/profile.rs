//! Profiling one lane of an alternating run.
//!
//! `homa perf tput` alternates its lanes (transports, and with `--and-window` two windows)
//! in slices of about half a second, so that the machine's drifts in speed fall on all of
//! them alike. A profile taken over the whole run mixes the lanes. Given `perf record`'s
//! control FIFO, the run turns the profiler's events on for the measured slices of one
//! lane only, and off after each:
//!
//! ```sh
//! mkfifo ctl ack
//! perf record -a -g -D -1 --control fifo:ctl,ack -o w256.data -- \
//!     homa perf tput --size 1000000 --window 64 --and-window 256 --only homa \
//!     --profile-lane homa --profile-window 256 --perf-ctl ctl,ack
//! ```
//!
//! (`-D -1` starts `perf` with its events off.) With the acknowledgement FIFO, each
//! command waits for `perf`'s `ack`, so the events are on before the slice starts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use crate::tput::TputProto;
use crate::PerfError;

/// Which lane's slices to profile, and how to tell the profiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileLane {
    /// The transport: `Homa` or `Tcp` (the lanes measured at a window).
    pub proto: TputProto,
    /// The window of that lane (`--window` or `--and-window`).
    pub window: usize,
    /// The profiler's control FIFO (or any file: commands are appended as lines).
    pub ctl: PathBuf,
    /// The profiler's acknowledgement FIFO: after each command, a line is read from it.
    pub ack: Option<PathBuf>,
}

impl ProfileLane {
    /// Parses `CTL[,ACK]` (the form `perf record --control fifo:` takes) into the FIFOs.
    pub fn fifos(spec: &str) -> Result<(PathBuf, Option<PathBuf>), PerfError> {
        let mut parts = spec.split(',');
        let ctl = parts.next().filter(|c| !c.is_empty());
        let ack = parts.next().filter(|a| !a.is_empty());
        match (ctl, parts.next()) {
            (Some(ctl), None) => Ok((ctl.into(), ack.map(PathBuf::from))),
            _ => Err(PerfError::BadProfile(format!(
                "--perf-ctl takes CTL or CTL,ACK (paths), got {spec:?}"
            ))),
        }
    }

    /// Refuses a lane the run does not measure.
    pub(crate) fn validate(
        &self,
        protos: &[TputProto],
        windows: &[usize],
    ) -> Result<(), PerfError> {
        if !matches!(self.proto, TputProto::Homa | TputProto::Tcp) {
            return Err(PerfError::BadProfile(
                "only the homa and tcp lanes can be profiled".into(),
            ));
        }
        if !protos.contains(&self.proto) {
            return Err(PerfError::BadProfile(format!(
                "the {:?} lane is not measured in this run (see --only)",
                self.proto
            )));
        }
        if !windows.contains(&self.window) {
            return Err(PerfError::BadProfile(format!(
                "no lane runs at window {} (the run's windows: {windows:?})",
                self.window
            )));
        }
        Ok(())
    }
}

/// The open FIFOs of a [`ProfileLane`].
pub(crate) struct PerfControl {
    ctl: File,
    ack: Option<BufReader<File>>,
}

impl PerfControl {
    /// Opens the control FIFO for writing, then the acknowledgement FIFO for reading (each
    /// open of a FIFO waits for the other end: `perf` opens both as it starts).
    pub(crate) fn open(lane: &ProfileLane) -> Result<PerfControl, PerfError> {
        let io = |what: String| move |source| PerfError::Io { what, source };
        let ctl = OpenOptions::new()
            .append(true)
            .open(&lane.ctl)
            .map_err(io(format!("cannot open {}", lane.ctl.display())))?;
        let ack = match &lane.ack {
            Some(a) => Some(BufReader::new(
                File::open(a).map_err(io(format!("cannot open {}", a.display())))?,
            )),
            None => None,
        };
        Ok(PerfControl { ctl, ack })
    }

    /// Sends `command` (`enable`, `disable`) and waits for its acknowledgement, if any.
    pub(crate) fn command(&mut self, command: &str) -> Result<(), PerfError> {
        let io = |source| PerfError::Io {
            what: format!("cannot tell the profiler to {command}"),
            source,
        };
        self.ctl
            .write_all(format!("{command}\n").as_bytes())
            .and_then(|()| self.ctl.flush())
            .map_err(io)?;
        if let Some(ack) = &mut self.ack {
            let mut line = String::new();
            if ack.read_line(&mut line).map_err(io)? == 0 {
                return Err(PerfError::Io {
                    what: format!("the profiler closed its acknowledgement FIFO (after {command})"),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(proto: TputProto, window: usize) -> ProfileLane {
        ProfileLane {
            proto,
            window,
            ctl: "ctl".into(),
            ack: None,
        }
    }

    #[test]
    fn fifo_specs_parse_like_perfs() {
        assert_eq!(
            ProfileLane::fifos("ctl").unwrap(),
            (PathBuf::from("ctl"), None)
        );
        assert_eq!(
            ProfileLane::fifos("/tmp/ctl,/tmp/ack").unwrap(),
            (PathBuf::from("/tmp/ctl"), Some(PathBuf::from("/tmp/ack")))
        );
        for bad in ["", ",ack", "a,b,c"] {
            assert!(ProfileLane::fifos(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_a_lane_the_run_measures_is_accepted() {
        let protos = [TputProto::Homa, TputProto::Udp];
        assert!(lane(TputProto::Homa, 64)
            .validate(&protos, &[64, 256])
            .is_ok());
        assert!(lane(TputProto::Homa, 256)
            .validate(&protos, &[64, 256])
            .is_ok());
        assert!(lane(TputProto::Homa, 8)
            .validate(&protos, &[64, 256])
            .is_err());
        assert!(lane(TputProto::Tcp, 64).validate(&protos, &[64]).is_err());
        assert!(lane(TputProto::Udp, 64).validate(&protos, &[64]).is_err());
    }

    #[test]
    fn commands_are_lines_and_wait_for_their_acknowledgement() {
        let dir = std::env::temp_dir().join(format!("homa-perf-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ctl, ack) = (dir.join("ctl"), dir.join("ack"));
        std::fs::write(&ctl, "").unwrap();
        std::fs::write(&ack, "ack\n").unwrap();
        let spec = ProfileLane {
            ack: Some(ack.clone()),
            ctl: ctl.clone(),
            ..lane(TputProto::Homa, 64)
        };
        let mut c = PerfControl::open(&spec).unwrap();
        c.command("enable").unwrap();
        // One acknowledgement in the file: the second command finds none.
        assert!(c.command("disable").is_err());
        assert_eq!(std::fs::read_to_string(&ctl).unwrap(), "enable\ndisable\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
