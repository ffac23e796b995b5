//! The SIGCOMM 2018 paper's measurement as a mode (`homa sim --paper`): what its
//! simulator (PlatformLab/HomaSimulation) did differently from our default model, as
//! facts of its configuration, and the numbers it published to compare against.
//!
//! - **Size bins.** The paper reports slowdown per message-size bin, the bins of its
//!   configuration (`msgSizeRanges` per workload in `homaTransportConfig.ini`); "short"
//!   is its smallest bin. [`size_bins`].
//! - **Priorities.** Its receivers keep as many scheduled priority levels as messages
//!   they grant to at once (`adaptiveSchedPrioLevels` = `numSendersToKeepGranted`:
//!   [`sched_levels`]); the unscheduled levels split, in equal shares, the bytes that
//!   travel at unscheduled priority, by the bytes their message has left (its
//!   `STATIC_CBF_GRADUATED` mode, computed here by `Workload::paper_cutoffs`).
//! - **The numbers.** [`reference()`]: the 99th-percentile slowdown of the smallest bin,
//!   Homa and pFabric, from the paper's published simulation results (as issue 40 quotes
//!   them).
//! - **Its percentiles.** Its tools read a percentile off a histogram, not from the
//!   sorted values: the lower edge of the histogram cell that holds it, the cells 1% of
//!   the range of the first 10,000 values
//!   ([`paper_histogram_percentile`](crate::paper_histogram_percentile)). Each
//!   size bin reports ours both ways.

/// One choice `homa sim --paper` makes where our default model (the Linux module's
/// engine and API) differs, so that each can be turned off on its own
/// ([`SimConfig::paper_without`](crate::SimConfig::paper_without),
/// `homa sim --paper --compare`) to see what it buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    /// One-way messages (`send_message`); off: RPCs answered with 1 byte, complete at
    /// the server ([`Mode::OneWay`](crate::Mode::OneWay)).
    OneWay,
    /// Every length the workload has; off: clamped to the module's 1,000,000 bytes.
    Uncapped,
    /// Every message paced (`defer_min_bytes` 0); off: the module's 1,000, shorter
    /// messages go to the NIC at once.
    PaceAll,
    /// No FIFO shares of grants or of the sender; off: the module's 5% each.
    NoFifo,
    /// As many scheduled levels as messages granted at once ([`sched_levels`]); off: the
    /// module's 4 scheduled levels and 8 messages.
    SchedLevels,
    /// Unscheduled priority from the bytes a message has left; off: from its length.
    ByRemaining,
    /// The last round trip of a message granted at the unscheduled priority of what is
    /// left; off: at its scheduled priority.
    TailGrants,
    /// The sender sends from the message with the fewest bytes left, one-packet messages
    /// among the others (`short_messages_srpt`, the paper's `SRBF`); off: one-packet
    /// messages go first, in the order sent (the module's way).
    ShortFirst,
    /// The paper's frames: the links charge each packet as if its Homa header were the
    /// paper's unscheduled DATA header, 30 bytes, not the module's 56
    /// ([`PAPER_IP_OVERHEAD`](crate::PAPER_IP_OVERHEAD) bytes counted in front of it
    /// instead of 28), so full unscheduled packets carry 1,442 bytes of message and a
    /// GRANT is a minimum frame, as in its simulator; off: our UDP packets' frames. The
    /// engine and its packets are unchanged: only the simulated wire's count differs.
    PaperFrames,
}

impl Choice {
    /// Every choice, in the order `--compare` turns them off.
    pub const ALL: [Choice; 9] = [
        Choice::OneWay,
        Choice::Uncapped,
        Choice::PaceAll,
        Choice::NoFifo,
        Choice::SchedLevels,
        Choice::ByRemaining,
        Choice::TailGrants,
        Choice::ShortFirst,
        Choice::PaperFrames,
    ];

    /// A short label (`no-` and this name the variant without it).
    pub fn name(self) -> &'static str {
        match self {
            Choice::OneWay => "one-way",
            Choice::Uncapped => "uncapped",
            Choice::PaceAll => "pace-all",
            Choice::NoFifo => "no-fifo",
            Choice::SchedLevels => "sched-levels",
            Choice::ByRemaining => "by-remaining",
            Choice::TailGrants => "tail-grants",
            Choice::ShortFirst => "short-first",
            Choice::PaperFrames => "paper-frames",
        }
    }
}

