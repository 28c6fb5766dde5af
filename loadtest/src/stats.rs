//! What the generator measures: per-second intervals of counts and HDR latency histograms,
//! merged across shards, and the JSON result built from them.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("fixed bounds are valid")
}

/// The measured latencies: INVITE→first 180, INVITE→200, BYE→200, and the scenario's
/// own request→final response (REGISTER→200, OPTIONS→200, CANCEL→487, re-INVITE→200).
pub const LATENCIES: [&str; 4] = [
    "invite_to_180",
    "invite_to_200",
    "bye_to_200",
    "request_to_final",
];
/// Indexes into [`LATENCIES`] and [`Interval::latency`].
pub const INVITE_TO_180: usize = 0;
pub const INVITE_TO_200: usize = 1;
pub const BYE_TO_200: usize = 2;
pub const REQUEST_TO_FINAL: usize = 3;

/// One second of one shard (or of all, once merged).
#[derive(Clone)]
pub struct Interval {
    /// Seconds since the run started.
    pub second: u64,
    pub attempted: u64,
    pub established: u64,
    /// Calls that ended normally (our BYE answered).
    pub completed: u64,
    /// Failed calls by final status (0: no final status, e.g. a BYE that failed).
    pub failed: BTreeMap<u16, u64>,
    pub timeouts: u64,
    /// Requests retransmitted by Timer A/E.
    pub retransmissions: u64,
    /// Calls up at the end of the second.
    pub concurrent: u64,
    /// By [`LATENCIES`] order.
    pub latency: [Histogram<u64>; 4],
}

impl Interval {
    pub fn new(second: u64) -> Self {
        Interval {
            second,
            attempted: 0,
            established: 0,
            completed: 0,
            failed: BTreeMap::new(),
            timeouts: 0,
            retransmissions: 0,
            concurrent: 0,
            latency: [histogram(), histogram(), histogram(), histogram()],
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum::<u64>() + self.timeouts
    }

    pub fn merge(&mut self, o: &Interval) {
        self.attempted += o.attempted;
        self.established += o.established;
        self.completed += o.completed;
        for (code, n) in &o.failed {
            *self.failed.entry(*code).or_default() += n;
        }
        self.timeouts += o.timeouts;
        self.retransmissions += o.retransmissions;
        self.concurrent += o.concurrent;
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            // Same bounds on both sides: adding cannot fail.
            let _ = a.add(b);
        }
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second in the JSON result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IntervalResult {
    pub second: u64,
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub retransmissions: u64,
    pub concurrent: u64,
    pub latency_ms: BTreeMap<String, Percentiles>,
}

/// The JSON result (schema in the README).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub tool: String,
    pub role: String,
    pub scenario: String,
    pub target: String,
    /// `udp` or `tcp` (results written before there was a choice were UDP).
    #[serde(default = "default_transport")]
    pub transport: String,
    pub rate_requested: f64,
    pub duration_s: f64,
    pub attempted: u64,
    pub established: u64,
    pub completed: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub retransmissions: u64,
    pub failed_by_code: BTreeMap<String, u64>,
    /// Established calls per second over the steady phase (after the ramp, before the
    /// last call was placed).
    pub achieved_rate: f64,
    pub steady_phase_s: [u64; 2],
    /// The latency the scenario is about (`invite_to_200`, or `request_to_final` for
    /// REGISTER, OPTIONS and CANCEL): the charts, the `.hgrm` and the summary line use it.
    #[serde(default = "default_headline")]
    pub headline: String,
    /// Percentiles per latency over the steady phase.
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub intervals: Vec<IntervalResult>,
}

fn latencies(l: &[Histogram<u64>; 4]) -> BTreeMap<String, Percentiles> {
    LATENCIES
        .iter()
        .zip(l)
        .map(|(name, h)| ((*name).to_owned(), Percentiles::of(h)))
        .collect()
}

fn default_transport() -> String {
    "udp".to_owned()
}

fn default_headline() -> String {
    LATENCIES[INVITE_TO_200].to_owned()
}

/// What a run was, for its result.
pub struct RunMeta<'a> {
    pub role: &'a str,
    pub scenario: &'a str,
    /// Index into [`LATENCIES`].
    pub headline: usize,
    pub target: String,
    pub rate: f64,
}

