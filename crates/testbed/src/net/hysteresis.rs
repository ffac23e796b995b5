//! The kernel's htb hysteresis, turned on while a testbed lives.
//!
//! Every switch port's rate limit is an htb class running at its ceiling whenever the
//! port is busy, so its tokens hover around zero. Without hysteresis (the kernel's
//! default) htb changes the class's mode each time they cross zero, which is about every
//! packet, and each change moves the class in and out of htb's wait queue and re-arms
//! the qdisc's watchdog timer. On this 2-core machine that bookkeeping was a third of all
//! CPU time in a W4 run at 1 Gbps (Homa 4.3-4.6 CPU s per GB without hysteresis, 2.9-3.0
//! with it; TCP 3.8-3.9 and 2.7-2.9): work of the emulated switch, which a real switch
//! does in hardware, charged to the hosts' measured CPU.
//!
//! With `htb_hysteresis` = 1 a class changes mode only once its tokens are a burst past
//! zero. The long-term rate is unchanged (every byte is still paid for); a port may send
//! at most one more burst back to back (100 us of link time, see `build_qdiscs`), and a
//! priority class keeps its guaranteed 1% a little longer before it must borrow.
//!
//! The parameter is machine-wide (`/sys/module/sch_htb/parameters/htb_hysteresis`), so it
//! is counted per process: the first testbed turns it on if it was off, the last one gone
//! (or the Ctrl-C handler) turns it off again. Only a real root can write it: in the user
//! namespace of a rootless run the write is refused and the testbed runs without it
//! ([`Testbed::htb_hysteresis`](super::Testbed::htb_hysteresis) says which).

use std::io;
use std::sync::Mutex;

use super::lifetime::lock;

/// The kernel's switch, counted per process.
static PARAM: Switch = Switch::new("/sys/module/sch_htb/parameters/htb_hysteresis");

/// A `0`/`1` parameter file held at `1` by any number of holders.
struct Switch {
    path: &'static str,
    holders: Mutex<Holders>,
}

/// How many hold it, and whether we turned it on (so turn it off after the last).
struct Holders {
    count: usize,
    turned_on: bool,
}

/// Hysteresis held on for one testbed; dropping it lets go.
pub(super) struct Held(&'static Switch);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Held").field(&self.0.path).finish()
    }
}

/// Turn hysteresis on (or find it on) and hold it. `Err`: why it is off.
pub(super) fn hold() -> Result<Held, String> {
    PARAM.hold()
}

/// The process is about to exit with testbeds still held (Ctrl-C): put the parameter
/// back now.
pub(super) fn restore_before_exit() {
    PARAM.restore(&mut lock(&PARAM.holders));
}

impl Switch {
    const fn new(path: &'static str) -> Switch {
        Switch {
            path,
            holders: Mutex::new(Holders {
                count: 0,
                turned_on: false,
            }),
        }
    }

    fn hold(&'static self) -> Result<Held, String> {
        let mut holders = lock(&self.holders);
        if holders.count == 0 {
            let describe = |what: &str, e: io::Error| format!("{what} {}: {e}", self.path);
            let on = std::fs::read_to_string(self.path)
                .map_err(|e| describe("cannot read", e))?
                .trim()
                == "1";
            if !on {
                std::fs::write(self.path, "1").map_err(|e| describe("cannot write", e))?;
                holders.turned_on = true;
            }
        }
        holders.count += 1;
        Ok(Held(self))
    }

    fn restore(&self, holders: &mut Holders) {
        if std::mem::take(&mut holders.turned_on) {
            // Best effort: nothing is left to report to (a drop, an exiting process).
            let _ = std::fs::write(self.path, "0");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let switch = self.0;
        let mut holders = lock(&switch.holders);
        holders.count -= 1;
        if holders.count == 0 {
            switch.restore(&mut holders);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the kernel's parameter file, in a directory of its own that is
    /// removed when the test ends (the `Switch` itself is leaked, as the real one is static).
    struct Scratch {
        dir: std::path::PathBuf,
        switch: &'static Switch,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn switch_file(initial: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "homa-testbed-hysteresis-{}-{initial}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("param");
        std::fs::write(&path, initial).unwrap();
        let path: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
        let switch = Box::leak(Box::new(Switch::new(path)));
        Scratch { dir, switch }
    }

    fn value(s: &Switch) -> String {
        std::fs::read_to_string(s.path).unwrap().trim().to_string()
    }

    #[test]
    fn turned_on_while_held_and_back_off_after_the_last_holder() {
        let scratch = switch_file("0\n");
        let s = scratch.switch;
        let a = s.hold().unwrap();
        assert_eq!(value(s), "1");
        let b = s.hold().unwrap();
        drop(a);
        assert_eq!(value(s), "1", "still held by b");
        drop(b);
        assert_eq!(value(s), "0");
        // And again, from off.
        let c = s.hold().unwrap();
        assert_eq!(value(s), "1");
        drop(c);
        assert_eq!(value(s), "0");
    }

    #[test]
    fn left_on_when_it_was_on_before() {
        let scratch = switch_file("1\n");
        let s = scratch.switch;
        drop(s.hold().unwrap());
        assert_eq!(value(s), "1");
    }

    #[test]
    fn a_missing_parameter_is_an_error_that_names_it() {
        let s: &'static Switch = Box::leak(Box::new(Switch::new("/nonexistent/htb_hysteresis")));
        let why = s.hold().unwrap_err();
        assert!(why.contains("/nonexistent/htb_hysteresis"), "{why}");
        assert_eq!(lock(&s.holders).count, 0);
    }
}
