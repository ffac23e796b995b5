/// A point in time, in nanoseconds since an origin the caller chooses.
///
/// The engine never reads a clock: every input carries `now`, and outputs say when they
/// want to be called next. The runtime maps its monotonic clock onto this; the simulator
/// and the test harness use virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);
    /// From nanoseconds.
    pub fn from_nanos(n: u64) -> Time {
        Time(n)
    }
    /// From microseconds (saturating, as [`plus_nanos`](Self::plus_nanos)).
    pub fn from_micros(us: u64) -> Time {
        Time(us.saturating_mul(1_000))
    }
    /// From milliseconds (saturating).
    pub fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1_000_000))
    }
    /// Nanoseconds since the origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    /// This time plus `nanos` (saturating).
    pub fn plus_nanos(self, nanos: u64) -> Time {
        Time(self.0.saturating_add(nanos))
    }
    /// Nanoseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn nanos_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
