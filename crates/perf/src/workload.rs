//! Message-length workloads: the W1..W5 CDFs of the Homa papers, or a fixed length.
//!
//! A CDF file has the header `length_bytes,cumulative_fraction`, rows sorted by length and a
//! last fraction of exactly 1.0. Sampling follows `crates/harness/workloads/README.md`:
//! draw `u` in `[0, 1)` and take the first row whose fraction is `>= u`.
//!
//! Like the Linux module's `cp_node`, lengths above [`MAX_MESSAGE_LENGTH`] (1,000,000 bytes,
//! Homa's message limit) are clamped to it; lengths below [`HEADER_LEN`] are raised to it,
//! because every request carries the perf header. Both adjustments are reported by
//! [`Workload::describe`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::Rng;

use crate::header::HEADER_LEN;

/// Longest message Homa carries; longer workload lengths are clamped to this (as `cp_node`).
pub const MAX_MESSAGE_LENGTH: usize = 1_000_000;

/// Environment variable naming the directory holding `w1.csv` .. `w5.csv`.
pub const WORKLOADS_DIR_ENV: &str = "HOMA_WORKLOADS_DIR";

/// The CSVs compiled into the binary (`crates/harness/workloads/`), so `--workload
/// w1..w5` works anywhere.
const BUILTIN: [(&str, &str); 6] = homa_harness::workloads::BUILTIN;

/// What `--workload` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadSpec {
    /// One of the named distributions: `w1` .. `w5` or `starve`.
    Named(String),
    /// Every request has this many bytes.
    Fixed(usize),
    /// A CDF file in the `length_bytes,cumulative_fraction` format.
    File(PathBuf),
}

impl FromStr for WorkloadSpec {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if BUILTIN.iter().any(|(name, _)| *name == lower) {
            return Ok(Self::Named(lower));
        }
        if let Ok(n) = s.parse::<usize>() {
            if n == 0 {
                return Err(WorkloadError::ZeroLength);
            }
            return Ok(Self::Fixed(n));
        }
        if s.ends_with(".csv") || s.contains('/') {
            return Ok(Self::File(PathBuf::from(s)));
        }
        Err(WorkloadError::BadSpec(s.to_string()))
    }
}