/// Builds the result from merged per-second intervals; the steady phase runs from the end
/// of the ramp to the last second attempts were made.
pub fn result(
    intervals: &[Interval],
    meta: RunMeta<'_>,
    ramp_s: u64,
    last_placed_s: u64,
) -> RunResult {
    let RunMeta {
        role,
        scenario,
        headline,
        target,
        rate,
    } = meta;
    let mut total = Interval::new(0);
    for i in intervals {
        total.merge(i);
    }
    // Steady phase: whole seconds after the ramp, up to the last second calls were placed.
    let start = ramp_s.min(last_placed_s);
    let end = last_placed_s.max(start + 1);
    let mut steady = Interval::new(start);
    let mut steady_secs = 0;
    for i in intervals
        .iter()
        .filter(|i| i.second >= start && i.second < end)
    {
        steady.merge(i);
        steady_secs += 1;
    }
    let achieved_rate = if steady_secs > 0 {
        steady.established as f64 / steady_secs as f64
    } else {
        0.0
    };
    RunResult {
        tool: "sipshard-load".to_owned(),
        role: role.to_owned(),
        scenario: scenario.to_owned(),
        target,
        transport: default_transport(),
        rate_requested: rate,
        duration_s: intervals.len() as f64,
        attempted: total.attempted,
        established: total.established,
        completed: total.completed,
        failed: total.failed_total(),
        timeouts: total.timeouts,
        retransmissions: total.retransmissions,
        failed_by_code: total
            .failed
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect(),
        achieved_rate,
        steady_phase_s: [start, end],
        headline: LATENCIES[headline].to_owned(),
        latency_ms: latencies(&steady.latency),
        intervals: intervals
            .iter()
            .map(|i| IntervalResult {
                second: i.second,
                attempted: i.attempted,
                established: i.established,
                failed: i.failed_total(),
                timeouts: i.timeouts,
                retransmissions: i.retransmissions,
                concurrent: i.concurrent,
                latency_ms: latencies(&i.latency),
            })
            .collect(),
    }
}

/// The `.hgrm` percentile distribution (HdrHistogram's text format, values in ms).
pub fn hgrm(h: &Histogram<u64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            1.0 / (1.0 - q)
        } else {
            f64::INFINITY
        };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:14.2}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_and_percentiles() {
        let mut intervals: Vec<Interval> = (0..5).map(Interval::new).collect();
        for (s, i) in intervals.iter_mut().enumerate() {
            i.established = if s == 0 { 10 } else { 100 };
            for v in 1..=100u64 {
                i.latency[1].record(v * 100).unwrap();
            }
        }
        intervals[2].failed.insert(503, 2);
        let meta = RunMeta {
            role: "uac",
            scenario: "basic-call",
            headline: INVITE_TO_200,
            target: "127.0.0.1:5060".to_owned(),
            rate: 100.0,
        };
        let r = result(&intervals, meta, 1, 4);
        assert_eq!(r.steady_phase_s, [1, 4]);
        assert_eq!(r.achieved_rate, 100.0);
        assert_eq!(r.established, 410);
        assert_eq!(r.failed, 2);
        assert_eq!(r.failed_by_code["503"], 2);
        let p = &r.latency_ms["invite_to_200"];
        assert_eq!(p.count, 300);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
        let text = hgrm(&intervals[0].latency[1]);
        assert!(text.contains("Total count    =          100"));
        let json = serde_json::to_value(&r).unwrap();
        for key in ["established", "failed", "achieved_rate", "latency_ms"] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
