//! Rate limits as a generic cell rate algorithm (GCRA): a bucket of `limit` operations that
//! refills evenly, one every `window / limit`.
//!
//! A fixed per-minute counter admits twice its limit across a minute boundary; this one
//! admits a burst of at most `limit` and then exactly the configured rate, whatever the clock
//! says. A bucket's whole state is one number, its theoretical arrival time (TAT): the time
//! at which it would be full again. A refused operation leaves the bucket unchanged, and the
//! wait it is told to observe is exact.

/// At most `limit` operations at once, refilled evenly over `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Operations a full bucket admits at once; 0 admits nothing.
    pub limit: u64,
    /// The time, in milliseconds, in which an empty bucket refills completely.
    pub window_ms: i64,
}

/// What one operation does to a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Admitted: the bucket's new theoretical arrival time, in microseconds.
    Admit {
        /// The TAT to store for the bucket.
        tat_us: i64,
    },
    /// Refused, bucket unchanged: the operation would be admitted after this many ms.
    Refuse {
        /// Milliseconds until the bucket holds one operation again (at least 1).
        retry_after_ms: i64,
    },
}

impl RateLimit {
    /// Microseconds between two refills: at least 1, rounded down so that a full bucket
    /// admits exactly `limit` at once.
    pub fn interval_us(&self) -> i64 {
        let window_us = self.window_us();
        match i64::try_from(self.limit) {
            Ok(limit) if limit > 0 => (window_us / limit).max(1),
            Ok(_) => window_us.max(1),
            Err(_) => 1,
        }
    }

    fn window_us(&self) -> i64 {
        self.window_ms.max(0).saturating_mul(1000)
    }

    /// Decides one operation at `now_ms` on a bucket whose TAT is `tat_us` (0 for a bucket
    /// never used; any TAT in the past means a full bucket).
    pub fn check(&self, tat_us: i64, now_ms: i64) -> RateDecision {
        let window_us = self.window_us();
        if self.limit == 0 {
            return RateDecision::Refuse {
                retry_after_ms: self.window_ms.max(1),
            };
        }
        let now_us = now_ms.saturating_mul(1000);
        let tat = tat_us.max(now_us).saturating_add(self.interval_us());
        if tat.saturating_sub(now_us) <= window_us {
            RateDecision::Admit { tat_us: tat }
        } else {
            // Admitted once now_us ≥ tat − window: round the wait up to whole milliseconds.
            let wait_us = tat.saturating_sub(window_us).saturating_sub(now_us);
            RateDecision::Refuse {
                retry_after_ms: (wait_us.saturating_add(999) / 1000).max(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const SIX_A_MINUTE: RateLimit = RateLimit {
        limit: 6,
        window_ms: 60_000,
    };

    /// Runs `at` (ms) through one bucket; the admitted times and the refusals' waits.
    fn run(limit: RateLimit, at: &[i64]) -> (Vec<i64>, Vec<(i64, i64)>) {
        let (mut tat, mut admitted, mut refused) = (0, vec![], vec![]);
        for &now in at {
            match limit.check(tat, now) {
                RateDecision::Admit { tat_us } => {
                    tat = tat_us;
                    admitted.push(now);
                }
                RateDecision::Refuse { retry_after_ms } => refused.push((now, retry_after_ms)),
            }
        }
        (admitted, refused)
    }

    #[test]
    fn a_full_bucket_admits_exactly_its_limit_at_once() {
        let (admitted, refused) = run(SIX_A_MINUTE, &[T0; 8]);
        assert_eq!(admitted.len(), 6);
        // The next refill is one interval (10 s) after the burst.
        assert_eq!(refused, vec![(T0, 10_000), (T0, 10_000)]);
        // Uneven division still admits the whole burst.
        let seven = RateLimit {
            limit: 7,
            window_ms: 60_000,
        };
        assert_eq!(run(seven, &[T0; 9]).0.len(), 7);
    }

    #[test]
    fn a_minute_boundary_gives_no_second_burst() {
        // Six just before a minute turns, seven just after: a fixed window would admit all.
        let mut at = vec![T0 + 59_000; 6];
        at.extend([T0 + 61_000; 7]);
        let (admitted, refused) = run(SIX_A_MINUTE, &at);
        assert_eq!(admitted.len(), 6, "2 s later nothing has refilled");
        assert_eq!(refused.first(), Some(&(T0 + 61_000, 8_000)));
    }

    #[test]
    fn the_wait_it_names_is_exact() {
        let mut at = vec![T0; 6];
        at.push(T0 + 1);
        let (_, refused) = run(SIX_A_MINUTE, &at);
        let wait = refused[0].1;
        assert_eq!(wait, 9_999);
        // One ms before the wait it is still refused; at the wait it is admitted.
        let mut tat = 0;
        for _ in 0..6 {
            let RateDecision::Admit { tat_us } = SIX_A_MINUTE.check(tat, T0) else {
                panic!("burst refused");
            };
            tat = tat_us;
        }
        assert!(matches!(
            SIX_A_MINUTE.check(tat, T0 + 1 + wait - 1),
            RateDecision::Refuse { .. }
        ));
        assert!(matches!(
            SIX_A_MINUTE.check(tat, T0 + 1 + wait),
            RateDecision::Admit { .. }
        ));
    }

    #[test]
    fn a_steady_caller_gets_exactly_the_rate_and_refusals_cost_nothing() {
        // One attempt a second for ten minutes: a burst of 6, then one per 10 s.
        let at: Vec<i64> = (0..600).map(|s| T0 + s * 1000).collect();
        let (admitted, refused) = run(SIX_A_MINUTE, &at);
        assert_eq!(admitted.len(), 6 + 59);
        assert_eq!(admitted.len() + refused.len(), 600);
        // In every minute-long span, at most twice the limit (a full bucket plus its refill).
        for (i, &start) in admitted.iter().enumerate() {
            let in_span = admitted[i..]
                .iter()
                .take_while(|&&t| t < start + 60_000)
                .count();
            assert!(in_span <= 12, "{in_span} from {start}");
        }
        // After the burst, admissions are exactly one interval apart.
        assert!(admitted[6..].windows(2).all(|w| w[1] - w[0] == 10_000));
    }

    #[test]
    fn a_bucket_left_alone_refills_completely_and_no_more() {
        let mut at = vec![T0; 6];
        at.extend([T0 + 3_600_000; 7]);
        let (admitted, _) = run(SIX_A_MINUTE, &at);
        assert_eq!(
            admitted.len(),
            12,
            "an hour later: one full bucket, not sixty"
        );
    }

    #[test]
    fn zero_admits_nothing_and_huge_limits_do_not_overflow() {
        let zero = RateLimit {
            limit: 0,
            window_ms: 60_000,
        };
        assert_eq!(
            zero.check(0, T0),
            RateDecision::Refuse {
                retry_after_ms: 60_000
            }
        );
        let huge = RateLimit {
            limit: u64::MAX,
            window_ms: 60_000,
        };
        assert_eq!(huge.interval_us(), 1);
        assert!(matches!(
            huge.check(i64::MAX, T0),
            RateDecision::Refuse { .. }
        ));
        assert!(matches!(
            huge.check(0, i64::MAX),
            RateDecision::Admit { .. }
        ));
    }
}