/// Our rows beside the paper's P99 of the smallest size bin (Homa; pFabric at 80%), and
/// our P99 over the shortest 10% of messages, carried load (by the paper's definition),
/// all wire bytes, and messages unfinished or failed.
pub fn table(reports: &[crate::Report]) -> String {
    let mut s = format!(
        "{:<4} {:>5} {:>10} {:>10} {:>9} {:>9} {:>12} {:>10} {:>8} {:>8} {:>6}\n",
        "",
        "load",
        "P99 bin",
        "as paper",
        "paper",
        "pFabric",
        "bin (bytes)",
        "P99 10%",
        "carried",
        "wire",
        "unfin."
    );
    for r in reports {
        s.push_str(&r.paper_row());
        s.push('\n');
    }
    s
}

/// `homa sim --paper --compare`: per labelled run (the full mode, then each choice
/// undone), our P99 slowdown of the smallest size bin and of the shortest 10%, P99 over
/// all messages, carried load and all wire bytes (the paper's definition), and messages
/// unfinished or failed.
pub fn compare_table(runs: &[(String, crate::Report)]) -> String {
    let mut s = format!(
        "{:<4} {:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}\n",
        "", "variant", "P99 bin", "P99 10%", "P99 all", "carried", "wire", "unfin."
    );
    for (label, r) in runs {
        let bin = r.bins.first().map_or(f64::NAN, |b| b.p99);
        s.push_str(&format!(
            "{:<4} {:<18} {:>8.2} {:>8.2} {:>8.2} {:>8.3} {:>8.3} {:>6}\n",
            r.workload,
            label,
            bin,
            r.p99_short,
            r.p99_all,
            r.utilization,
            r.wire_utilization,
            r.unfinished + r.failed
        ));
    }
    s
}

/// Workloads the paper's numbers cover, in order.
pub const WORKLOADS: [&str; 5] = ["w1", "w2", "w3", "w4", "w5"];

/// The upper bounds of the paper's message-size bins for workload `w1`..`w5` (its
/// `msgSizeRanges`; a bin holds the lengths above the previous bound up to its own, the
/// last one also every longer length), or `None` for another workload.
pub fn size_bins(workload: &str) -> Option<&'static [u32]> {
    Some(match workload {
        "w1" => W1_BINS,
        "w2" => W2_BINS,
        "w3" => W3_BINS,
        "w4" => W4_BINS,
        "w5" => W5_BINS,
        _ => return None,
    })
}

/// Scheduled priority levels, and messages granted at once, of the paper's receivers for
/// `w1`..`w5`.
pub fn sched_levels(workload: &str) -> Option<u8> {
    Some(match workload {
        "w1" => 1,
        "w2" => 3,
        "w3" => 4,
        "w4" | "w5" => 7,
        _ => return None,
    })
}

/// The paper's P99 slowdown of the smallest size bin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    /// Homa.
    pub homa: f64,
    /// pFabric (published at 80% load only).
    pub pfabric: Option<f64>,
}

/// The paper's numbers for `workload` at `load` (0.5 and 0.8 are published).
pub fn reference(workload: &str, load: f64) -> Option<Reference> {
    let i = WORKLOADS.iter().position(|&w| w == workload)?;
    if (load - 0.8).abs() < 1e-9 {
        let homa = [1.83, 1.98, 2.22, 2.29, 1.48][i];
        let pfabric = [1.90, 2.00, 2.11, 2.06, 1.49][i];
        Some(Reference {
            homa,
            pfabric: Some(pfabric),
        })
    } else if (load - 0.5).abs() < 1e-9 {
        let homa = [1.71, 1.85, 2.03, 2.07, 1.42][i];
        Some(Reference {
            homa,
            pfabric: None,
        })
    } else {
        None
    }
}

