//! Latency percentiles of one second, from the deltas of the request-duration histogram's
//! cumulative buckets between two samples (the way Prometheus's `histogram_quantile` reads
//! them: linear inside the bucket where the rank falls).

use prometheus::proto::MetricFamily;

/// A histogram's cumulative buckets: `counts[i]` observations were at most `bounds[i]`
/// seconds; `total` counts them all (the `+Inf` bucket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub total: u64,
}

impl Buckets {
    /// The buckets of every series of a histogram family, added up (all routes together).
    /// Series whose bounds differ from the first one's are left out.
    pub fn sum_of(families: &[MetricFamily]) -> Buckets {
        let mut sum = Buckets::default();
        for metric in families.iter().flat_map(|f| f.get_metric()) {
            let histogram = metric.get_histogram();
            let buckets = histogram.get_bucket();
            if sum.bounds.is_empty() && sum.total == 0 {
                sum.bounds = buckets.iter().map(|b| b.upper_bound()).collect();
                sum.counts = vec![0; sum.bounds.len()];
            }
            let same = buckets.len() == sum.bounds.len()
                && buckets
                    .iter()
                    .zip(&sum.bounds)
                    .all(|(b, bound)| b.upper_bound() == *bound);
            if !same {
                continue;
            }
            for (count, bucket) in sum.counts.iter_mut().zip(buckets) {
                *count += bucket.cumulative_count();
            }
            sum.total += histogram.get_sample_count();
        }
        sum
    }

    /// What was observed between `earlier` and `self` (None when the bounds differ).
    pub fn since(&self, earlier: &Buckets) -> Option<Buckets> {
        if earlier.bounds.is_empty() && earlier.total == 0 {
            return Some(self.clone());
        }
        if self.bounds != earlier.bounds {
            return None;
        }
        Some(Buckets {
            bounds: self.bounds.clone(),
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            total: self.total.saturating_sub(earlier.total),
        })
    }

    /// The `q` quantile (0 < q ≤ 1) in seconds, None when nothing was observed. A rank in the
    /// `+Inf` bucket gives the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 || !(q > 0.0 && q <= 1.0) {
            return None;
        }
        let rank = q * self.total as f64;
        let mut below_count = 0u64;
        let mut below_bound = 0.0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if *count as f64 >= rank {
                let inside = count.saturating_sub(below_count);
                if inside == 0 {
                    return Some(*bound);
                }
                let share = (rank - below_count as f64) / inside as f64;
                return Some(below_bound + (bound - below_bound) * share);
            }
            below_count = *count;
            below_bound = *bound;
        }
        self.bounds.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(counts: &[u64], total: u64) -> Buckets {
        Buckets {
            bounds: vec![0.01, 0.1, 1.0],
            counts: counts.to_vec(),
            total,
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 10 under 10 ms, 10 more under 100 ms, none above.
        let b = buckets(&[10, 20, 20], 20);
        let p50 = b.quantile(0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p95 = b.quantile(0.95).unwrap();
        assert!((p95 - (0.01 + 0.09 * 0.9)).abs() < 1e-9, "{p95}");
        assert_eq!(buckets(&[0, 0, 0], 0).quantile(0.5), None);
    }

    #[test]
    fn a_rank_beyond_the_last_bound_is_the_last_bound() {
        let b = buckets(&[0, 0, 1], 10);
        assert_eq!(b.quantile(0.95), Some(1.0));
    }

    #[test]
    fn deltas_between_two_samples() {
        let earlier = buckets(&[100, 100, 100], 100);
        let now = buckets(&[100, 110, 120], 120);
        let second = now.since(&earlier).unwrap();
        assert_eq!(second.counts, vec![0, 10, 20]);
        assert_eq!(second.total, 20);
        // The old fast requests do not pull this second's median down.
        let p50 = second.quantile(0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let other = Buckets {
            bounds: vec![1.0],
            counts: vec![1],
            total: 1,
        };
        assert_eq!(now.since(&other), None);
        assert_eq!(now.since(&Buckets::default()), Some(now.clone()));
    }

    #[test]
    fn sums_the_routes_of_a_family() {
        use prometheus::core::Collector;
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("d", "d").buckets(vec![0.01, 0.1, 1.0]),
            &["route"],
        )
        .unwrap();
        h.with_label_values(&["a"]).observe(0.005);
        h.with_label_values(&["b"]).observe(0.05);
        h.with_label_values(&["b"]).observe(5.0);
        let sum = Buckets::sum_of(&h.collect());
        assert_eq!(sum.bounds, vec![0.01, 0.1, 1.0]);
        assert_eq!(sum.counts, vec![1, 2, 2]);
        assert_eq!(sum.total, 3);
    }
}
