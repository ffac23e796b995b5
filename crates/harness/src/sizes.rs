//! Message lengths: a fixed length, or a workload CDF (`length_bytes,cumulative_fraction`).

use rand::Rng;
use std::fmt;
use std::path::Path;

/// Longest message the harness generates (Linux `HOMA_MAX_MESSAGE_LENGTH`).
pub const MAX_LENGTH: u32 = homa_wire::HOMA_MAX_MESSAGE_LENGTH;

/// How message lengths are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Sizes {
    /// Every message has this length.
    Fixed(u32),
    /// Rows `(length, cumulative fraction)`, sorted, the last fraction 1.0: draw `u` in
    /// [0, 1) and take the first row whose fraction is `>= u` (workloads/README.md).
    Cdf(Vec<(u32, f64)>),
}

/// A workload file that could not be read.
#[derive(Debug)]
pub enum SizesError {
    /// Reading the file failed.
    Io(std::path::PathBuf, std::io::Error),
    /// Line `line` (1-based) is not what the format says.
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for SizesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizesError::Io(path, e) => write!(f, "cannot read workload {}: {e}", path.display()),
            SizesError::Format { line, reason } => write!(f, "workload line {line}: {reason}"),
        }
    }
}

impl std::error::Error for SizesError {}

impl Sizes {
    /// Read a workload CSV file.
    pub fn load(path: &Path) -> Result<Sizes, SizesError> {
        let text = std::fs::read_to_string(path).map_err(|e| SizesError::Io(path.to_owned(), e))?;
        Sizes::from_csv(&text)
    }

    /// Parse workload CSV text: header `length_bytes,cumulative_fraction`, then rows with
    /// increasing lengths and non-decreasing fractions in [0, 1], the last one 1.0.
    pub fn from_csv(text: &str) -> Result<Sizes, SizesError> {
        let bad = |line: usize, reason: &str| SizesError::Format {
            line,
            reason: reason.to_string(),
        };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            Some((_, h)) if h.trim() == "length_bytes,cumulative_fraction" => {}
            Some((i, _)) => {
                return Err(bad(
                    i + 1,
                    "expected header length_bytes,cumulative_fraction",
                ))
            }
            None => return Err(bad(1, "empty file")),
        }
        let mut rows: Vec<(u32, f64)> = Vec::new();
        for (i, line) in lines {
            let (len, frac) = line
                .trim()
                .split_once(',')
                .ok_or_else(|| bad(i + 1, "expected two comma-separated fields"))?;
            let len: u64 = len.trim().parse().map_err(|_| bad(i + 1, "bad length"))?;
            let frac: f64 = frac
                .trim()
                .parse()
                .map_err(|_| bad(i + 1, "bad fraction"))?;
            if !(0.0..=1.0).contains(&frac) {
                return Err(bad(i + 1, "fraction outside [0, 1]"));
            }
            if let Some(&(pl, pf)) = rows.last() {
                if len <= pl as u64 || frac < pf {
                    return Err(bad(i + 1, "rows must increase"));
                }
            }
            rows.push((len.min(u32::MAX as u64) as u32, frac));
        }
        match rows.last() {
            None => Err(bad(2, "no rows")),
            Some(&(_, f)) if (f - 1.0).abs() > 1e-9 => {
                Err(bad(rows.len() + 1, "last fraction must be 1.0"))
            }
            Some(_) => Ok(Sizes::Cdf(rows)),
        }
    }

    /// Draw a length, clamped to `1..=MAX_LENGTH`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        self.sample_up_to(rng, MAX_LENGTH)
    }

    /// Draw a length, clamped to `1..=max` (for engines configured with a longer
    /// `max_message_length` than the module's).
    pub fn sample_up_to<R: Rng + ?Sized>(&self, rng: &mut R, max: u32) -> u32 {
        match self {
            Sizes::Fixed(n) => (*n).clamp(1, max.max(1)),
            Sizes::Cdf(_) => self.at_up_to(rng.gen(), max),
        }
    }

    /// The length at quantile `u` in [0, 1) (a fixed length ignores `u`), clamped to
    /// `1..=MAX_LENGTH`.
    pub fn at(&self, u: f64) -> u32 {
        self.at_up_to(u, MAX_LENGTH)
    }

    /// [`at`](Self::at), clamped to `1..=max`.
    pub fn at_up_to(&self, u: f64, max: u32) -> u32 {
        let len = match self {
            Sizes::Fixed(n) => *n,
            Sizes::Cdf(rows) => {
                let i = rows.partition_point(|&(_, f)| f < u).min(rows.len() - 1);
                rows[i].0
            }
        };
        len.clamp(1, max.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cdf_sampling_follows_the_rows_and_clamps() {
        let s = Sizes::from_csv("length_bytes,cumulative_fraction\n10,0.5\n2000000,1.0\n").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let draws: Vec<u32> = (0..1000).map(|_| s.sample(&mut rng)).collect();
        assert!(draws.iter().all(|&d| d == 10 || d == MAX_LENGTH));
        let small = draws.iter().filter(|&&d| d == 10).count();
        assert!((400..600).contains(&small), "{small}");
        assert_eq!(Sizes::Fixed(0).sample(&mut rng), 1);
        // Up to a longer maximum, the long rows come through.
        let long: Vec<u32> = (0..1000)
            .map(|_| s.sample_up_to(&mut rng, 3_000_000))
            .collect();
        assert!(long.contains(&2_000_000) && long.iter().all(|&d| d == 10 || d == 2_000_000));
        assert_eq!(Sizes::Fixed(5_000_000).at_up_to(0.5, 4_000_000), 4_000_000);
    }

    #[test]
    fn bad_files_are_refused_with_a_line_number() {
        assert!(Sizes::from_csv("").is_err());
        assert!(Sizes::from_csv("length_bytes,cumulative_fraction\n").is_err());
        let e = Sizes::from_csv("length_bytes,cumulative_fraction\n10,0.5\n5,1.0\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(Sizes::from_csv("length_bytes,cumulative_fraction\n10,0.5\n").is_err());
    }
}