const W1_BINS: &[u32] = &[
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 25, 28, 31, 35, 39, 44, 49,
    55, 61, 68, 76, 85, 95, 107, 119, 133, 149, 167, 186, 208, 233, 260, 291, 325, 364, 406, 454,
    508, 568, 635, 710, 794, 887, 992, 1109, 1240, 1386, 1550, 1733, 1937, 2166, 2421, 2707, 3027,
    3384, 3783, 4229, 4729, 5286, 5910, 6608, 7388, 8259, 9234, 10324, 11542, 12904, 16129, 25198,
    49208, 96093, 293173, 572511, 1000000,
];
const W2_BINS: &[u32] = &[
    2, 3, 4, 8, 32, 34, 36, 38, 40, 43, 46, 49, 53, 58, 64, 67, 71, 75, 80, 85, 91, 98, 107, 116,
    128, 135, 142, 151, 160, 171, 183, 197, 213, 233, 256, 269, 284, 301, 320, 341, 366, 394, 427,
    465, 512, 539, 569, 602, 640, 683, 731, 788, 853, 931, 1024, 1078, 1365, 2048, 3151, 4096,
    5120, 6302, 7447, 8192, 9102, 10240, 11703, 12603, 13653, 14895, 16384, 17246, 18204, 19275,
    20480, 25206, 29789, 34493, 40960, 46811, 50412, 54613, 59578, 65536, 72818, 81920, 93623,
    100825, 119156, 137971, 163840, 187246, 201649, 262144, 308405, 403298, 524288, 1071908,
    3529904,
];
const W3_BINS: &[u32] = &[
    3, 32, 36, 40, 46, 53, 64, 70, 77, 85, 96, 110, 128, 137, 146, 158, 171, 186, 205, 228, 256,
    268, 282, 296, 313, 331, 352, 375, 402, 433, 469, 512, 531, 573, 597, 623, 683, 717, 755, 796,
    843, 956, 1053, 1117, 1189, 1271, 1317, 1418, 1475, 1603, 1755, 2137, 2341, 2657, 3511, 4535,
    5521, 7256, 9078, 10335, 13435, 16861, 21984, 25170, 30468, 40018, 45220, 50244, 55146, 60293,
    65902, 70217, 75137, 80248, 85482, 90049, 95133, 100825, 110247, 120372, 129632, 140605,
    150160, 160275, 170901, 180895, 190944, 200864, 249460, 300435, 350288, 401080, 450652, 501350,
    603313, 701172, 805723, 907174, 1008790, 5114695, 10668901, 20000000,
];
const W4_BINS: &[u32] = &[
    130, 227, 248, 271, 297, 303, 308, 310, 313, 315, 318, 321, 326, 331, 335, 345, 350, 360, 371,
    376, 395, 420, 435, 452, 463, 480, 491, 502, 513, 525, 537, 549, 561, 574, 587, 600, 607, 615,
    630, 646, 662, 671, 685, 702, 719, 737, 762, 787, 825, 885, 960, 1063, 1177, 1303, 1425, 1559,
    1624, 1865, 2862, 4582, 6387, 10373, 31946, 36844, 40382, 42493, 44531, 45913, 47435, 48609,
    49408, 50632, 57684, 69014, 74266, 77041, 79595, 81565, 91238, 104584, 120373, 141975, 167112,
    197911, 228718, 273075, 406302, 832442, 1660940, 3430822, 10000000,
];
const W5_BINS: &[u32] = &[
    1442, 2884, 4326, 5768, 7210, 8652, 10094, 11536, 12978, 15862, 17304, 18746, 21630, 23072,
    24514, 25956, 27398, 28840, 31724, 34608, 36050, 37492, 40376, 41818, 44702, 46144, 47586,
    50470, 53354, 54796, 57680, 59122, 62006, 63448, 66332, 67774, 70658, 72100, 74984, 76426,
    93730, 109592, 126896, 142758, 160062, 175924, 191786, 269654, 346080, 423948, 500374, 576800,
    654668, 731094, 808962, 885388, 961814, 1058428, 1155042, 1250214, 1346828, 1442000, 1538614,
    1635228, 1730400, 1827014, 1922186, 2210586, 2498986, 2787386, 3075786, 3364186, 3652586,
    3940986, 4229386, 4517786, 4806186, 11537442, 13459628, 15381814, 17305442, 19227628, 21149814,
    23073442, 24995628, 26917814, 28840000,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_increase_and_the_table_is_complete() {
        for w in WORKLOADS {
            let bins = size_bins(w).unwrap();
            assert!(bins.windows(2).all(|p| p[0] < p[1]), "{w}");
            assert!(sched_levels(w).is_some());
            assert!(reference(w, 0.8).unwrap().pfabric.is_some());
            assert!(reference(w, 0.5).unwrap().pfabric.is_none());
            assert!(reference(w, 0.9).is_none());
        }
        assert!(size_bins("starve").is_none());
    }
}
