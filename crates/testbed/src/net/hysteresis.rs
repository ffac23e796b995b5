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
//! The parameter is machine-wide (`/sys/module/sch_htb/parameters/htb_hysteresis`). A
//! testbed that finds it off turns it on and leaves a mark beside the testbeds' markers
//! ([`TURNED_ON_MARK`]); it goes off again, and the mark with it, when the last testbed of
//! the last process using one is gone (counted per process, and across processes through
//! their markers; the Ctrl-C handler too), or at `homa testbed clean` after a process that
//! had it on was killed. Found on without the mark, it was on before, and stays on. Only a
//! real root can write it: in the user namespace of a rootless run the write is refused
//! and the testbed runs without it
//! ([`Testbed::htb_hysteresis`](super::Testbed::htb_hysteresis) says which).

use std::io;
use std::path::Path;
use std::sync::Mutex;

use super::lifetime::{lock, other_processes_have_testbeds};

/// Says that a testbed turned the parameter on. Beside the testbeds' markers (in
/// `/run`, so a reboot, which puts the parameter back to 0, removes it too), not among
/// them: it names no namespaces.
pub(super) const TURNED_ON_MARK: &str = "/run/homa-testbed.htb_hysteresis";

/// The kernel's switch, counted per process.
static PARAM: Switch = Switch::new(
    "/sys/module/sch_htb/parameters/htb_hysteresis",
    TURNED_ON_MARK,
    other_processes_have_testbeds,
);

/// A `0`/`1` parameter file held at `1` by any number of holders.
struct Switch {
    path: &'static str,
    /// Exists while the parameter is on because a testbed turned it on.
    mark: &'static str,
    /// Whether testbeds of other live processes may still want it on.
    others_live: fn() -> bool,
    holders: Mutex<Holders>,
}

/// How many hold it in this process, and whether a testbed turned it on (so turn it off
/// after the last, unless other processes still have testbeds).
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

/// For `homa testbed clean`: turn the parameter off if a testbed turned it on and no live
/// process has a testbed (`anyone_live`: this one included). Returns whether it did.
pub(super) fn restore_if_abandoned(anyone_live: bool) -> bool {
    PARAM.restore_if_abandoned(anyone_live)
}

impl Switch {
    const fn new(path: &'static str, mark: &'static str, others_live: fn() -> bool) -> Switch {
        Switch {
            path,
            mark,
            others_live,
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
            if on {
                // Turned on by a testbed of another process: the last one turns it off.
                holders.turned_on = Path::new(self.mark).exists();
            } else {
                // The mark first: another process that finds the parameter on then finds
                // the mark too, and a kill between the two writes leaves the mark (which
                // `clean` resolves), not the parameter on unmarked.
                std::fs::write(self.mark, "htb_hysteresis turned on by homa testbed\n")
                    .map_err(|e| format!("cannot write {}: {e}", self.mark))?;
                if let Err(e) = std::fs::write(self.path, "1") {
                    let _ = std::fs::remove_file(self.mark);
                    return Err(describe("cannot write", e));
                }
                holders.turned_on = true;
            }
        }
        holders.count += 1;
        Ok(Held(self))
    }

    fn restore(&self, holders: &mut Holders) {
        if std::mem::take(&mut holders.turned_on) && !(self.others_live)() {
            self.turn_off();
        }
    }

    fn restore_if_abandoned(&self, anyone_live: bool) -> bool {
        if anyone_live || !Path::new(self.mark).exists() {
            return false;
        }
        self.turn_off();
        true
    }

