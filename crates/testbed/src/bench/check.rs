//! The checks of a [`BenchConfig`] that need no testbed: a bad argument is refused before
//! anything is built.

use super::{BenchConfig, BenchError};

/// Longest load per transport a bench takes, seconds.
const MAX_SECONDS: f64 = 86_400.0;

/// Highest offered load a bench takes, as a fraction of the link rate (as `homa sim`):
/// above 1 the links are overloaded on purpose; far above, the load generators only
/// skip arrivals.
pub const MAX_LOAD: f64 = 1.5;

impl BenchConfig {
    /// Refuses what cannot be measured (a load, a duration or a calibration that is not
    /// positive; no transport, or one named twice, whose results would overwrite each
    /// other's in the JSON).
    pub(super) fn check(&self) -> Result<(), BenchError> {
        let config = self;
        if !(config.load > 0.0 && config.load <= MAX_LOAD) {
            return Err(BenchError::Usage(format!(
                "--load must be a fraction of the link rate above 0 and at most {MAX_LOAD}, \
                 got {}",
                config.load
            )));
        }
        if !(config.seconds > 0.0 && config.seconds.is_finite()) {
            return Err(BenchError::Usage(format!(
                "--seconds must be positive, got {}",
                config.seconds
            )));
        }
        // (Longer overflowed the clock's arithmetic after the testbed was built.)
        if config.seconds > MAX_SECONDS {
            return Err(BenchError::Usage(format!(
                "--seconds must be at most {MAX_SECONDS} (a day), got {:?}",
                config.seconds
            )));
        }
        if config.protos.is_empty() {
            return Err(BenchError::Usage("--protos names no transport".into()));
        }
        let twice = (config.protos.iter().enumerate())
            .find_map(|(i, p)| config.protos[..i].contains(p).then_some(p));
        if let Some(p) = twice {
            // Its results would overwrite each other's in the JSON.
            return Err(BenchError::Usage(format!(
                "--protos names {} twice",
                p.name()
            )));
        }
        if config.calibration_ms == 0 {
            return Err(BenchError::Usage(
                "--calibration-ms must be at least 1: slowdowns are measured against it".into(),
            ));
        }
        Ok(())
    }
}
