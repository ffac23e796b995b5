//! The Homa papers' message-length distributions W1..W5 (and `starve`, a mix that
//! starves long messages under strict SRPT), compiled in: see `workloads/README.md` in
//! this crate for their sources and format.

use crate::sizes::Sizes;

/// `(name, CSV text)` of every built-in workload.
pub const BUILTIN: [(&str, &str); 6] = [
    ("w1", include_str!("../workloads/w1.csv")),
    ("w2", include_str!("../workloads/w2.csv")),
    ("w3", include_str!("../workloads/w3.csv")),
    ("w4", include_str!("../workloads/w4.csv")),
    ("w5", include_str!("../workloads/w5.csv")),
    ("starve", include_str!("../workloads/starve.csv")),
];

/// The built-in workload called `name` (`w1` .. `w5`, `starve`).
pub fn builtin(name: &str) -> Option<Sizes> {
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
    Some(Sizes::from_csv(text).expect("built-in workloads parse"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_workload_parses() {
        for (name, _) in super::BUILTIN {
            assert!(super::builtin(name).is_some(), "{name}");
        }
        assert!(super::builtin("w9").is_none());
    }
}