    fn turn_off(&self) {
        // Best effort: nothing is left to report to (a drop, an exiting process); a mark
        // left behind makes `clean` try again.
        if std::fs::write(self.path, "0").is_ok() {
            let _ = std::fs::remove_file(self.mark);
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

    /// Stand-ins for the kernel's parameter file and the mark, in a directory of its own
    /// that is removed when the test ends (the `Switch`es are leaked, as the real one is
    /// static). Each `process` is a `Switch` on the same files with holders of its own,
    /// as another process's would be.
    struct Scratch {
        dir: std::path::PathBuf,
        param: &'static str,
        mark: &'static str,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn no_one_else() -> bool {
        false
    }

    fn others_too() -> bool {
        true
    }

    fn leak(p: std::path::PathBuf) -> &'static str {
        Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
    }

    fn scratch(test: &str, initial: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "homa-testbed-hysteresis-{}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let param = dir.join("param");
        std::fs::write(&param, initial).unwrap();
        Scratch {
            param: leak(param),
            mark: leak(dir.join("mark")),
            dir,
        }
    }

    impl Scratch {
        fn process(&self, others_live: fn() -> bool) -> &'static Switch {
            Box::leak(Box::new(Switch::new(self.param, self.mark, others_live)))
        }
        fn value(&self) -> String {
            std::fs::read_to_string(self.param)
                .unwrap()
                .trim()
                .to_string()
        }
        fn marked(&self) -> bool {
            Path::new(self.mark).exists()
        }
    }

    #[test]
    fn turned_on_while_held_and_back_off_after_the_last_holder() {
        let t = scratch("last-holder", "0\n");
        let s = t.process(no_one_else);
        let a = s.hold().unwrap();
        assert_eq!(t.value(), "1");
        assert!(t.marked());
        let b = s.hold().unwrap();
        drop(a);
        assert_eq!(t.value(), "1", "still held by b");
        drop(b);
        assert_eq!(t.value(), "0");
        assert!(!t.marked());
        // And again, from off.
        let c = s.hold().unwrap();
        assert_eq!(t.value(), "1");
        drop(c);
        assert_eq!(t.value(), "0");
        assert!(!t.marked());
    }

    #[test]
    fn left_on_when_it_was_on_before() {
        let t = scratch("on-before", "1\n");
        let s = t.process(no_one_else);
        drop(s.hold().unwrap());
        assert_eq!(t.value(), "1");
        assert!(!t.marked());
        assert!(!s.restore_if_abandoned(false), "not ours to turn off");
        assert_eq!(t.value(), "1");
    }

    #[test]
    fn the_last_process_to_let_go_turns_it_off() {
        let t = scratch("processes", "0\n");
        let (first, second) = (t.process(others_too), t.process(no_one_else));
        let a = first.hold().unwrap();
        let b = second.hold().unwrap();
        // The first ends while the second still has a testbed: it stays on.
        drop(a);
        assert_eq!(t.value(), "1");
        assert!(t.marked());
        // The second found it on, but marked: it turns it off as the last to go.
        drop(b);
        assert_eq!(t.value(), "0");
        assert!(!t.marked());
    }

    #[test]
    fn clean_turns_off_what_a_killed_process_left_on() {
        let t = scratch("killed", "0\n");
        let killed = t.process(no_one_else);
        // Killed with its testbed: no drop runs.
        std::mem::forget(killed.hold().unwrap());
        assert_eq!(t.value(), "1");
        let clean = t.process(no_one_else);
        assert!(
            !clean.restore_if_abandoned(true),
            "left while a testbed lives"
        );
        assert_eq!(t.value(), "1");
        assert!(clean.restore_if_abandoned(false));
        assert_eq!(t.value(), "0");
        assert!(!t.marked());
        assert!(!clean.restore_if_abandoned(false), "nothing left to do");
    }

    #[test]
    fn a_missing_parameter_is_an_error_that_names_it_and_leaves_no_mark() {
        let t = scratch("missing", "0\n");
        let s: &'static Switch = Box::leak(Box::new(Switch::new(
            "/nonexistent/htb_hysteresis",
            t.mark,
            no_one_else,
        )));
        let why = s.hold().unwrap_err();
        assert!(why.contains("/nonexistent/htb_hysteresis"), "{why}");
        assert_eq!(lock(&s.holders).count, 0);
        assert!(!t.marked());
    }
}