impl fmt::Display for WorkloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Named(n) => f.write_str(n),
            Self::Fixed(n) => write!(f, "{n}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a workload could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// `--workload` is neither a name, a positive integer nor a CSV path.
    #[error("unknown workload '{0}': use w1, w2, w3, w4, w5, starve, a length in bytes (e.g. 100) or a path to a CSV file")]
    BadSpec(String),
    /// `--workload 0`: a message has at least one byte.
    #[error("a workload of fixed-length messages needs a length of at least 1 byte, got 0")]
    ZeroLength,
    /// A file could not be read.
    #[error("cannot read workload file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An explicitly given directory does not hold the workload.
    #[error("workload '{name}' not found: {path} does not exist (directory from {origin}); omit it to use the built-in copy")]
    NotInDir {
        /// Workload name.
        name: String,
        /// The path tried.
        path: PathBuf,
        /// Where the directory came from (`--workload-dir` or the environment variable).
        origin: &'static str,
    },
    /// The CSV text is malformed.
    #[error("{origin}: line {line}: {reason}")]
    Parse {
        /// File or built-in name.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Where a workload's CDF came from (printed so a reader knows which file was used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from this file.
    File(PathBuf),
    /// The copy compiled into the binary.
    Builtin,
    /// A fixed length (`--workload N`).
    Fixed,
}

/// A message-length distribution ready to sample.
#[derive(Debug, Clone)]
pub struct Workload {
    name: String,
    source: Source,
    /// `(length, cumulative fraction)`, sorted, last fraction 1.0. Raw (unclamped) lengths.
    points: Vec<(u64, f64)>,
}

/// Parses a CDF in the `length_bytes,cumulative_fraction` format. `origin` names the text in
/// errors.
pub fn parse_cdf(text: &str, origin: &str) -> Result<Vec<(u64, f64)>, WorkloadError> {
    let err = |line: usize, reason: String| WorkloadError::Parse {
        origin: origin.to_string(),
        line,
        reason,
    };
    let mut points: Vec<(u64, f64)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if i == 0 && line.starts_with("length") {
            continue;
        }
        let (l, f) = line
            .split_once(',')
            .ok_or_else(|| err(i + 1, format!("expected 'length,fraction', got '{line}'")))?;
        let length: u64 = l
            .trim()
            .parse()
            .map_err(|_| err(i + 1, format!("bad length '{}'", l.trim())))?;
        let fraction: f64 = f
            .trim()
            .parse()
            .map_err(|_| err(i + 1, format!("bad fraction '{}'", f.trim())))?;
        if length == 0 {
            return Err(err(i + 1, "length must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&fraction) {
            return Err(err(i + 1, format!("fraction {fraction} outside [0, 1]")));
        }
        if let Some(&(pl, pf)) = points.last() {
            if length <= pl || fraction < pf {
                return Err(err(
                    i + 1,
                    "rows must be sorted by length with non-decreasing fractions".into(),
                ));
            }
        }
        points.push((length, fraction));
    }
    match points.last() {
        None => Err(err(1, "no data rows".into())),
        Some(&(_, f)) if (f - 1.0).abs() > 1e-9 => Err(err(
            text.lines().count(),
            format!("last fraction is {f}, must be 1.0"),
        )),
        Some(_) => Ok(points),
    }
}

/// Clamps a raw workload length into what a perf request can carry:
/// `[HEADER_LEN, MAX_MESSAGE_LENGTH]`.
pub fn clamp_length(raw: u64) -> usize {
    (raw.min(MAX_MESSAGE_LENGTH as u64) as usize).max(HEADER_LEN)
}

/// The workload directory given explicitly (flag, then environment), with where it came
/// from; `None` when none was given (the built-in copies are used then).
pub fn find_dir(explicit: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    if let Some(d) = explicit {
        return Some((d.to_path_buf(), "--workload-dir"));
    }
    match std::env::var_os(WORKLOADS_DIR_ENV) {
        Some(d) if !d.is_empty() => Some((PathBuf::from(d), WORKLOADS_DIR_ENV)),
        _ => None,
    }
}

impl Workload {
    /// Loads `spec`. Named workloads come from the directory [`find_dir`] gives (error if
    /// the file is missing there), else from the built-in copy.
    pub fn load(spec: &WorkloadSpec, dir: Option<&Path>) -> Result<Self, WorkloadError> {
        match spec {
            WorkloadSpec::Fixed(n) => Ok(Self::fixed(*n)),
            WorkloadSpec::File(path) => Self::from_file(path),
            WorkloadSpec::Named(name) => {
                let file = format!("{name}.csv");
                match find_dir(dir) {
                    Some((d, origin)) => {
                        let path = d.join(&file);
                        if !path.is_file() {
                            return Err(WorkloadError::NotInDir {
                                name: name.clone(),
                                path,
                                origin,
                            });
                        }
                        Self::from_file(&path).map(|w| w.named(name))
                    }
                    None => Self::builtin(name),
                }
            }
        }
    }

    /// The built-in copy of `name` (`w1`..`w5`, `starve`).
    pub fn builtin(name: &str) -> Result<Self, WorkloadError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| WorkloadError::BadSpec(name.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            source: Source::Builtin,
            points: parse_cdf(text, &format!("built-in {name}.csv"))?,
        })
    }

    /// Every message `n` bytes long.
    pub fn fixed(n: usize) -> Self {
        Self {
            name: format!("{n}"),
            source: Source::Fixed,
            points: vec![(n as u64, 1.0)],
        }
    }

    /// Reads a CDF file.
    pub fn from_file(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Self {
            name,
            source: Source::File(path.to_path_buf()),
            points: parse_cdf(&text, &path.display().to_string())?,
        })
    }

    fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Short name (`w4`, `100`, a file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the CDF came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The raw CDF points.
    pub fn points(&self) -> &[(u64, f64)] {
        &self.points
    }

    /// The raw length for `u` in `[0, 1)`: the first row whose fraction is `>= u`.
    pub fn raw_for(&self, u: f64) -> u64 {
        let i = self.points.partition_point(|&(_, f)| f < u);
        self.points[i.min(self.points.len() - 1)].0
    }

    /// One request length, clamped with [`clamp_length`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        clamp_length(self.raw_for(rng.gen::<f64>()))
    }

    /// The clamped length at message-count quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> usize {
        clamp_length(self.raw_for(q))
    }

    /// Exact mean of the clamped lengths under the sampling rule.
    pub fn mean_clamped(&self) -> f64 {
        let mut prev = 0.0;
        let mut sum = 0.0;
        for &(l, f) in &self.points {
            sum += (f - prev) * clamp_length(l) as f64;
            prev = f;
        }
        sum
    }

    /// Fraction of messages longer than [`MAX_MESSAGE_LENGTH`] (clamped down).
    pub fn clamped_fraction(&self) -> f64 {
        self.fraction_where(|l| l > MAX_MESSAGE_LENGTH as u64)
    }

    /// Fraction of messages shorter than [`HEADER_LEN`] (raised to it).
    pub fn raised_fraction(&self) -> f64 {
        self.fraction_where(|l| l < HEADER_LEN as u64)
    }

    fn fraction_where(&self, pred: impl Fn(u64) -> bool) -> f64 {
        let mut prev = 0.0;
        let mut sum = 0.0;
        for &(l, f) in &self.points {
            if pred(l) {
                sum += f - prev;
            }
            prev = f;
        }
        sum
    }

    /// One line saying what is sampled and how lengths were adjusted.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            Source::File(p) => format!("from {}", p.display()),
            Source::Builtin => "built-in copy".to_string(),
            Source::Fixed => "fixed length".to_string(),
        };
        let mut s = format!(
            "workload {} ({source}): mean {:.1} B after clamping",
            self.name,
            self.mean_clamped()
        );
        let clamped = self.clamped_fraction();
        if clamped > 0.0 {
            s.push_str(&format!(
                "; {:.2}% of lengths clamped to {MAX_MESSAGE_LENGTH} B (Homa's limit, as cp_node)",
                clamped * 100.0
            ));
        }
        let raised = self.raised_fraction();
        if raised > 0.0 {
            s.push_str(&format!(
                "; {:.2}% raised to the {HEADER_LEN}-B perf header",
                raised * 100.0
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn builtin_copies_parse_and_match_readme_shape() {
        for name in ["w1", "w2", "w3", "w4", "w5", "starve"] {
            let w = Workload::builtin(name).unwrap();
            assert_eq!(w.points().last().unwrap().1, 1.0, "{name}");
        }
        // README: W4 has 2.79% of messages above 1,000,000 bytes, W5 30%.
        let w4 = Workload::builtin("w4").unwrap();
        assert!((w4.clamped_fraction() - 0.0279).abs() < 0.0005);
        let w5 = Workload::builtin("w5").unwrap();
        assert!((w5.clamped_fraction() - 0.30).abs() < 0.001);
    }

    #[test]
    fn sampling_takes_first_row_whose_fraction_reaches_u() {
        let w = Workload {
            name: "t".into(),
            source: Source::Fixed,
            points: parse_cdf(
                "length_bytes,cumulative_fraction\n100,0.25\n200,0.5\n2000000,1.0\n",
                "t",
            )
            .unwrap(),
        };
        assert_eq!(w.raw_for(0.0), 100);
        assert_eq!(w.raw_for(0.25), 100);
        assert_eq!(w.raw_for(0.2500001), 200);
        assert_eq!(w.raw_for(0.5), 200);
        assert_eq!(w.raw_for(0.75), 2_000_000);
        assert_eq!(w.raw_for(0.999999), 2_000_000);
        // Clamping: above the limit to 1,000,000; below the header up to it.
        assert_eq!(w.quantile(0.9), MAX_MESSAGE_LENGTH);
        assert_eq!(clamp_length(3), HEADER_LEN);
        assert_eq!(clamp_length(5_000_000), MAX_MESSAGE_LENGTH);
        assert!((w.mean_clamped() - (0.25 * 100.0 + 0.25 * 200.0 + 0.5 * 1e6)).abs() < 1e-6);
        assert!((w.clamped_fraction() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn sampled_frequencies_follow_the_cdf() {
        let w = Workload::builtin("w2").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let n = 200_000;
        let mut sum = 0.0;
        let mut at_most_269 = 0;
        for _ in 0..n {
            let l = w.sample(&mut rng);
            assert!((HEADER_LEN..=MAX_MESSAGE_LENGTH).contains(&l));
            sum += l as f64;
            if l <= 269 {
                at_most_269 += 1;
            }
        }
        // P50 of W2 is 269 (README); the empirical CDF there must be close to the file's.
        let cdf_269 = w.points().iter().find(|p| p.0 == 269).unwrap().1;
        let emp = at_most_269 as f64 / n as f64;
        assert!((emp - cdf_269).abs() < 0.01, "emp {emp} vs {cdf_269}");
        let mean = sum / n as f64;
        let exact = w.mean_clamped();
        assert!(
            (mean - exact).abs() / exact < 0.05,
            "mean {mean} vs {exact}"
        );
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(
            "W4".parse::<WorkloadSpec>().unwrap(),
            WorkloadSpec::Named("w4".into())
        );
        assert_eq!(
            "100".parse::<WorkloadSpec>().unwrap(),
            WorkloadSpec::Fixed(100)
        );
        assert_eq!(
            "x/y.csv".parse::<WorkloadSpec>().unwrap(),
            WorkloadSpec::File("x/y.csv".into())
        );
        assert!("w9".parse::<WorkloadSpec>().is_err());
        assert!("0".parse::<WorkloadSpec>().is_err());
    }

    #[test]
    fn bad_csvs_give_line_numbers() {
        let e = parse_cdf("length_bytes,cumulative_fraction\n10,0.5\n5,1.0\n", "f").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = parse_cdf("length_bytes,cumulative_fraction\n10,0.5\n", "f").unwrap_err();
        assert!(e.to_string().contains("must be 1.0"), "{e}");
        let e = parse_cdf("10;0.5\n", "f").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn explicit_dir_without_the_file_is_a_clear_error() {
        let spec = WorkloadSpec::Named("w3".into());
        let e = Workload::load(&spec, Some(Path::new("/nonexistent/dir"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/dir/w3.csv") && msg.contains("--workload-dir"));
    }

    /// The simulator compiles in its own copy of the same files: the two must not drift.
    /// Read at run time, beside this crate in the workspace; a published package of this
    /// crate alone has no simulator beside it, and the test says so and passes.
    #[test]
    fn builtin_copies_match_the_simulators() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/workloads");
        if !dir.is_dir() {
            eprintln!("skipped: no simulator workloads at {}", dir.display());
            return;
        }
        for (name, ours) in BUILTIN {
            let path = dir.join(format!("{name}.csv"));
            let sim = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(sim, *ours, "{name}.csv differs");
        }
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "csv")
            })
            .count();
        assert_eq!(
            files,
            BUILTIN.len(),
            "the simulator has workloads we do not"
        );
    }
}
